package bindings_test

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/connector-go/connector/bindings"
	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/job"
)

// closedAddr returns a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// With Redis down, every operation returns an error value that is both
// ErrUnavailable and a (counted) job.RetryableError: the job retries and
// nothing is lost. No panic, no hang.
func TestRedisDownIsRetryable(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: closedAddr(t), MaxRetries: -1, DialTimeout: time.Second, DialerRetries: 1})
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

// A lock whose Redis goes away while held: Extend and Release report the
// outage as retryable, not as a lost lock.
func TestLockOpsDuringOutage(t *testing.T) {
	shared, prefix := testenv.Redis(t)
	own := redis.NewClient(shared.Options()) // closed below; shared cleans up
	s := bindings.New(own, prefix)
	ctx := context.Background()
	l, err := s.Lock(ctx, "r", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	// The lock's client goes away: every later call fails without Redis.
	if err := own.Close(); err != nil {
		t.Fatal(err)
	}
	err = l.Extend(ctx, time.Minute)
	if !errors.Is(err, bindings.ErrUnavailable) || errors.Is(err, bindings.ErrLockLost) {
		t.Fatalf("Extend with Redis gone: %v", err)
	}
	if _, ok := job.AsRetryable(err); !ok {
		t.Fatalf("Extend with Redis gone is not retryable: %v", err)
	}
	if err := l.Release(ctx); !errors.Is(err, bindings.ErrUnavailable) {
		t.Fatalf("Release with Redis gone: %v", err)
	}
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
