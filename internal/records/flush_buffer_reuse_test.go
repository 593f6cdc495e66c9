package records

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/internal/wire"
	"github.com/connector-go/connector/job"
	"github.com/redis/go-redis/v9"
)

// duringFlushes runs the function a flush's context carries (inside the
// flush, after it took the pending updates), then fails the pipeline
// while down is set.
type duringFlushes struct{ down *atomic.Bool }

func (duringFlushes) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (duringFlushes) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (h duringFlushes) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if f, ok := ctx.Value(flushHookKey{}).(func()); ok {
			f()
		}
		if h.down.Load() {
			return errors.New("dial tcp: connection refused")
		}
		return next(ctx, cmds)
	}
}

// A failed flush that cannot put its updates back (the store is full of
// those recorded meanwhile) keeps no buffer shared with the next flush:
// updates recorded while that flush writes never overwrite the bytes it
// is sending.
func TestAFlushNeverSendsBytesRecordedDuringIt(t *testing.T) {
	saved := maxPendingBytes
	maxPendingBytes = 1 << 16
	t.Cleanup(func() { maxPendingBytes = saved })
	rdb, prefix := testenv.Redis(t)
	opt, err := redis.ParseURL(testenv.RedisURL(t))
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(opt)
	down := new(atomic.Bool)
	c.AddHook(duringFlushes{down})
	t.Cleanup(func() { _ = c.Close() })
	s := New(c, wire.MustNames(prefix), time.Minute, nil)
	s.once.Do(func() { close(s.done) }) // (the test flushes, not the loop)
	<-s.closed
	during := func(f func()) context.Context { return context.WithValue(context.Background(), flushHookKey{}, f) }

	fill := strings.Repeat("c", maxPendingBytes-1000)
	s.Record(&Update{ID: "chosen-a", State: job.StateDone, Result: fill})
	if err := s.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Redis fails; meanwhile an update fills the store: the batch taken is
	// dropped.
	s.Record(&Update{ID: "chosen-b", State: job.StateDone, Result: strings.Repeat("b", 2000)})
	down.Store(true)
	if err := s.Flush(during(func() {
		s.Record(&Update{ID: "chosen-c", State: job.StateDone, Result: fill})
	})); err == nil {
		t.Fatal("flush through a failing Redis succeeded")
	}
	// Redis is back; an update is recorded while the next flush sends.
	down.Store(false)
	if err := s.Flush(during(func() {
		s.Record(&Update{ID: "chosen-d", State: job.StateDone, Result: strings.Repeat("d", 500)})
	})); err != nil {
		t.Fatal(err)
	}
	reader := New(rdb, wire.MustNames(prefix), time.Minute, nil)
	t.Cleanup(func() { _ = reader.Close(context.Background()) })
	rec, err := reader.Get(context.Background(), "chosen-c")
	if err != nil || rec.Result != fill {
		t.Fatalf("chosen-c: %.40q (%d bytes), %v; want its result of %d bytes", rec.Result, len(rec.Result), err, len(fill))
	}
}
