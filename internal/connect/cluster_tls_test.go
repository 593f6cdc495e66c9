package connect_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/connector-go/connector/internal/connect"
	"github.com/connector-go/connector/internal/testenv"
)

// nodeCA is a throw-away CA that issues server certificates for chosen
// names, written as PEM files.
type nodeCA struct {
	t      *testing.T
	dir    string
	cert   *x509.Certificate
	key    *ecdsa.PrivateKey
	File   string // the CA certificate (PEM)
	serial int64
}

func newNodeCA(t *testing.T) *nodeCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "connector cluster test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	ca := &nodeCA{t: t, dir: t.TempDir(), cert: cert, key: key, serial: 1}
	ca.File = ca.write("ca.pem", "CERTIFICATE", der)
	return ca
}

func (ca *nodeCA) write(name, typ string, der []byte) string {
	ca.t.Helper()
	p := filepath.Join(ca.dir, name)
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		ca.t.Fatal(err)
	}
	return p
}

// issue writes a certificate (and its key) valid for exactly the given
// names: IP literals become IP SANs, anything else DNS SANs. It serves
// as a server certificate and, on the cluster bus, as a client one.
func (ca *nodeCA) issue(names ...string) (certFile, keyFile string) {
	ca.t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		ca.t.Fatal(err)
	}
	ca.serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(ca.serial),
		Subject:      pkix.Name{CommonName: names[0]},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		ca.t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		ca.t.Fatal(err)
	}
	base := fmt.Sprintf("node-%d", ca.serial)
	return ca.write(base+".pem", "CERTIFICATE", der), ca.write(base+"-key.pem", "EC PRIVATE KEY", kder)
}

// tlsClusterNode is one TLS-only Redis Cluster node of the test.
type tlsClusterNode struct {
	Host string
	Port int
	Addr string
	// Admin is a client for setting the cluster up; it does not check the
	// node's name (the certificates change during the test).
	Admin *redis.Client
}

// startTLSClusterNode starts a cluster-enabled redis-server that accepts
// only TLS, on host (its cluster bus over TLS too), presenting a
// certificate valid for host alone.
func startTLSClusterNode(t *testing.T, ca *nodeCA, host, pw string) *tlsClusterNode {
	t.Helper()
	cert, key := ca.issue(host)
	bus := freePortOn(t, host)
	p, out := startRedisOn(t, host, true,
		"--tls-cert-file", cert, "--tls-key-file", key, "--tls-ca-cert-file", ca.File,
		"--tls-auth-clients", "no", "--tls-cluster", "yes",
		"--requirepass", pw, "--masterauth", pw,
		"--cluster-enabled", "yes", "--cluster-config-file", filepath.Join(t.TempDir(), "nodes.conf"),
		"--cluster-port", strconv.Itoa(bus), "--cluster-announce-ip", host,
		"--cluster-node-timeout", "5000",
	)
	if p == nil {
		if strings.Contains(strings.ToLower(out), "tls") {
			t.Skipf("this redis-server has no TLS support (not built with BUILD_TLS=yes):\n%s", out)
		}
		t.Fatalf("redis-server on %s exited:\n%s", host, out)
	}
	addr := net.JoinHostPort(host, strconv.Itoa(p.Port))
	admin := redis.NewClient(&redis.Options{
		Addr: addr, Password: pw,
		TLSConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // test harness only; the client under test verifies
	})
	t.Cleanup(func() { _ = admin.Close() })
	return &tlsClusterNode{Host: host, Port: p.Port, Addr: addr, Admin: admin}
}

// setCert makes n present a certificate for names from its next TLS
// handshake on (Redis reloads the files on CONFIG SET).
func (n *tlsClusterNode) setCert(ctx context.Context, t *testing.T, ca *nodeCA, names ...string) {
	t.Helper()
	cert, key := ca.issue(names...)
	// Both in one CONFIG SET: the new certificate does not go with the
	// old key.
	if err := n.Admin.Do(ctx, "CONFIG", "SET", "tls-cert-file", cert, "tls-key-file", key).Err(); err != nil {
		t.Fatalf("%s: CONFIG SET tls-cert-file tls-key-file: %v", n.Addr, err)
	}
}

