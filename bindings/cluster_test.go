package bindings_test

import (
	"context"
	"errors"
	"fmt"
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
// so this proves the key layout is Cluster ready. Skipped, like every test
// that starts a server of its own, when redis-server is not installed.
func startClusterNode(t *testing.T) *redis.ClusterClient {
	t.Helper()
	dir := t.TempDir()
	addr := startRedisServer(t, "--cluster-enabled", "yes",
		"--cluster-config-file", filepath.Join(dir, "nodes.conf"))
	node := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = node.Close() })
	ctx := context.Background()
	// CLUSTER ADDSLOTS with every slot: ADDSLOTSRANGE needs Redis 7.
	slots := make([]any, 0, 2+16384)
	slots = append(slots, "CLUSTER", "ADDSLOTS")
	for i := range 16384 {
		slots = append(slots, i)
	}
	if err := node.Do(ctx, slots...).Err(); err != nil {
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
// node: the keys one script or command touches share a hash slot, for
// awkward names too (braces and colons in every part).
func TestClusterReady(t *testing.T) {
	cc := startClusterNode(t)
	ctx := context.Background()

	// The node enforces slots: a script over two unrelated keys is refused.
	err := cc.Eval(ctx, "return 1", []string{"a", "b"}).Err()
	if err == nil || !strings.Contains(err.Error(), "CROSSSLOT") {
		t.Fatalf("cluster node does not enforce slots: %v", err)
	}

	for _, n := range []struct{ prefix, backend, model, resource string }{
		{"clu", "shop:eu", "product", "shop:eu/E1"},
		{"c{l}u:", "a}b{", "{c}:d", "{r}:1}"},
	} {
		s := bindings.New(cc, n.prefix)
		b := s.Binder(n.backend, n.model)
		if err := b.Bind(ctx, "E1", "L1", time.Now()); err != nil {
			t.Fatalf("%+v: %v", n, err)
		}
		if err := b.Bind(ctx, "E1", "L1", time.Now()); err != nil {
			t.Fatalf("%+v: rebind: %v", n, err)
		}
		if err := b.Bind(ctx, "E1", "L2", time.Now()); !errors.Is(err, bindings.ErrConflict) {
			t.Fatalf("%+v: conflict on cluster: %v", n, err)
		}
		if loc, found, err := b.ToInternal(ctx, "E1"); err != nil || !found || loc != "L1" {
			t.Fatalf("%+v: ToInternal on cluster: %q %v %v", n, loc, found, err)
		}
		if ext, found, err := b.ToExternal(ctx, "L1"); err != nil || !found || ext != "E1" {
			t.Fatalf("%+v: ToExternal on cluster: %q %v %v", n, ext, found, err)
		}
		ids := make([]string, 2500) // > 1000: several HMGETs in one pipeline
		locs := make([]string, len(ids))
		for i := range ids {
			ids[i], locs[i] = fmt.Sprintf("E%d", i), fmt.Sprintf("L%d", i)
		}
		m, err := b.ToInternalMany(ctx, ids)
		if err != nil || len(m) != 1 || m["E1"] != "L1" {
			t.Fatalf("%+v: batch on cluster: %v %v", n, m, err)
		}
		if r, err := b.ToExternalMany(ctx, locs); err != nil || len(r) != 1 || r["L1"] != "E1" {
			t.Fatalf("%+v: reverse batch on cluster: %v %v", n, r, err)
		}
		if d, err := b.SyncDateMany(ctx, ids); err != nil || len(d) != 1 {
			t.Fatalf("%+v: sync dates on cluster: %v %v", n, d, err)
		}
		if _, found, err := b.SyncDate(ctx, "E1"); err != nil || !found {
			t.Fatalf("%+v: sync date on cluster: %v %v", n, found, err)
		}
		if err := b.Unbind(ctx, "E1"); err != nil {
			t.Fatalf("%+v: %v", n, err)
		}
		l, err := s.Lock(ctx, n.resource, time.Minute)
		if err != nil {
			t.Fatalf("%+v: %v", n, err)
		}
		if _, err := s.Lock(ctx, n.resource, time.Minute); !errors.Is(err, bindings.ErrLocked) {
			t.Fatalf("%+v: held lock on cluster: %v", n, err)
		}
		if err := l.Extend(ctx, time.Minute); err != nil {
			t.Fatalf("%+v: %v", n, err)
		}
		if err := l.Release(ctx); err != nil {
			t.Fatalf("%+v: %v", n, err)
		}
		if err := s.MarkCompleted(ctx, n.resource, "v", time.Minute); err != nil {
			t.Fatalf("%+v: %v", n, err)
		}
		if v, done, err := s.Completed(ctx, n.resource); err != nil || !done || v != "v" {
			t.Fatalf("%+v: idempotency on cluster: %q %v %v", n, v, done, err)
		}
	}
}

// The keys the package really writes (read back from Redis, not rebuilt
// here) are grouped by hash tag: every key of one binder, and both keys of
// one lock, hash to one slot (CRC16 of the tag, as Redis Cluster computes
// it), and no name, however awkward, cuts a tag short.
func TestKeysShareSlot(t *testing.T) {
	if got := slot("123456789"); got != 0x31C3%16384 {
		t.Fatalf("crc16 check value: %d", got)
	}
	rdb, prefix := testenv.Redis(t)
	ctx := context.Background()
	names := [][2]string{{"shop", "product"}, {"a{b}", "c}d"}, {"}", "{"}, {"x:y", ":z"}}
	for i, n := range names {
		s := bindings.New(rdb, fmt.Sprintf("%s{%d}", prefix, i))
		if err := s.Binder(n[0], n[1]).Bind(ctx, "E", "L", time.Now()); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Lock(ctx, n[0]+"/"+n[1], time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	keys, err := rdb.Keys(ctx, "*"+prefix+"*").Result()
	if err != nil {
		t.Fatal(err)
	}
	groups := map[string][]string{} // hash tag -> keys
	for _, k := range keys {
		i, j := strings.IndexByte(k, '{'), strings.LastIndexByte(k, '}')
		if i != 0 || j < 0 || strings.IndexByte(k[1:], '}') != j-1 {
			t.Fatalf("key %q: the hash tag is not the whole braced part", k)
		}
		groups[k[:j+1]] = append(groups[k[:j+1]], k)
	}
	// One binder (e2l, l2e, sync) and one lock (holder, fence) per name.
	if len(groups) != 2*len(names) || len(keys) != 5*len(names) {
		t.Fatalf("%d keys in %d groups, want %d in %d: %v", len(keys), len(groups), 5*len(names), 2*len(names), keys)
	}
	for tag, ks := range groups {
		if len(ks) != 2 && len(ks) != 3 {
			t.Fatalf("tag %s: keys %v", tag, ks)
		}
		for _, k := range ks[1:] {
			if slot(k) != slot(ks[0]) {
				t.Fatalf("%s and %s are in different slots", k, ks[0])
			}
		}
	}
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
