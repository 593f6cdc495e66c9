package records

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/internal/wire"
	"github.com/connector-go/connector/job"
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
