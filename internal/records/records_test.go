package records

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/internal/wire"
	"github.com/connector-go/connector/job"
	"github.com/redis/go-redis/v9"
	"github.com/vmihailenco/msgpack/v5"
)

func TestBlobRoundTrip(t *testing.T) {
	p, mr := 3, 0
	in := blob{State: "done", Name: "n", Channel: "root.x", Priority: &p, Attempts: 2, MaxRetries: &mr,
		Desc: "d", Result: "r", Error: "e", ErrorType: "t", Stack: "s", Worker: "w", Identity: "i", Graph: "g",
		EnqueuedAt: 1, ETA: 2, StartedAt: 3, EndedAt: 4, UpdatedAt: 5, Seq: 6}
	data := in.appendTo(nil)
	var out blob
	if err := out.decode(data); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(in, out) {
		t.Fatalf("round trip:\n%+v\n%+v", in, out)
	}
	// The msgpack library reads the same map (other languages' readers).
	var lib map[string]any
	if err := msgpack.Unmarshal(data, &lib); err != nil || lib["st"] != "done" || len(lib) != 20 {
		t.Fatalf("msgpack library reads %v, %v", lib, err)
	}
	if *out.Priority != 3 || *out.MaxRetries != 0 || out.Seq != 6 || out.Graph != "g" || out.UpdatedAt != 5 {
		t.Fatalf("%+v", out)
	}
}

// A producer's write that lands after a worker's never hides the worker's
// newer state; of a side's updates in one flush window, the last wins.
func TestSidesMergeWorkerWins(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	s := New(rdb, wire.MustNames(prefix), time.Minute, nil)
	ctx := context.Background()
	started := time.Now()
	s.Record(&Update{ID: "j1", State: job.StateStarted, Name: "x", Attempts: 1, StartedAt: started})
	s.Record(&Update{ID: "j1", State: job.StateDone, Name: "x", Attempts: 1, StartedAt: started, Result: "ok"})
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	s.Record(&Update{ID: "j1", Queued: job.StateEnqueued, Channel: "root.shop", Seq: 9}) // late producer write
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	rec, err := s.Get(ctx, "j1")
	if err != nil {
		t.Fatal(err)
	}
	if rec.State != job.StateDone || rec.Result != "ok" || rec.Channel != "root.shop" || rec.Seq != 9 || rec.Attempts != 1 || rec.StartedAt.IsZero() {
		t.Fatalf("%+v", rec)
	}
	if ttl := rdb.PTTL(ctx, s.locate("j1", false).key).Val(); ttl <= 0 || ttl > time.Minute {
		t.Fatalf("ttl %s", ttl)
	}
}

// Records of dispatcher-made ids (ULIDs) go to a few logs per minute, not
// a key per job: 2,000 jobs, both sides, at most 2 x 16 keys (the run may
// straddle a minute), all readable and all expiring.
func TestULIDRecordsShareLogs(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	s := New(rdb, wire.MustNames(prefix), time.Minute, nil)
	ctx := context.Background()
	ids := make([]string, 2000)
	for i := range ids {
		ids[i] = wire.NewID()
		s.Record(&Update{ID: ids[i], Queued: job.StateEnqueued, Name: "n", Seq: uint64(i + 1)})
		s.Record(&Update{ID: ids[i], State: job.StateStarted, Attempts: 1})
		if i%2 == 0 {
			// a flush between the updates of one side: the later entry wins
			if err := s.Flush(ctx); err != nil {
				t.Fatal(err)
			}
		}
		s.Record(&Update{ID: ids[i], State: job.StateDone, Result: fmt.Sprint("r", i), Attempts: 1})
	}
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	keys, err := rdb.Keys(ctx, prefix+":*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) == 0 || len(keys) > 2*shards {
		t.Fatalf("%d keys for %d records", len(keys), len(ids))
	}
	for _, k := range keys {
		if !strings.HasPrefix(k, prefix+":jlog:") {
			t.Fatalf("unexpected key %s", k)
		}
		if ttl := rdb.PTTL(ctx, k).Val(); ttl <= 0 || ttl > time.Minute {
			t.Fatalf("key %s ttl %s", k, ttl)
		}
	}
	for i, id := range ids {
		rec, err := s.Get(ctx, id)
		if err != nil || rec.State != job.StateDone || rec.Result != fmt.Sprint("r", i) || rec.Seq != uint64(i+1) || rec.Name != "n" {
			t.Fatalf("record %s: %+v %v", id, rec, err)
		}
	}
	if _, err := s.Get(ctx, wire.NewID()); !errors.Is(err, job.ErrNotFound) {
		t.Fatalf("unknown id: %v", err)
	}
	// Set (operations) appends the merged workers' side: it wins over the
	// earlier entries and keeps what it does not change.
	if err := s.Set(ctx, Update{ID: ids[7], State: job.StateCancelled}); err != nil {
		t.Fatal(err)
	}
	if rec, err := s.Get(ctx, ids[7]); err != nil || rec.State != job.StateCancelled || rec.Result != "r7" || rec.Seq != 8 {
		t.Fatalf("after Set: %+v %v", rec, err)
	}
}

