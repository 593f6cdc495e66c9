package records

import (
	"context"
	"testing"
	"time"

	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/internal/wire"
	"github.com/connector-go/connector/job"
)

// A job due further away than the records' retention keeps its record
// until its ETA plus the retention: the log of its id's minute (shared with
// other jobs, whose later writes do not shorten it), and a caller-chosen
// id's own keys, both sides (an operation's write of the workers' side,
// such as a cancel, lives as long as the producer's side it goes with).
func TestRecordOfAFarETAOutlivesTheRetention(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	const ttl = time.Hour
	s := New(rdb, wire.MustNames(prefix), ttl, nil)
	ctx := context.Background()
	defer s.Close(ctx)
	eta := time.Now().Add(30 * 24 * time.Hour)
	least := time.Until(eta) + ttl - time.Minute // (the test's own time)

	far, chosen := wire.NewID(), "order-42-reminder"
	for _, id := range []string{far, chosen} {
		s.Record(&Update{ID: id, Queued: job.StateWaiting, Name: "remind", EnqueuedAt: time.Now(), ETA: eta, Seq: 7})
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	// Another job of the same log, due now, written after it.
	other := far[:10] + wire.NewID()[10:]
	for s.locate(other, false).key != s.locate(far, false).key {
		other = far[:10] + wire.NewID()[10:]
	}
	s.Record(&Update{ID: other, Queued: job.StateEnqueued, Name: "now"})
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Set(ctx, Update{ID: chosen, State: job.StateCancelled}); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{s.locate(far, false).key, s.ownKey(chosen, true), s.ownKey(chosen, false)} {
		if got := rdb.PTTL(ctx, key).Val(); got < least {
			t.Errorf("%s expires in %s; want at least %s (ETA + retention)", key, got, least)
		}
	}
	for _, id := range []string{far, chosen} {
		if _, err := s.Get(ctx, id); err != nil {
			t.Fatalf("%s: %v", id, err)
		}
	}
	// A job due now keeps the retention as before.
	now := "order-43"
	s.Record(&Update{ID: now, Queued: job.StateEnqueued, Name: "now"})
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if got := rdb.PTTL(ctx, s.ownKey(now, true)).Val(); got <= 0 || got > ttl {
		t.Fatalf("a job due now: its record expires in %s; want the retention (%s)", got, ttl)
	}
}
