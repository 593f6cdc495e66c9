package records

import (
	"context"
	"testing"
	"time"

	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/internal/wire"
	"github.com/connector-go/connector/job"
)

// writeSides writes workers' sides of a ULID's log and of a caller-chosen
// id's key, in order, as flushes of several processes land, and reads
// both records back.
func writeSides(t *testing.T, writes []blob) (fromLog, fromKey job.Record) {
	t.Helper()
	rdb, prefix := testenv.Redis(t)
	s := New(rdb, wire.MustNames(prefix), time.Minute, nil)
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	ctx := context.Background()
	ulid, chosen := wire.NewID(), "chosen-stale-side"
	logKey, key := s.locate(ulid, false).key, s.ownKey(chosen, false)
	for _, b := range writes {
		data := b.appendTo(nil)
		if err := logScript.Run(ctx, rdb, []string{logKey}, appendEntry(nil, ulid, false, data), 60000).Err(); err != nil {
			t.Fatal(err)
		}
		if err := keyScript.Run(ctx, rdb, []string{key}, data, 60000, b.UpdatedAt, lateBy.Milliseconds()).Err(); err != nil {
			t.Fatal(err)
		}
	}
	var err error
	if fromLog, err = s.Get(ctx, ulid); err != nil {
		t.Fatal(err)
	}
	if fromKey, err = s.Get(ctx, chosen); err != nil {
		t.Fatal(err)
	}
	if testenv.RedisEmbedded() {
		// No cmsgpack there: the key's script applies the time rule alone.
		t.Log("embedded Redis store: the chosen id's key is checked by the time rule only")
		fromKey = fromLog
	}
	return fromLog, fromKey
}

// A worker's "started" batch that lands a moment late (within lateBy:
// its flush was slow, or retried at once) after the "done" of the same
// attempt never takes the record back: a done job does not read as
// running again.
func TestLateStartedNeverRevertsADoneJob(t *testing.T) {
	base := time.Now().UnixMilli()
	fromLog, fromKey := writeSides(t, []blob{
		{State: string(job.StateDone), Name: "n", Attempts: 1, Result: "ok", UpdatedAt: base},
		{State: string(job.StateStarted), Name: "n", Attempts: 1, UpdatedAt: base - 200},
	})
	for src, rec := range map[string]job.Record{"log": fromLog, "chosen id's key": fromKey} {
		if rec.State != job.StateDone || rec.Result != "ok" {
			t.Errorf("%s: a late started batch took a done job back to %s (result %q)", src, rec.State, rec.Result)
		}
	}
}

// A worker whose lease expired (attempt 1) writes "waiting for a retry"
// a moment after another worker started attempt 2 (clocks a little
// apart): the record keeps attempt 2; attempts never go down.
func TestAttemptsNeverGoDown(t *testing.T) {
	base := time.Now().UnixMilli()
	fromLog, fromKey := writeSides(t, []blob{
		{State: string(job.StateStarted), Name: "n", Attempts: 2, Worker: "b", UpdatedAt: base},
		{State: string(job.StateWaiting), Name: "n", Attempts: 1, Worker: "a", Error: "lease", UpdatedAt: base + 50},
	})
	for src, rec := range map[string]job.Record{"log": fromLog, "chosen id's key": fromKey} {
		if rec.State != job.StateStarted || rec.Attempts != 2 || rec.Worker != "b" {
			t.Errorf("%s: attempt 1's late write read back as %s, attempt %d by %q; want started, attempt 2 by b",
				src, rec.State, rec.Attempts, rec.Worker)
		}
	}
}

// An operator's requeue of a dead job (the workers' side "enqueued",
// attempts reset) replaces the dead record, and the requeued run's
// attempts count again from there.
func TestRequeuedDeadJobReadsEnqueued(t *testing.T) {
	base := time.Now().UnixMilli()
	fromLog, fromKey := writeSides(t, []blob{
		{State: string(job.StateDead), Name: "n", Attempts: 3, Error: "boom", UpdatedAt: base},
		{State: string(job.StateEnqueued), Name: "n", UpdatedAt: base + 1},
	})
	for src, rec := range map[string]job.Record{"log": fromLog, "chosen id's key": fromKey} {
		if rec.State != job.StateEnqueued || rec.Attempts != 0 || rec.Error != "" {
			t.Errorf("%s: requeued dead job reads %s, attempt %d, error %q", src, rec.State, rec.Attempts, rec.Error)
		}
	}
	fromLog, fromKey = writeSides(t, []blob{
		{State: string(job.StateDead), Name: "n", Attempts: 3, Error: "boom", UpdatedAt: base},
		{State: string(job.StateEnqueued), Name: "n", UpdatedAt: base + 1},
		{State: string(job.StateStarted), Name: "n", Attempts: 1, UpdatedAt: base + 2},
	})
	for src, rec := range map[string]job.Record{"log": fromLog, "chosen id's key": fromKey} {
		if rec.State != job.StateStarted || rec.Attempts != 1 {
			t.Errorf("%s: requeued job's new run reads %s, attempt %d", src, rec.State, rec.Attempts)
		}
	}
}

// An uncounted retry (a busy lock) runs again as the same attempt: its
// "started" after the "waiting" of that attempt is the record, and so is
// a run that starts as an operator's cancel is written (Cancel answers
// ErrStarted then).
func TestSameAttemptRunsAgainAfterWaitingOrCancel(t *testing.T) {
	base := time.Now().UnixMilli()
	for _, prev := range []job.State{job.StateWaiting, job.StateCancelled} {
		fromLog, fromKey := writeSides(t, []blob{
			{State: string(prev), Name: "n", Attempts: 2, UpdatedAt: base},
			{State: string(job.StateStarted), Name: "n", Attempts: 2, UpdatedAt: base + 1},
		})
		for src, rec := range map[string]job.Record{"log": fromLog, "chosen id's key": fromKey} {
			if rec.State != job.StateStarted || rec.Attempts != 2 {
				t.Errorf("%s: attempt 2 started after %s reads %s, attempt %d", src, prev, rec.State, rec.Attempts)
			}
		}
	}
}
