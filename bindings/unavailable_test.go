package bindings_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/connector-go/connector/bindings"
	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/job"
)

// With Redis down, every operation returns an error value that is both
// ErrUnavailable and a (counted) job.RetryableError: the job retries and
// nothing is lost. No panic, no hang.
func TestRedisDownIsRetryable(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: testenv.FreeAddr(t), MaxRetries: -1, DialTimeout: time.Second, DialerRetries: 1})
	t.Cleanup(func() { _ = rdb.Close() })
	s := bindings.New(rdb, "down")
	b := s.Binder("shop", "product")
	ctx := context.Background()

	check := func(op string, err error) {
		t.Helper()
		if !errors.Is(err, bindings.ErrUnavailable) {
			t.Fatalf("%s: %v; want ErrUnavailable", op, err)
		}
		r, ok := job.AsRetryable(err)
		if !ok || r.NoCount {
			t.Fatalf("%s: %v is not a counted job.RetryableError", op, err)
		}
		if errors.Is(err, bindings.ErrLocked) || errors.Is(err, bindings.ErrConflict) {
			t.Fatalf("%s: outage mistaken for a lock or conflict: %v", op, err)
		}
	}
	_, _, err := b.ToInternal(ctx, "E")
	check("ToInternal", err)
	_, _, err = b.ToExternal(ctx, "L")
	check("ToExternal", err)
	check("Bind", b.Bind(ctx, "E", "L", time.Now()))
	check("Unbind", b.Unbind(ctx, "E"))
	_, _, err = b.SyncDate(ctx, "E")
	check("SyncDate", err)
	_, err = b.ToInternalMany(ctx, []string{"E1", "E2"})
	check("ToInternalMany", err)
	_, err = b.SyncDateMany(ctx, []string{"E1", "E2"})
	check("SyncDateMany", err)
	many := make([]string, 2500)
	for i := range many {
		many[i] = "L"
	}
	_, err = b.ToExternalMany(ctx, many)
	check("ToExternalMany (pipelined)", err)
	_, err = s.Lock(ctx, "r", time.Second)
	check("Lock", err)
	_, err = s.Acquire(ctx, "r", time.Second)
	check("Acquire", err)
	_, _, err = s.Completed(ctx, "k")
	check("Completed", err)
	check("MarkCompleted", s.MarkCompleted(ctx, "k", "v", time.Second))
	t.Logf("example: %v", err)
}

