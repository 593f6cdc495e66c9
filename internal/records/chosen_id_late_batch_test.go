package records

import (
	"context"
	"testing"
	"time"

	"github.com/connector-go/connector/job"
)

// A job with a caller-chosen id (job.WithID) has keys of its own, not log
// entries: a batch that lands late (retried after a failed flush) must not
// take its record back either, on either side. Updates within lateBy of
// what the key holds still replace it (hosts' clocks a few ms apart).
func TestLateBatchNeverRevertsAChosenIDsRecord(t *testing.T) {
	first, second, down := lateBatchStores(t)
	ctx := context.Background()
	const id = "export-order-42"

	down.Store(true)
	first.Record(&Update{ID: id, State: job.StateWaiting, Name: "n", Attempts: 1, Error: "timeout"})
	first.Record(&Update{ID: id, Queued: job.StateWaiting, Name: "n", Channel: "root.old", Seq: 1})
	if err := first.Flush(ctx); err == nil {
		t.Fatal("flush through a failing Redis succeeded")
	}
	// the other process's updates come later than lateBy (update times
	// are in milliseconds; lateBy is shortened for the test)
	for at := time.Now().UnixMilli(); time.Now().UnixMilli() <= at+lateBy.Milliseconds(); {
		time.Sleep(100 * time.Microsecond)
	}
	second.Record(&Update{ID: id, State: job.StateDone, Name: "n", Attempts: 2, Result: "ok"})
	second.Record(&Update{ID: id, Queued: job.StateEnqueued, Name: "n", Channel: "root.new", Seq: 2})
	if err := second.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	down.Store(false)
	if err := first.Flush(ctx); err != nil { // the retried batch lands now
		t.Fatal(err)
	}
	rec, err := second.Get(ctx, id)
	if err != nil || rec.State != job.StateDone || rec.Attempts != 2 || rec.Result != "ok" || rec.Error != "" ||
		rec.Channel != "root.new" || rec.Seq != 2 {
		t.Fatalf("after a late batch: %+v, %v; want done, attempt 2, channel root.new, seq 2", rec, err)
	}

	// Within lateBy the later write wins, whatever its stamp: a record
	// written by a host whose clock is a moment ahead is still replaced.
	lateBy = time.Second
	ahead := blob{State: string(job.StateStarted), Name: "n", Attempts: 3,
		UpdatedAt: time.Now().Add(500 * time.Millisecond).UnixMilli()}
	if err := second.rdb.Set(ctx, second.ownKey(id, false), ahead.appendTo(nil), time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	second.Record(&Update{ID: id, State: job.StateDone, Name: "n", Attempts: 3, Result: "ok3"})
	if err := second.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if rec, err := second.Get(ctx, id); err != nil || rec.State != job.StateDone || rec.Result != "ok3" {
		t.Fatalf("an update within lateBy of a clock ahead: %+v, %v; want done", rec, err)
	}
	if err := first.Close(ctx); err != nil {
		t.Fatal(err)
	}
}
