package bindings_test

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/connector-go/connector/bindings"
	"github.com/connector-go/connector/internal/testenv"
)

// startClusterNode runs a one-node Redis Cluster (all 16384 slots on one
// master) on a free loopback port. A cluster node refuses any command or
// script whose keys span hash slots (CROSSSLOT), whatever node owns them,
// so this proves the key layout is Cluster ready.
func startClusterNode(t *testing.T) *redis.ClusterClient {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redis-server not installed: cannot start a cluster node")
	}
	dir := t.TempDir()
	addr := closedAddr(t)
	port := addr[strings.LastIndexByte(addr, ':')+1:]
	cmd := exec.Command(bin, "--port", port, "--bind", "127.0.0.1", "--cluster-enabled", "yes",
		"--cluster-config-file", filepath.Join(dir, "nodes.conf"), "--dir", dir,
		"--save", "", "--appendonly", "no", "--logfile", filepath.Join(dir, "redis.log"))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	node := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = node.Close() })
	ctx := context.Background()
	testenv.Eventually(t, 10*time.Second, func() bool { return node.Ping(ctx).Err() == nil }, "cluster node to start")
	if err := node.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", 0, 16383).Err(); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() bool {
		return strings.Contains(node.ClusterInfo(ctx).Val(), "cluster_state:ok")
	}, "cluster state ok")
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{addr}})
	t.Cleanup(func() { _ = cc.Close() })
	testenv.Eventually(t, 10*time.Second, func() bool { return cc.Ping(ctx).Err() == nil }, "cluster client")
	return cc
}

// Every operation works through a ClusterClient against a real cluster
// node: the keys one script or command touches share a hash slot.
func TestClusterReady(t *testing.T) {
	cc := startClusterNode(t)
	ctx := context.Background()

	// The node enforces slots: a script over two unrelated keys is refused.
	err := cc.Eval(ctx, "return 1", []string{"a", "b"}).Err()
	if err == nil || !strings.Contains(err.Error(), "CROSSSLOT") {
		t.Fatalf("cluster node does not enforce slots: %v", err)
	}

	s := bindings.New(cc, "clu")
	b := s.Binder("shop:eu", "product")
	if err := b.Bind(ctx, "E1", "L1", time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := b.Bind(ctx, "E1", "L2", time.Now()); !errors.Is(err, bindings.ErrConflict) {
		t.Fatalf("conflict on cluster: %v", err)
	}
	ids := make([]string, 2500)
	for i := range ids {
		ids[i] = fmt.Sprintf("E%d", i)
	}
	m, err := b.ToInternalMany(ctx, ids)
	if err != nil || len(m) != 1 || m["E1"] != "L1" {
		t.Fatalf("batch on cluster: %v %v", m, err)
	}
	if r, err := b.ToExternalMany(ctx, []string{"L1"}); err != nil || r["L1"] != "E1" {
		t.Fatalf("reverse batch on cluster: %v %v", r, err)
	}
	if _, found, err := b.SyncDate(ctx, "E1"); err != nil || !found {
		t.Fatalf("sync date on cluster: %v %v", found, err)
	}
	if err := b.Unbind(ctx, "E1"); err != nil {
		t.Fatal(err)
	}
	l, err := s.Lock(ctx, "shop:eu/E1", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Lock(ctx, "shop:eu/E1", time.Minute); !errors.Is(err, bindings.ErrLocked) {
		t.Fatalf("held lock on cluster: %v", err)
	}
	if err := l.Extend(ctx, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.MarkCompleted(ctx, "k", "v", time.Minute); err != nil {
		t.Fatal(err)
	}
	if v, done, err := s.Completed(ctx, "k"); err != nil || !done || v != "v" {
		t.Fatalf("idempotency on cluster: %q %v %v", v, done, err)
	}
}

// The keys one script touches hash to the same slot (CRC16 of the hash tag,
// as Redis Cluster computes it), for awkward names too.
func TestKeysShareSlot(t *testing.T) {
	if got := slot("123456789"); got != 0x31C3%16384 {
		t.Fatalf("crc16 check value: %d", got)
	}
	for _, names := range [][3]string{{"p", "shop", "product"}, {"p:x", "a{b}", "c}d"}, {"", "", ""}} {
		tag := "{" + esc(names[0]) + ":bind:" + esc(names[1]) + ":" + esc(names[2]) + "}"
		want := slot(tag + ":e2l")
		for _, k := range []string{tag + ":l2e", tag + ":sync"} {
			if slot(k) != want {
				t.Fatalf("%s and %s:e2l in different slots", k, tag)
			}
		}
		ltag := "{" + esc(names[0]) + ":lock:" + esc(names[1]) + "}"
		if slot(ltag+":holder") != slot(ltag+":fence") {
			t.Fatalf("lock keys of %s in different slots", ltag)
		}
	}
}

func esc(s string) string {
	return strings.NewReplacer("%", "%25", ":", "%3A", "{", "%7B", "}", "%7D").Replace(s)
}

// slot computes a key's Redis Cluster hash slot: CRC16-XMODEM of the hash
// tag (the part between the first '{' and the next '}', when not empty).
func slot(key string) int {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	var crc uint16
	for i := 0; i < len(key); i++ {
		crc ^= uint16(key[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return int(crc) % 16384
}