// A log that is not a sequence of entries is an error, never a wrong record.
func TestScanLogMalformed(t *testing.T) {
	id := wire.NewID()
	good := appendEntry(nil, id, true, []byte{0x80})
	good = appendEntry(good, id, false, []byte{0x81, 0xa1, 'a', 1})
	w, q, err := scanLog(good, id)
	if err != nil || len(w) != 4 || len(q) != 1 {
		t.Fatalf("good log: %x %x %v", w, q, err)
	}
	for name, bad := range map[string][]byte{
		"truncated entry":  good[:len(good)-1],
		"truncated header": good[:10],
		"unknown side":     append([]byte{'x'}, good[1:]...),
	} {
		if _, _, err := scanLog(bad, id); !errors.Is(err, errBadLog) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestULIDTime(t *testing.T) {
	before := time.Now().UnixMilli()
	id := wire.NewID()
	ms, ok := ulidTime(id)
	if !ok || int64(ms) < before || int64(ms) > time.Now().UnixMilli() {
		t.Fatalf("ulidTime(%s) = %d, %v", id, ms, ok)
	}
	for _, bad := range []string{"", "order-7", "8ZZZZZZZZZZZZZZZZZZZZZZZZZ", "01J0000000000000000000000I", "01j0000000000000000000000a"} {
		if _, ok := ulidTime(bad); ok {
			t.Fatalf("%q taken for a ULID", bad)
		}
	}
}

// Another process's record may not have reached Redis yet (producers
// batch records for 20 ms): Get waits for the record of a job whose id is
// less than a second old, and answers at once for an older id or an id
// that is not a ULID.
func TestGetWaitsForAFreshJobsRecord(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	names := wire.MustNames(prefix)
	ctx := context.Background()
	producer := New(rdb, names, time.Minute, nil)
	defer producer.Close(ctx)
	reader := New(rdb, names, time.Minute, nil)
	defer reader.Close(ctx)
	var misses []string

	// The producer records the job only once the reader has looked and
	// found nothing.
	id := wire.NewID()
	reader.missed = func(miss string) {
		if len(misses) == 0 {
			producer.Record(&Update{ID: id, Queued: job.StateEnqueued, Name: "n"})
			if err := producer.Flush(ctx); err != nil {
				t.Error(err)
			}
		}
		misses = append(misses, miss)
	}
	rec, err := reader.Get(ctx, id)
	if err != nil || rec.State != job.StateEnqueued || rec.Name != "n" {
		t.Fatalf("Get of a fresh job recorded late: %+v, %v", rec, err)
	}
	if len(misses) == 0 {
		t.Fatal("the record was there at the first read: the test proves nothing")
	}

	// A fresh id with no record: not found, after waiting (at most 1 s).
	misses = nil
	start := time.Now()
	if _, err := reader.Get(ctx, wire.NewID()); !errors.Is(err, job.ErrNotFound) {
		t.Fatalf("fresh unknown id: %v", err)
	}
	if len(misses) == 0 || time.Since(start) > 5*time.Second {
		t.Fatalf("fresh unknown id: %d misses in %s; want some, within the second", len(misses), time.Since(start))
	}

	// An old ULID and a caller's id: not found at once.
	misses = nil
	for _, id := range []string{"01ARZ3NDEKTSV4RRFFQ69G5FAV", "order-7"} {
		if _, err := reader.Get(ctx, id); !errors.Is(err, job.ErrNotFound) {
			t.Fatalf("%s: %v", id, err)
		}
	}
	if len(misses) != 0 {
		t.Fatalf("Get waited for ids that cannot be in flight: %v", misses)
	}
}

// failingPipelines makes every pipeline of c fail while down is set: a
// process whose Redis is unreachable for a while.
type failingPipelines struct{ down *atomic.Bool }

func (failingPipelines) DialHook(next redis.DialHook) redis.DialHook { return next }
func (failingPipelines) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return next
}
func (h failingPipelines) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if h.down.Load() {
			return errors.New("dial tcp: connection refused")
		}
		return next(ctx, cmds)
	}
}