// A Redis outage in the middle of a session against the real server, in
// both its forms: connections reset (a crashed or restarted Redis) and
// connections that hang (a partition, a paused VM). Every operation returns
// ErrUnavailable as a counted retry within the client's timeouts (no panic,
// no hang, a held lock is not reported lost), and once Redis is reachable
// again everything written before the outage is still there.
func TestRedisOutageMidSession(t *testing.T) {
	_, prefix := testenv.Redis(t) // for its unique prefix, cleaned up at the end
	proxy := startProxy(t, testRedisAddr(t))
	const timeout = 300 * time.Millisecond
	rdb := redis.NewClient(&redis.Options{Addr: proxy.Addr(), MaxRetries: -1,
		DialTimeout: timeout, ReadTimeout: timeout, WriteTimeout: timeout})
	t.Cleanup(func() { _ = rdb.Close() })
	s := bindings.New(rdb, prefix)
	b := s.Binder("shop", "product")
	ctx := context.Background()

	at := time.Date(2026, 2, 3, 4, 5, 6, 0, time.UTC)
	if err := b.Bind(ctx, "E1", "L1", at); err != nil {
		t.Fatal(err)
	}
	l, err := s.Lock(ctx, "shop/product/E1", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.MarkCompleted(ctx, "import:E1", "L1", time.Hour); err != nil {
		t.Fatal(err)
	}

	ops := map[string]func() error{
		"ToInternal":     func() error { _, _, err := b.ToInternal(ctx, "E1"); return err },
		"ToExternal":     func() error { _, _, err := b.ToExternal(ctx, "L1"); return err },
		"ToInternalMany": func() error { _, err := b.ToInternalMany(ctx, []string{"E1", "E2"}); return err },
		"SyncDate":       func() error { _, _, err := b.SyncDate(ctx, "E1"); return err },
		"SyncDateMany":   func() error { _, err := b.SyncDateMany(ctx, []string{"E1"}); return err },
		"Bind":           func() error { return b.Bind(ctx, "E2", "L2", at) },
		"Unbind":         func() error { return b.Unbind(ctx, "E9") },
		"Lock":           func() error { _, err := s.Lock(ctx, "other", time.Minute); return err },
		"Extend":         func() error { return l.Extend(ctx, time.Minute) },
		"Release":        func() error { return l.Release(ctx) },
		"Completed":      func() error { _, _, err := s.Completed(ctx, "import:E1"); return err },
		"MarkCompleted":  func() error { return s.MarkCompleted(ctx, "import:E2", "L2", time.Hour) },
	}
	for _, state := range []proxyState{proxyDown, proxyHang} {
		proxy.set(state)
		for name, op := range ops {
			began := time.Now()
			err := op()
			took := time.Since(began)
			if !errors.Is(err, bindings.ErrUnavailable) {
				t.Fatalf("state %d: %s: %v; want ErrUnavailable", state, name, err)
			}
			if r, ok := job.AsRetryable(err); !ok || r.NoCount {
				t.Fatalf("state %d: %s: %v is not a counted job.RetryableError", state, name, err)
			}
			if errors.Is(err, bindings.ErrLockLost) || errors.Is(err, bindings.ErrLocked) || errors.Is(err, bindings.ErrConflict) {
				t.Fatalf("state %d: %s: outage mistaken for an answer: %v", state, name, err)
			}
			if took > 10*timeout {
				t.Fatalf("state %d: %s took %s: the client's timeouts should bound it", state, name, took)
			}
		}
	}

	// Redis is back: the first call may still meet a connection the cut
	// closed; after that, all is as it was before the outage.
	proxy.set(proxyUp)
	testenv.Eventually(t, 10*time.Second, func() bool { return rdb.Ping(ctx).Err() == nil }, "Redis through the proxy again")
	if loc, found, err := b.ToInternal(ctx, "E1"); err != nil || !found || loc != "L1" {
		t.Fatalf("binding after the outage: %q %v %v", loc, found, err)
	}
	if got, _, err := b.SyncDate(ctx, "E1"); err != nil || !got.Equal(at) {
		t.Fatalf("sync date after the outage: %v %v", got, err)
	}
	if res, done, err := s.Completed(ctx, "import:E1"); err != nil || !done || res != "L1" {
		t.Fatalf("idempotency record after the outage: %q %v %v", res, done, err)
	}
	if err := l.Extend(ctx, time.Minute); err != nil {
		t.Fatalf("the lock, held all along, cannot be extended after the outage: %v", err)
	}
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.Bind(ctx, "E2", "L2", at); err != nil {
		t.Fatal(err)
	}
}

// The transient replies of a replica that a failover left behind (READONLY
// for writes; MASTERDOWN for everything when it does not serve stale data)
// are outages, not permanent errors: the job retries and reaches the new
// primary later.
func TestReplicaRepliesAreRetryable(t *testing.T) {
	// A replica of a primary that is gone (nothing listens there).
	addr := startRedisServer(t, "--replicaof", "127.0.0.1", testenv.FreeAddr(t)[len("127.0.0.1:"):])
	rdb := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	t.Cleanup(func() { _ = rdb.Close() })
	s := bindings.New(rdb, "replica")
	b := s.Binder("shop", "product")
	ctx := context.Background()

	outage := func(op string, err error, code string) {
		t.Helper()
		if !errors.Is(err, bindings.ErrUnavailable) || !strings.Contains(err.Error(), code) {
			t.Fatalf("%s: %v; want ErrUnavailable from %s", op, err, code)
		}
		if r, ok := job.AsRetryable(err); !ok || r.NoCount {
			t.Fatalf("%s: %v is not a counted job.RetryableError", op, err)
		}
	}
	// Writes, plain and in scripts, are refused with READONLY; reads work.
	outage("Bind", b.Bind(ctx, "E1", "L1", time.Now()), "READONLY")
	outage("Unbind", b.Unbind(ctx, "E1"), "READONLY")
	_, err := s.Lock(ctx, "r", time.Minute)
	outage("Lock", err, "READONLY")
	outage("MarkCompleted", s.MarkCompleted(ctx, "k", "v", time.Minute), "READONLY")
	if _, found, err := b.ToInternal(ctx, "E1"); err != nil || found {
		t.Fatalf("read from a stale replica: %v %v", found, err)
	}

	if err := rdb.ConfigSet(ctx, "replica-serve-stale-data", "no").Err(); err != nil {
		t.Fatal(err)
	}
	_, _, err = b.ToInternal(ctx, "E1")
	outage("ToInternal", err, "MASTERDOWN")
	_, err = b.ToInternalMany(ctx, []string{"E1"})
	outage("ToInternalMany", err, "MASTERDOWN")
	_, _, err = s.Completed(ctx, "k")
	outage("Completed", err, "MASTERDOWN")
}

// A cancelled context is the caller giving up, not an outage: it is not
// retryable from this package's point of view.
func TestCancelledContextIsNotUnavailable(t *testing.T) {
	s, _, _ := newStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, _, err := s.Binder("shop", "product").ToInternal(ctx, "E")
	if !errors.Is(err, context.Canceled) || errors.Is(err, bindings.ErrUnavailable) {
		t.Fatalf("cancelled lookup: %v", err)
	}
}

// A server reply that retrying cannot fix (a key of the wrong type, left by
// an operator) is a permanent error, not an outage.
func TestWrongTypeIsPermanent(t *testing.T) {
	s, rdb, prefix := newStore(t)
	ctx := context.Background()
	if err := rdb.Set(ctx, "{"+prefix+":bind:shop:product}:e2l", "oops", 0).Err(); err != nil {
		t.Fatal(err)
	}
	_, _, err := s.Binder("shop", "product").ToInternal(ctx, "E")
	if err == nil || errors.Is(err, bindings.ErrUnavailable) {
		t.Fatalf("WRONGTYPE: %v", err)
	}
	if _, ok := job.AsRetryable(err); ok {
		t.Fatalf("WRONGTYPE is retryable: %v", err)
	}
}