// TestRedisClusterTLSPerNodeNames: over TLS, every node of a Redis Cluster
// is verified under its own address, so nodes whose certificates name only
// themselves are reachable however the cluster was found (the node
// addresses come from CLUSTER SLOTS, not from the URL). A certificate
// shared by all nodes under the name of the first URL host (the layout
// docs/security.md used to require) still works, and a certificate naming
// neither is refused.
//
// Two nodes, on 127.0.0.1 and 127.0.0.2 (all of 127/8 is loopback on
// Linux), split the slots between them; each certificate's only SAN is its
// node's IP, so verifying one node under the other's name fails.
func TestRedisClusterTLSPerNodeNames(t *testing.T) {
	const pw = "tls-Cluster-Pw-9"
	redisServerBinary(t)
	if ln, err := net.Listen("tcp", "127.0.0.2:0"); err != nil {
		if runtime.GOOS == "linux" {
			t.Fatalf("cannot listen on 127.0.0.2: %v", err)
		}
		t.Skipf("cannot listen on 127.0.0.2 (only 127.0.0.1 is on loopback here; e.g. macOS: ifconfig lo0 alias 127.0.0.2): %v", err)
	} else {
		ln.Close()
	}
	ca := newNodeCA(t)
	a := startTLSClusterNode(t, ca, "127.0.0.1", pw)
	b := startTLSClusterNode(t, ca, "127.0.0.2", pw)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	for _, s := range []struct {
		n      *tlsClusterNode
		lo, hi int
	}{{a, 0, 8191}, {b, 8192, 16383}} {
		if err := s.n.Admin.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", s.lo, s.hi).Err(); err != nil {
			t.Fatalf("%s: CLUSTER ADDSLOTSRANGE: %v", s.n.Addr, err)
		}
	}
	busB, err := b.Admin.ConfigGet(ctx, "cluster-port").Result()
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Admin.Do(ctx, "CLUSTER", "MEET", b.Host, b.Port, busB["cluster-port"]).Err(); err != nil {
		t.Fatalf("CLUSTER MEET: %v", err)
	}
	for _, n := range []*tlsClusterNode{a, b} {
		deadline := time.Now().Add(30 * time.Second)
		for {
			info, err := n.Admin.ClusterInfo(ctx).Result()
			if strings.Contains(info, "cluster_state:ok") && strings.Contains(info, "cluster_known_nodes:2") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("two-node TLS cluster not ok at %s after 30s (%v):\n%s", n.Addr, err, info)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	// A key in each node's half of the slots.
	prefix := testenv.Prefix(t)
	keyOn := map[*tlsClusterNode]string{}
	for i := 0; len(keyOn) < 2; i++ {
		k := prefix + ":k" + strconv.Itoa(i)
		slot, err := a.Admin.ClusterKeySlot(ctx, k).Result()
		if err != nil {
			t.Fatal(err)
		}
		n := a
		if slot >= 8192 {
			n = b
		}
		if _, ok := keyOn[n]; !ok {
			keyOn[n] = k
		}
	}

	// roundTrip writes and reads a key on each node through c; it
	// returns the first error.
	roundTrip := func(c redis.UniversalClient) error {
		for _, n := range []*tlsClusterNode{a, b} {
			opCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
			k, v := keyOn[n], "v-"+n.Host
			err := c.Set(opCtx, k, v, time.Minute).Err()
			if err == nil {
				var got string
				got, err = c.Get(opCtx, k).Result()
				if err == nil && got != v {
					err = fmt.Errorf("GET %s = %q, want %q", k, got, v)
				}
			}
			cancel()
			if err != nil {
				return fmt.Errorf("key %s on node %s: %w", k, n.Addr, err)
			}
			// The key really is on that node.
			if got, err := n.Admin.Get(ctx, k).Result(); err != nil || got != v {
				return fmt.Errorf("node %s holds %s = %q (%v), want %q", n.Addr, k, got, err, v)
			}
		}
		return nil
	}
	connectCluster := func(t *testing.T, cfg connect.RedisConfig) redis.UniversalClient {
		t.Helper()
		c, err := connect.ConnectRedis(ctx, cfg, nil)
		if err != nil {
			t.Fatalf("%s: %v", cfg, err)
		}
		t.Cleanup(func() { _ = c.Close() })
		if _, ok := c.(*redis.ClusterClient); !ok {
			t.Fatalf("%s: want *redis.ClusterClient, got %T", cfg, c)
		}
		return c
	}

	t.Run("per-node certificates", func(t *testing.T) {
		for name, url := range map[string]string{
			"rediss+cluster, seed A":      "rediss+cluster://" + a.Addr,
			"rediss+cluster, seed B":      "rediss+cluster://" + b.Addr,
			"redis+cluster with CA":       "redis+cluster://" + a.Addr,
			"node list, B first":          "rediss://" + b.Addr + "," + a.Addr,
			"rediss+cluster, query, seed": "rediss+cluster://" + a.Addr + "?dial_timeout=3s",
		} {
			t.Run(name, func(t *testing.T) {
				c := connectCluster(t, connect.RedisConfig{URL: url, Password: pw, CAFile: ca.File})
				if err := roundTrip(c); err != nil {
					t.Fatalf("%s: %v", url, err)
				}
			})
		}
	})

	t.Run("untrusted CA", func(t *testing.T) {
		other := newNodeCA(t)
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		c, err := connect.ConnectRedis(cctx, connect.RedisConfig{URL: "rediss+cluster://" + a.Addr, Password: pw, CAFile: other.File}, nil)
		if err == nil {
			defer c.Close()
			if err := roundTrip(c); err == nil {
				t.Fatal("a cluster with certificates of another CA was accepted")
			}
		}
	})

	// Both certificates name only "localhost", the URL's first host: every
	// node, discovered by its IP, is still accepted under that shared name.
	t.Run("shared name of the first host", func(t *testing.T) {
		a.setCert(ctx, t, ca, "localhost")
		b.setCert(ctx, t, ca, "localhost")
		c := connectCluster(t, connect.RedisConfig{URL: "rediss+cluster://localhost:" + strconv.Itoa(a.Port), Password: pw, CAFile: ca.File})
		if err := roundTrip(c); err != nil {
			t.Fatal(err)
		}
	})

	// B's certificate names neither B nor the first host: refused, by
	// every form of URL.
	t.Run("certificate of another name", func(t *testing.T) {
		a.setCert(ctx, t, ca, "127.0.0.1", "localhost")
		b.setCert(ctx, t, ca, "127.0.0.9", "elsewhere.test")
		refusedB(ctx, t, a, keyOn[b], pw, ca.File, "certificate", "with a certificate for 127.0.0.9")
	})

	// B's certificate names B but is signed by a CA the client does not
	// trust (last: B's cluster bus now fails A's checks too).
	t.Run("one node signed by another CA", func(t *testing.T) {
		other := newNodeCA(t)
		b.setCert(ctx, t, other, "127.0.0.2", "localhost")
		refusedB(ctx, t, a, keyOn[b], pw, ca.File, "certificate signed by unknown authority", "with a certificate of an untrusted CA")
	})
}

// refusedB checks that a write of key, which lands on the cluster's other
// node, is refused with an error containing want, whichever form of URL
// names node a.
func refusedB(ctx context.Context, t *testing.T, a *tlsClusterNode, key, pw, caFile, want, what string) {
	t.Helper()
	for _, url := range []string{
		"rediss+cluster://" + a.Addr,
		"rediss+cluster://localhost:" + strconv.Itoa(a.Port),
	} {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		// The ping of ConnectRedis may go to either node.
		c, err := connect.ConnectRedis(cctx, connect.RedisConfig{URL: url, Password: pw, CAFile: caFile}, nil)
		if err == nil {
			err = c.Set(cctx, key, "x", time.Minute).Err()
			_ = c.Close()
		}
		cancel()
		if err == nil {
			t.Fatalf("%s: the node %s accepted", url, what)
		}
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("%s: want an error with %q, got %v", url, want, err)
		}
		t.Logf("refused: %v", err)
	}
}