// Two workers write one job's record: the first's "waiting for a retry"
// batch fails to flush and lands (retried) after the second worker's
// "done" of the next attempt. The record stays done: a batch that lands
// late (its updates older than the side's by more than lateBy) does not
// take a record back to an older state.
func TestLateBatchFromAnotherProcessNeverRevertsARecord(t *testing.T) {
	first, second, down := lateBatchStores(t)
	ctx := context.Background()
	for _, id := range []string{wire.NewID()} {
		down.Store(true)
		first.Record(&Update{ID: id, State: job.StateWaiting, Name: "n", Attempts: 1, Error: "timeout"})
		if err := first.Flush(ctx); err == nil {
			t.Fatal("flush through a failing Redis succeeded")
		}
		// the other process's updates come later than lateBy (update
		// times are in milliseconds; lateBy is shortened for the test)
		for at := time.Now().UnixMilli(); time.Now().UnixMilli() <= at+lateBy.Milliseconds(); {
			time.Sleep(100 * time.Microsecond)
		}
		second.Record(&Update{ID: id, State: job.StateStarted, Name: "n", Attempts: 2})
		second.Record(&Update{ID: id, State: job.StateDone, Name: "n", Attempts: 2, Result: "ok"})
		if err := second.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		down.Store(false)
		if err := first.Flush(ctx); err != nil { // the retried batch lands now
			t.Fatal(err)
		}
		rec, err := second.Get(ctx, id)
		if err != nil || rec.State != job.StateDone || rec.Attempts != 2 || rec.Result != "ok" || rec.Error != "" {
			t.Fatalf("%s after a late batch: %+v, %v; want done, attempt 2", id, rec, err)
		}
	}
	if err := first.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

// An operation (Set) replaces the workers' side it read, even when that
// side was written by a host whose clock is ahead of this one's.
func TestSetWinsOverASideFromAClockAhead(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	s := New(rdb, wire.MustNames(prefix), time.Minute, nil)
	ctx := context.Background()
	defer s.Close(ctx)
	id := wire.NewID()
	ahead := blob{State: string(job.StateDead), Name: "n", Attempts: 3, Error: "boom",
		UpdatedAt: time.Now().Add(10 * time.Second).UnixMilli()}
	if err := rdb.Append(ctx, s.locate(id, false).key, string(appendEntry(nil, id, false, ahead.appendTo(nil)))).Err(); err != nil {
		t.Fatal(err)
	}
	if err := s.Set(ctx, Update{ID: id, State: job.StateEnqueued, ClearError: true, ResetAttempts: true}); err != nil {
		t.Fatal(err)
	}
	rec, err := s.Get(ctx, id)
	if err != nil || rec.State != job.StateEnqueued || rec.Attempts != 0 || rec.Error != "" || rec.Name != "n" {
		t.Fatalf("after Set: %+v, %v; want enqueued, attempts 0, no error", rec, err)
	}
}

// duringFailedFlush fails every pipeline (Redis unreachable), running the
// function of the contexts that carry one first (inside the flush, after
// it took the pending updates).
type duringFailedFlush struct{}

type flushHookKey struct{}

func (duringFailedFlush) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (duringFailedFlush) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (duringFailedFlush) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if f, ok := ctx.Value(flushHookKey{}).(func()); ok {
			f()
		}
		return errors.New("dial tcp: connection refused")
	}
}

// While Redis is unreachable the store holds at most MaxPending updates:
// updates recorded during each failed flush replace older ones, and the
// memory they take stays that of the updates held (no bytes of updates
// dropped are kept).
func TestFailedFlushesKeepMemoryBounded(t *testing.T) {
	_, prefix := testenv.Redis(t)
	opt, err := redis.ParseURL(testenv.RedisURL(t))
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(opt)
	c.AddHook(duringFailedFlush{})
	defer c.Close()
	s := New(c, wire.MustNames(prefix), time.Minute, nil)
	// (the test flushes, not the store's loop)
	s.once.Do(func() { close(s.done) })
	<-s.closed
	id := wire.NewID()
	for i := 0; i < MaxPending; i++ {
		s.Record(&Update{ID: id, State: job.StateStarted, Attempts: 1})
	}
	big := strings.Repeat("x", 4096)
	ctx := context.WithValue(context.Background(), flushHookKey{}, func() {
		for i := 0; i < 2000; i++ {
			s.Record(&Update{ID: id, State: job.StateDone, Attempts: 1, Error: big})
		}
	})
	for i := 0; i < 4; i++ {
		if err := s.Flush(ctx); err == nil {
			t.Fatal("flush through a failing Redis succeeded")
		}
	}
	s.mu.Lock()
	held, live := len(s.ents), 0
	for _, e := range s.ents {
		live += e.end - e.off
	}
	size := len(s.buf)
	s.mu.Unlock()
	if held > MaxPending {
		t.Fatalf("%d updates held, over %d", held, MaxPending)
	}
	if size > live+live/2 {
		t.Fatalf("%d bytes buffered for %d updates of %d bytes", size, held, live)
	}
}

// lateBatchStores is two processes' stores of one prefix, with lateBy
// at 3 ms: first's pipelines fail while down is set (its batch is then
// retried, and lands late).
func lateBatchStores(t *testing.T) (first, second *Store, down *atomic.Bool) {
	t.Helper()
	saved := lateBy
	lateBy = 3 * time.Millisecond
	t.Cleanup(func() { lateBy = saved })
	rdb, prefix := testenv.Redis(t)
	names := wire.MustNames(prefix)
	opt, err := redis.ParseURL(testenv.RedisURL(t))
	if err != nil {
		t.Fatal(err)
	}
	slow := redis.NewClient(opt)
	down = new(atomic.Bool)
	slow.AddHook(failingPipelines{down})
	t.Cleanup(func() { _ = slow.Close() })
	first = New(slow, names, time.Minute, nil)
	second = New(rdb, names, time.Minute, nil)
	t.Cleanup(func() { _ = second.Close(context.Background()) })
	return first, second, down
}
