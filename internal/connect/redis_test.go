package connect_test

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/connector-go/connector/internal/connect"
	"github.com/connector-go/connector/internal/testenv"
)

// redisProc is a redis-server started by a test on a free port.
type redisProc struct {
	Port int
	cmd  *exec.Cmd
	out  *testenv.Buffer
}

func redisServerBinary(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CONNECTOR_TEST_REQUIRE_REDIS") == "1" {
			t.Fatalf("redis-server binary not found and CONNECTOR_TEST_REQUIRE_REDIS=1: %v", err)
		}
		t.Skip("redis-server binary not found on PATH: skipping the password/ACL/TLS Redis tests (install redis-server to run them)")
	}
	return bin
}

func freePort(t *testing.T) int {
	t.Helper()
	return freePortOn(t, "127.0.0.1")
}

func freePortOn(t *testing.T, host string) int {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startRedis runs redis-server with args (after --port/--save/--appendonly)
// and waits until it accepts TCP connections on the returned port. It
// returns nil, output when the server exited before listening.
func startRedis(t *testing.T, tlsPort bool, args ...string) (*redisProc, string) {
	t.Helper()
	return startRedisOn(t, "127.0.0.1", tlsPort, args...)
}

// startRedisOn is startRedis on another loopback address (127.0.0.2: a
// second host name for TLS tests).
func startRedisOn(t *testing.T, host string, tlsPort bool, args ...string) (*redisProc, string) {
	t.Helper()
	bin := redisServerBinary(t)
	port := freePortOn(t, host)
	base := []string{"--port", strconv.Itoa(port), "--bind", host, "--save", "", "--appendonly", "no", "--dir", t.TempDir()}
	if tlsPort {
		base = []string{"--port", "0", "--tls-port", strconv.Itoa(port), "--bind", host, "--save", "", "--appendonly", "no", "--dir", t.TempDir()}
	}
	p := &redisProc{Port: port, out: &testenv.Buffer{}}
	p.cmd = exec.Command(bin, append(base, args...)...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-exited
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-exited:
			return nil, p.out.String()
		default:
		}
		c, err := net.DialTimeout("tcp", net.JoinHostPort(host, strconv.Itoa(port)), 200*time.Millisecond)
		if err == nil {
			c.Close()
			return p, ""
		}
		if time.Now().After(deadline) {
			t.Fatalf("redis-server did not listen on %d within 10s:\n%s", port, p.out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestRedisPasswordAndACL(t *testing.T) {
	const (
		pw      = "r3dis-Default-Pw"
		alicePW = "alice-Acl-Pw-42"
		wrongPW = "not-The-Pw-777"
	)
	p, out := startRedis(t, false,
		"--requirepass", pw,
		"--user", "alice", "on", ">"+alicePW, "~*", "&*", "+@all",
	)
	if p == nil {
		t.Fatalf("redis-server exited:\n%s", out)
	}
	addr := "127.0.0.1:" + strconv.Itoa(p.Port)
	secrets := []string{pw, alicePW, wrongPW}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	good := map[string]connect.RedisConfig{
		"password flag":      {URL: "redis://" + addr + "/0", Password: pw},
		"password in URL":    {URL: "redis://:" + pw + "@" + addr + "/0"},
		"password file":      {URL: "redis://" + addr + "/0", PasswordFile: writeFile(t, "pw", pw+"\n")},
		"ACL user":           {URL: "redis://" + addr + "/0", Username: "alice", Password: alicePW},
		"ACL user in URL":    {URL: "redis://alice:" + alicePW + "@" + addr + "/0"},
		"flag overrides URL": {URL: "redis://alice:" + wrongPW + "@" + addr + "/0", Password: alicePW},
	}
	for name, cfg := range good {
		t.Run("good/"+name, func(t *testing.T) {
			c, err := connect.ConnectRedis(ctx, cfg, nil)
			if err != nil {
				t.Fatalf("%s: %v", cfg, err)
			}
			defer c.Close()
			if err := c.Set(ctx, testenv.Prefix(t)+":k", "v", time.Minute).Err(); err != nil {
				t.Fatal(err)
			}
			assertNoSecret(t, cfg.String(), secrets)
		})
	}
	bad := map[string]connect.RedisConfig{
		"no password":         {URL: "redis://" + addr + "/0"},
		"wrong password":      {URL: "redis://" + addr + "/0", Password: wrongPW},
		"wrong password URL":  {URL: "redis://:" + wrongPW + "@" + addr + "/0"},
		"ACL user, wrong pw":  {URL: "redis://" + addr + "/0", Username: "alice", Password: pw},
		"ACL user in URL bad": {URL: "redis://alice:" + wrongPW + "@" + addr + "/0"},
		"unknown user":        {URL: "redis://bob:" + alicePW + "@" + addr + "/0"},
	}
	for name, cfg := range bad {
		t.Run("bad/"+name, func(t *testing.T) {
			c, err := connect.ConnectRedis(ctx, cfg, nil)
			if err == nil {
				c.Close()
				t.Fatalf("%s connected", cfg)
			}
			t.Logf("refused: %v", err)
			assertNoSecret(t, err.Error(), secrets)
			assertNoSecret(t, cfg.String(), secrets)
		})
	}
}

func TestRedisTLS(t *testing.T) {
	pki := newPKI(t)
	const pw = "tls-R3dis-Pw"
	p, out := startRedis(t, true,
		"--tls-cert-file", pki.ServerCert,
		"--tls-key-file", pki.ServerKey,
		"--tls-ca-cert-file", pki.CA,
		"--tls-auth-clients", "yes",
		"--requirepass", pw,
	)
	if p == nil {
		if strings.Contains(strings.ToLower(out), "tls") {
			t.Skipf("this redis-server has no TLS support (not built with BUILD_TLS=yes):\n%s", out)
		}
		t.Fatalf("redis-server exited:\n%s", out)
	}
	addr := "127.0.0.1:" + strconv.Itoa(p.Port)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	secrets := []string{pw}

	good := connect.RedisConfig{
		URL: "rediss://:" + pw + "@" + addr + "/0", CAFile: pki.CA,
		CertFile: pki.ClientCert, KeyFile: pki.ClientKey,
	}
	implicit := good
	implicit.URL = "redis://" + addr + "/0" // TLS because a CA is given
	implicit.Password = pw
	for _, cfg := range []connect.RedisConfig{good, implicit} {
		c, err := connect.ConnectRedis(ctx, cfg, nil)
		if err != nil {
			t.Fatalf("%s with CA and client cert: %v", cfg, err)
		}
		if err := c.Set(ctx, testenv.Prefix(t)+":k", "v", time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
		c.Close()
	}

	for name, cfg := range map[string]connect.RedisConfig{
		"system roots":   {URL: "rediss://:" + pw + "@" + addr + "/0", CertFile: pki.ClientCert, KeyFile: pki.ClientKey},
		"untrusted CA":   {URL: "rediss://:" + pw + "@" + addr + "/0", CAFile: pki.OtherCA, CertFile: pki.ClientCert, KeyFile: pki.ClientKey},
		"no client cert": {URL: "rediss://:" + pw + "@" + addr + "/0", CAFile: pki.CA},
		"plain text":     {URL: "redis://:" + pw + "@" + addr + "/0"},
	} {
		t.Run("bad/"+name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			defer cancel()
			c, err := connect.ConnectRedis(ctx, cfg, nil)
			if err == nil {
				c.Close()
				t.Fatalf("%s connected", cfg)
			}
			t.Logf("refused: %v", err)
			assertNoSecret(t, err.Error(), secrets)
		})
	}
}

func TestRedisConfigErrors(t *testing.T) {
	ctx := context.Background()
	for name, cfg := range map[string]connect.RedisConfig{
		"bad scheme":      {URL: "http://:pw-secret-1@127.0.0.1:1/0"},
		"missing pw file": {PasswordFile: "/nonexistent/pw"},
		"missing CA":      {URL: "rediss://127.0.0.1:1", CAFile: "/nonexistent/ca.pem"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := connect.ConnectRedis(ctx, cfg, nil)
			if !errors.Is(err, connect.ErrConfig) {
				t.Fatalf("want ErrConfig, got %v", err)
			}
			assertNoSecret(t, err.Error(), []string{"pw-secret-1"})
		})
	}
}

// TestRedisDefaultInstance: the shared test Redis (no auth) works through
// ConnectRedis too, and a cluster URL yields a cluster client.
func TestRedisDefaultInstance(t *testing.T) {
	url := testenv.RedisURL(t)
	c, err := connect.ConnectRedis(context.Background(), connect.RedisConfig{URL: url}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, ok := c.(*redis.Client); !ok {
		t.Fatalf("want *redis.Client, got %T", c)
	}
}

// startACLRedis starts a redis-server and applies the ACL rule documented
// in docs/security.md for keyPrefix, without the rules in drop; it returns
// the server's address and the restricted user's password.
func startACLRedis(t *testing.T, keyPrefix string, drop ...string) (addr, userPW string) {
	t.Helper()
	const admin = "admin-R3dis-Pw"
	userPW = "connector-Acl-Pw"
	p, out := startRedis(t, false, "--requirepass", admin)
	if p == nil {
		t.Fatalf("redis-server exited:\n%s", out)
	}
	doc, err := os.ReadFile(filepath.Join(testenv.ModuleRoot(t), "docs", "security.md"))
	if err != nil {
		t.Fatal(err)
	}
	var rule []string
	for _, line := range strings.Split(string(doc), "\n") {
		if strings.HasPrefix(line, "ACL SETUSER connector ") {
			line = strings.Replace(line, ">PASSWORD", ">"+userPW, 1)
			line = strings.ReplaceAll(line, "~connector:*", "~"+keyPrefix+":*")
			line = strings.ReplaceAll(line, "~{connector:*", "~{"+keyPrefix+":*")
			rule = slices.DeleteFunc(strings.Fields(line), func(f string) bool { return slices.Contains(drop, f) })
		}
	}
	if rule == nil {
		t.Fatal("docs/security.md has no \"ACL SETUSER connector ...\" line")
	}
	addr = "127.0.0.1:" + strconv.Itoa(p.Port)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	adm, err := connect.ConnectRedis(ctx, connect.RedisConfig{URL: "redis://" + addr, Password: admin}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer adm.Close()
	args := make([]any, len(rule))
	for i, f := range rule {
		args[i] = f
	}
	if err := adm.Do(ctx, args...).Err(); err != nil {
		t.Fatalf("documented ACL rule rejected by Redis: %v", err)
	}
	return addr, userPW
}

// TestRedisLeastPrivilegeACL applies the ACL rule documented in
// docs/security.md and shows the connector's operations work on its keys
// and nothing else does.
func TestRedisLeastPrivilegeACL(t *testing.T) {
	addr, userPW := startACLRedis(t, "connector")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	c, err := connect.ConnectRedis(ctx, connect.RedisConfig{URL: "redis://" + addr, Username: "connector", Password: userPW}, nil)
	if err != nil {
		t.Fatalf("connector user: %v", err)
	}
	defer c.Close()
	lua := redis.NewScript(`redis.call("SET", KEYS[1], ARGV[1], "PX", 60000); return redis.call("INCR", KEYS[2])`)
	allowed := map[string]func() error{
		"SET/GET": func() error {
			c.Set(ctx, "connector:rec:1", "x", time.Minute)
			return c.Get(ctx, "connector:rec:1").Err()
		},
		"SET NX PX": func() error {
			return c.SetArgs(ctx, "connector:lock:1", "tok", redis.SetArgs{Mode: "NX", TTL: time.Second}).Err()
		},
		"hash tag keys": func() error { return c.HSet(ctx, "{connector:bind:shop:product}:e2l", "1", "P-1").Err() },
		"Lua script":    func() error { return lua.Run(ctx, c, []string{"connector:a", "connector:n"}, "v").Err() },
		"MULTI/EXEC": func() error {
			_, err := c.TxPipelined(ctx, func(p redis.Pipeliner) error { p.Incr(ctx, "connector:n"); return nil })
			return err
		},
		"SCAN+UNLINK":    func() error { c.Scan(ctx, 0, "connector:*", 100); return c.Unlink(ctx, "connector:rec:1").Err() },
		"PEXPIRE/EXISTS": func() error { c.PExpire(ctx, "connector:n", time.Minute); return c.Exists(ctx, "connector:n").Err() },
		"slot announcements": func() error {
			ps := c.Subscribe(ctx, "{connector:channels}:freed")
			defer ps.Close()
			if _, err := ps.Receive(ctx); err != nil {
				return err
			}
			return c.Publish(ctx, "{connector:channels}:freed", "root.shop").Err()
		},
	}
	for name, f := range allowed {
		if err := f(); err != nil {
			t.Errorf("allowed operation %s failed: %v", name, err)
		}
	}
	denied := map[string]func() error{
		"other key write": func() error { return c.Set(ctx, "other:k", "x", 0).Err() },
		"other key read":  func() error { return c.Get(ctx, "other:k").Err() },
		"Lua, other key":  func() error { return lua.Run(ctx, c, []string{"other:a", "connector:n"}, "v").Err() },
		"FLUSHALL":        func() error { return c.FlushAll(ctx).Err() },
		"KEYS":            func() error { return c.Keys(ctx, "*").Err() },
		"CONFIG GET":      func() error { return c.ConfigGet(ctx, "requirepass").Err() },
		"ACL LIST":        func() error { return c.Do(ctx, "ACL", "LIST").Err() },
		"PUBLISH":         func() error { return c.Publish(ctx, "connector:chan", "x").Err() },
	}
	for name, f := range denied {
		err := f()
		if err == nil || !strings.Contains(err.Error(), "NOPERM") {
			t.Errorf("%s: want NOPERM, got %v", name, err)
		}
	}
}

// TestRedisCluster: a redis+cluster:// URL (and a node list) yields a
// cluster client that authenticates; a one-node cluster started here holds
// all slots.
func TestRedisCluster(t *testing.T) {
	const pw = "cluster-R3dis-Pw"
	dir := t.TempDir()
	// The bus port is explicit: the default, port+10000, is out of range
	// for the upper part of the ephemeral ports freePort returns.
	p, out := startRedis(t, false, "--requirepass", pw, "--masterauth", pw,
		"--cluster-enabled", "yes", "--cluster-config-file", filepath.Join(dir, "nodes.conf"),
		"--cluster-port", strconv.Itoa(freePort(t)))
	if p == nil {
		t.Fatalf("redis-server exited:\n%s", out)
	}
	addr := "127.0.0.1:" + strconv.Itoa(p.Port)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	node := redis.NewClient(&redis.Options{Addr: addr, Password: pw})
	defer node.Close()
	if err := node.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", "0", "16383").Err(); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() bool {
		s, _ := node.ClusterInfo(ctx).Result()
		return strings.Contains(s, "cluster_state:ok")
	}, "one-node cluster ok")

	for _, url := range []string{
		"redis+cluster://:" + pw + "@" + addr,
		"redis://" + addr + "," + addr, // node list; password from the flag
	} {
		cfg := connect.RedisConfig{URL: url}
		if !strings.Contains(url, pw) {
			cfg.Password = pw
		}
		c, err := connect.ConnectRedis(ctx, cfg, nil)
		if err != nil {
			t.Fatalf("%s: %v", cfg, err)
		}
		if _, ok := c.(*redis.ClusterClient); !ok {
			t.Fatalf("%s: want *redis.ClusterClient, got %T", cfg, c)
		}
		if err := c.Set(ctx, "{connector:x}:k", "v", time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	_, err := connect.ConnectRedis(ctx, connect.RedisConfig{URL: "redis+cluster://:wrong-Cluster-Pw@" + addr}, nil)
	if err == nil {
		t.Fatal("wrong password accepted")
	}
	assertNoSecret(t, err.Error(), []string{pw, "wrong-Cluster-Pw"})
}

// TestRedisPasswordRotation: with a password file, new connections use
// the password the file holds now.
func TestRedisPasswordRotation(t *testing.T) {
	const oldPW, newPW = "old-Redis-Rot-1", "new-Redis-Rot-2"
	p, out := startRedis(t, false, "--requirepass", oldPW)
	if p == nil {
		t.Fatalf("redis-server exited:\n%s", out)
	}
	addr := "127.0.0.1:" + strconv.Itoa(p.Port)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	pwFile := writeFile(t, "pw", oldPW+"\n")
	c, err := connect.ConnectRedis(ctx, connect.RedisConfig{URL: "redis://" + addr, PasswordFile: pwFile}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	adm := redis.NewClient(&redis.Options{Addr: addr, Password: oldPW})
	defer adm.Close()

	if err := os.WriteFile(pwFile, []byte(newPW+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := adm.ConfigSet(ctx, "requirepass", newPW).Err(); err != nil {
		t.Fatal(err)
	}
	// Drop every other connection: the client must open new ones.
	if err := adm.Do(ctx, "CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes").Err(); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() bool { return c.Ping(ctx).Err() == nil }, "ping with the rotated password")
}
