package bindings_test

import (
	"context"
	"errors"
	"regexp"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/connector-go/connector/bindings"
	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/job"
)

// A lock held elsewhere gives ErrLocked wrapped in a retryable error that
// does not count as an attempt; only the holder releases; fencing tokens
// strictly increase per resource.
func TestLockHeldElsewhereAndRelease(t *testing.T) {
	s, rdb, prefix := newStore(t)
	ctx := context.Background()

	l1, err := s.Lock(ctx, "shop/product/E1", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Lock(ctx, "shop/product/E1", time.Minute)
	if !errors.Is(err, bindings.ErrLocked) {
		t.Fatalf("second Lock: %v; want ErrLocked", err)
	}
	r, ok := job.AsRetryable(err)
	if !ok || !r.NoCount {
		t.Fatalf("second Lock: %#v is not a job.RetryNoCount", err)
	}
	if r.Delay != time.Second {
		t.Fatalf("retry delay %s, want the default 1s", r.Delay)
	}
	var le *bindings.LockedError
	if !errors.As(err, &le) || le.Resource != "shop/product/E1" || le.Remaining <= 0 || le.Remaining > time.Minute {
		t.Fatalf("LockedError: %+v", le)
	}

	// Another resource is independent.
	other, err := s.Lock(ctx, "shop/product/E2", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if other.Token() != 1 {
		t.Fatalf("first token of a fresh resource: %d", other.Token())
	}

	// The lease holds a random token (16 bytes from crypto/rand, in hex),
	// not something another worker could guess or share.
	holderKey := "{" + prefix + ":lock:shop/product/E1}:holder"
	tok1 := rdb.Get(ctx, holderKey).Val()
	if !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(tok1) {
		t.Fatalf("lease token %q is not 32 hex characters", tok1)
	}
	if pttl := rdb.PTTL(ctx, holderKey).Val(); pttl <= 0 || pttl > time.Minute {
		t.Fatalf("lease TTL %s, want (0, 1m]", pttl)
	}

	// Release by the holder frees the resource; a second release finds
	// nothing of its own to release.
	if err := l1.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if err := l1.Release(ctx); !errors.Is(err, bindings.ErrLockLost) {
		t.Fatalf("second Release: %v; want ErrLockLost", err)
	}
	l2, err := s.Lock(ctx, "shop/product/E1", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if l2.Token() <= l1.Token() {
		t.Fatalf("fencing token did not increase: %d then %d", l1.Token(), l2.Token())
	}
	if tok2 := rdb.Get(ctx, holderKey).Val(); tok2 == tok1 || len(tok2) != 32 {
		t.Fatalf("second lease token %q (first %q): want a fresh random token", tok2, tok1)
	}
	// The old holder can neither extend nor release the new holder's lease.
	if err := l1.Extend(ctx, time.Minute); !errors.Is(err, bindings.ErrLockLost) {
		t.Fatalf("stale Extend: %v", err)
	}
	if err := l1.Release(ctx); !errors.Is(err, bindings.ErrLockLost) {
		t.Fatalf("stale Release: %v", err)
	}
	if _, err := s.Lock(ctx, "shop/product/E1", time.Minute); !errors.Is(err, bindings.ErrLocked) {
		t.Fatalf("stale Release freed the new holder's lease: %v", err)
	}

	// Acquire: the convenience form.
	release, err := s.Acquire(ctx, "job/42", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Acquire(ctx, "job/42", time.Minute); !errors.Is(err, bindings.ErrLocked) {
		t.Fatalf("Acquire held: %v", err)
	}
	if err := release(ctx); err != nil {
		t.Fatal(err)
	}
	if release, err = s.Acquire(ctx, "job/42", time.Minute); err != nil {
		t.Fatal(err)
	}
	_ = release(ctx)

	// Invalid arguments.
	if _, err := s.Lock(ctx, "x", 0); !errors.Is(err, bindings.ErrInvalid) {
		t.Fatalf("zero TTL: %v", err)
	}

	// WithLockRetryDelay changes the delay the job waits.
	s2 := bindings.New(rdb, prefix, bindings.WithLockRetryDelay(250*time.Millisecond))
	_, err = s2.Lock(ctx, "shop/product/E1", time.Minute)
	if r, ok := job.AsRetryable(err); !ok || r.Delay != 250*time.Millisecond || !r.NoCount {
		t.Fatalf("custom delay: %v", err)
	}
}

// A holder that renews keeps the lock past its TTL; once it stops renewing
// (it "dies"), the lease runs out, another worker gets the lock with a
// larger fencing token, and the old holder can no longer extend or release.
func TestLockHolderStopsRenewing(t *testing.T) {
	s, _, _ := newStore(t)
	if testenv.RedisEmbedded() {
		t.Skip("embedded store: TTLs do not run down")
	}
	ctx := context.Background()
	const ttl = 500 * time.Millisecond

	a, err := s.Lock(ctx, "res", ttl)
	if err != nil {
		t.Fatal(err)
	}
	// Renew for well over one TTL; the lock must stay held all along.
	renewUntil := time.Now().Add(5 * ttl / 2)
	for time.Now().Before(renewUntil) {
		if err := a.Extend(ctx, ttl); err != nil {
			t.Fatalf("Extend while holding: %v", err)
		}
		if _, err := s.Lock(ctx, "res", ttl); !errors.Is(err, bindings.ErrLocked) {
			t.Fatalf("lock taken while the holder renews: %v", err)
		}
		time.Sleep(ttl / 8) // renewal cadence, not a wait for a condition
	}

	// The holder dies: no more Extend. Nothing stays locked past the TTL.
	died := time.Now()
	var b *bindings.Lock
	testenv.Eventually(t, 5*time.Second, func() bool {
		l, err := s.Lock(ctx, "res", time.Minute)
		if err != nil && !errors.Is(err, bindings.ErrLocked) {
			t.Fatalf("Lock: %v", err)
		}
		b = l
		return err == nil
	}, "the dead holder's lease to expire")
	if waited := time.Since(died); waited > ttl+time.Second {
		t.Fatalf("lease outlived its TTL: free after %s", waited)
	}
	if b.Token() <= a.Token() {
		t.Fatalf("fencing token did not increase: %d then %d", a.Token(), b.Token())
	}
	if err := a.Extend(ctx, ttl); !errors.Is(err, bindings.ErrLockLost) {
		t.Fatalf("dead holder's Extend: %v", err)
	}
	if err := a.Release(ctx); !errors.Is(err, bindings.ErrLockLost) {
		t.Fatalf("dead holder's Release: %v", err)
	}
	if err := b.Release(ctx); err != nil {
		t.Fatalf("new holder's Release: %v", err)
	}
}

// Many goroutines compete for one resource: never two holders at once, and
// the tokens handed out are all distinct and increase in acquisition order.
func TestLockMutualExclusion(t *testing.T) {
	s, _, _ := newStore(t)
	ctx := context.Background()
	const workers, wins = 20, 60
	var (
		inside, total atomic.Int64
		mu            sync.Mutex
		tokens        []int64
		wg            sync.WaitGroup
	)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for total.Load() < wins {
				l, err := s.Lock(ctx, "hot", 5*time.Second)
				if errors.Is(err, bindings.ErrLocked) {
					continue
				}
				if err != nil {
					t.Error(err)
					return
				}
				if inside.Add(1) != 1 {
					t.Error("two holders at once")
				}
				mu.Lock()
				tokens = append(tokens, l.Token())
				mu.Unlock()
				total.Add(1)
				inside.Add(-1)
				if err := l.Release(ctx); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	for i := 1; i < len(tokens); i++ {
		if tokens[i] <= tokens[i-1] {
			t.Fatalf("tokens not strictly increasing in acquisition order: %v", tokens)
		}
	}
	t.Logf("%d acquisitions, last token %d", len(tokens), tokens[len(tokens)-1])
}
