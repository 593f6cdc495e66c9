package bindings_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/connector-go/connector/bindings"
	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/job"
)

// A Bind that succeeds must store a sync date SyncDate and SyncDateMany can
// read back. "9999-12-31T23:59:59" is the usual "max date" of ERPs and
// databases; given in a zone west of UTC it is in year 10000 once converted
// to UTC, which time.RFC3339Nano formats but cannot parse. Bind accepts it,
// and from then on SyncDate of that record fails, and so does SyncDateMany
// of every batch that contains it (the whole page of an import).
func TestBindRefusesASyncDateItCouldNotReadBack(t *testing.T) {
	s, _, _ := newStore(t)
	b := s.Binder("shop", "product")
	ctx := context.Background()

	good := time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC)
	if err := b.Bind(ctx, "E-ok", "L-ok", good); err != nil {
		t.Fatal(err)
	}
	maxDate := time.Date(9999, 12, 31, 23, 59, 59, 0, time.FixedZone("EST", -5*3600))
	err := b.Bind(ctx, "E-max", "L-max", maxDate)
	if errors.Is(err, bindings.ErrInvalid) {
		return // refused up front: fine, nothing unreadable was stored
	}
	if err != nil {
		t.Fatalf("Bind: %v", err)
	}
	// Bind said yes: the date must read back.
	got, found, err := b.SyncDate(ctx, "E-max")
	if err != nil || !found || !got.Equal(maxDate) {
		t.Errorf("SyncDate after a successful Bind = %v, %v, %v; want %v", got, found, err, maxDate)
	}
	m, err := b.SyncDateMany(ctx, []string{"E-ok", "E-max"})
	if err != nil || !m["E-ok"].Equal(good) {
		t.Errorf("SyncDateMany of a page holding that record = %v, %v: one bad date fails the whole page", m, err)
	}
}

// "A cancelled context stays a context error" (docs/bindings.md, package
// doc, wrap's comment). When Redis hangs, go-redis does not watch the
// caller's context during a read (ContextTimeoutEnabled is off by
// default): the call returns an i/o timeout after the context ended, and
// wrap, which only looks at the type of the client's error, turns the
// caller giving up into ErrUnavailable, a counted job.Retry. With the
// default MaxRetries this happens whenever the context ends during the
// last attempt; MaxRetries -1 (one attempt) makes it deterministic.
func TestCallerGivingUpWhileRedisHangsIsAContextError(t *testing.T) {
	_, prefix := testenv.Redis(t)
	proxy := startProxy(t, testRedisAddr(t))
	rdb := redis.NewClient(&redis.Options{Addr: proxy.Addr(), MaxRetries: -1,
		DialTimeout: 300 * time.Millisecond, ReadTimeout: 300 * time.Millisecond, WriteTimeout: 300 * time.Millisecond})
	t.Cleanup(func() { _ = rdb.Close() })
	b := bindings.New(rdb, prefix).Binder("shop", "product")
	proxy.set(proxyHang)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	err := b.Bind(ctx, "E1", "L1", time.Now())
	if ctx.Err() == nil {
		t.Fatalf("Bind returned before the caller's deadline: %v", err)
	}
	_, retryable := job.AsRetryable(err)
	if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, bindings.ErrUnavailable) || retryable {
		t.Fatalf("Bind after the caller's context ended: %v (context error %v, ErrUnavailable %v, retryable %v); want the context's error, not an outage",
			err, errors.Is(err, context.DeadlineExceeded), errors.Is(err, bindings.ErrUnavailable), retryable)
	}
}
