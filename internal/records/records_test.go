package records

import (
	"context"
	"testing"
	"time"

	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/internal/wire"
	"github.com/connector-go/connector/job"
)

func TestBlobRoundTrip(t *testing.T) {
	p, mr := 3, 0
	in := blob{State: "done", Name: "n", Channel: "root.x", Priority: &p, Attempts: 2, MaxRetries: &mr,
		Desc: "d", Result: "r", Error: "e", ErrorType: "t", Stack: "s", Worker: "w", Identity: "i", Graph: "g",
		EnqueuedAt: 1, ETA: 2, StartedAt: 3, EndedAt: 4, UpdatedAt: 5, Seq: 6}
	data, err := wire.Marshal(&in)
	if err != nil {
		t.Fatal(err)
	}
	var out blob
	if err := wire.Unmarshal(data, &out); err != nil {
		t.Fatal(err)
	}
	if *out.Priority != 3 || *out.MaxRetries != 0 || out.Seq != 6 || out.Graph != "g" || out.UpdatedAt != 5 {
		t.Fatalf("%+v", out)
	}
}

// A producer's write that lands after a worker's never hides the worker's
// newer state; updates in one flush window merge.
func TestSidesMergeWorkerWins(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	s := New(rdb, wire.MustNames(prefix), time.Minute, nil)
	ctx := context.Background()
	s.Record(Update{ID: "j1", State: job.StateStarted, Name: "x", Attempts: 1, StartedAt: time.Now()})
	s.Record(Update{ID: "j1", State: job.StateDone, Result: "ok"})
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	s.Record(Update{ID: "j1", Queued: job.StateEnqueued, Channel: "root.shop", Seq: 9}) // late producer write
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
	if ttl := rdb.PTTL(ctx, s.Key("j1")).Val(); ttl <= 0 || ttl > time.Minute {
		t.Fatalf("ttl %s", ttl)
	}
}
