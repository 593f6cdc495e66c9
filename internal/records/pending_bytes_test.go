package records

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/internal/wire"
	"github.com/connector-go/connector/job"
	"github.com/redis/go-redis/v9"
)

// While Redis is unreachable the updates held are bounded in bytes too,
// not only in number: a handler's result (or error, or stack) is of any
// size, and MaxPending updates of a megabyte each are 200 GB.
func TestPendingUpdatesAreBoundedInBytes(t *testing.T) {
	saved := maxPendingBytes
	maxPendingBytes = 8 << 20
	t.Cleanup(func() { maxPendingBytes = saved })
	// a Redis that does not answer (nothing listens on port 1)
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialTimeout: time.Second})
	t.Cleanup(func() { _ = c.Close() })
	s := New(c, wire.MustNames(testenv.Prefix(t)), time.Minute, nil)
	s.once.Do(func() { close(s.done) }) // (the test flushes, not the loop)
	<-s.closed
	big := strings.Repeat("r", 1<<20)
	small := &Update{ID: "chosen-small", State: job.StateDone, Result: "ok"}
	check := func(when string) {
		t.Helper()
		s.mu.Lock()
		size, held := len(s.buf), len(s.ents)
		s.mu.Unlock()
		if size > maxPendingBytes {
			t.Fatalf("%s: %d bytes held in %d updates, over %d", when, size, held, maxPendingBytes)
		}
	}
	for i := 0; i < 16; i++ {
		s.Record(&Update{ID: wire.NewID(), State: job.StateDone, Result: big})
	}
	s.Record(small) // small updates still fit
	check("recorded")
	s.mu.Lock()
	last := s.ents[len(s.ents)-1].id
	s.mu.Unlock()
	if last != small.ID {
		t.Fatalf("the last update held is %s, want the small one", last)
	}
	ctx := context.WithValue(context.Background(), flushHookKey{}, func() {
		for i := 0; i < 16; i++ {
			s.Record(&Update{ID: wire.NewID(), State: job.StateDone, Result: big})
		}
	})
	c.AddHook(duringFailedFlush{})
	if err := s.Flush(ctx); err == nil {
		t.Fatal("flush through an unreachable Redis succeeded")
	}
	check("after a failed flush")
}
