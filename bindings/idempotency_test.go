package bindings_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/connector-go/connector/bindings"
	"github.com/connector-go/connector/internal/testenv"
)

// A unit of work marked completed is seen as done with its result; the
// first completion wins; records expire after their TTL.
func TestIdempotencyRecords(t *testing.T) {
	s, _, _ := newStore(t)
	ctx := context.Background()

	if _, done, err := s.Completed(ctx, "import:E1:v3"); err != nil || done {
		t.Fatalf("fresh key: done=%v err=%v", done, err)
	}
	if err := s.MarkCompleted(ctx, "import:E1:v3", "L1", time.Hour); err != nil {
		t.Fatal(err)
	}
	res, done, err := s.Completed(ctx, "import:E1:v3")
	if err != nil || !done || res != "L1" {
		t.Fatalf("Completed = %q, %v, %v", res, done, err)
	}
	// Marking again keeps the first result and is not an error.
	if err := s.MarkCompleted(ctx, "import:E1:v3", "L2", time.Hour); err != nil {
		t.Fatal(err)
	}
	if res, _, _ := s.Completed(ctx, "import:E1:v3"); res != "L1" {
		t.Fatalf("second mark replaced the result: %q", res)
	}
	// An empty result is a valid result.
	if err := s.MarkCompleted(ctx, "export:9", "", 0); err != nil {
		t.Fatal(err)
	}
	if res, done, _ := s.Completed(ctx, "export:9"); !done || res != "" {
		t.Fatalf("empty result: %q %v", res, done)
	}
	if err := s.MarkCompleted(ctx, "", "x", time.Hour); !errors.Is(err, bindings.ErrInvalid) {
		t.Fatalf("empty key: %v", err)
	}
	// TTL: the record goes away.
	if testenv.RedisEmbedded() {
		t.Skip("embedded store: TTLs do not run down")
	}
	if err := s.MarkCompleted(ctx, "short", "x", 50*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, func() bool {
		_, done, err := s.Completed(ctx, "short")
		return err == nil && !done
	}, "the idempotency record to expire")
}

// A redelivered job skips work already done: racing runs of the same unit
// do the effect, then agree on one recorded result.
func TestIdempotencyRedelivery(t *testing.T) {
	s, _, _ := newStore(t)
	ctx := context.Background()
	b := s.Binder("shop", "product")

	// The job: import external record E1 (creating local P-<run> if needed).
	var mu sync.Mutex
	created := 0
	runJob := func(run int) (string, error) {
		key := "shop.import_product:E1"
		if res, done, err := s.Completed(ctx, key); err != nil || done {
			return res, err
		}
		loc, found, err := b.ToInternal(ctx, "E1")
		if err != nil {
			return "", err
		}
		if !found {
			loc = fmt.Sprintf("P-%d", run)
			err := b.Bind(ctx, "E1", loc, time.Now())
			var ce *bindings.ConflictError
			if errors.As(err, &ce) {
				loc = ce.BoundLocalID // another run created it first: reuse
			} else if err != nil {
				return "", err
			} else {
				mu.Lock()
				created++
				mu.Unlock()
			}
		}
		return loc, s.MarkCompleted(ctx, key, loc, time.Hour)
	}

	var wg sync.WaitGroup
	results := make([]string, 10)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := runJob(i)
			if err != nil {
				t.Error(err)
			}
			results[i] = res
		}()
	}
	wg.Wait()
	if created != 1 {
		t.Fatalf("%d local records created, want 1", created)
	}
	for _, r := range results {
		if r != results[0] || r == "" {
			t.Fatalf("runs disagree: %v", results)
		}
	}
	rec, done, err := s.Completed(ctx, "shop.import_product:E1")
	if err != nil || !done || rec != results[0] {
		t.Fatalf("recorded %q %v %v", rec, done, err)
	}
}
