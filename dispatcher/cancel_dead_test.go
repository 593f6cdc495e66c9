package dispatcher_test

import (
	"context"
	"testing"
	"time"

	"github.com/connector-go/connector/internal/records"
	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/internal/wire"
	"github.com/connector-go/connector/job"
)

// A dead job cancelled is cancelled for good: a copy of its message still
// in the jobs stream (a worker whose Term after the dead letter failed
// leaves it to come back; a requeue racing the Cancel publishes one) is
// dropped by the worker that receives it, as the copy of any cancelled
// job is. Before, Cancel of a dead job set no tombstone, and that copy
// ran the cancelled job.
func TestCancelledDeadJobDoesNotRunFromALingeringCopy(t *testing.T) {
	e := newGenv(t)
	ctx := context.Background()
	env := &wire.Envelope{ID: wire.NewID(), Name: GraphStep{}.JobName(), Args: []byte{0x81, 0xa4, 'n', 'a', 'm', 'e', 0xa4, 'd', 'e', 'a', 'd'}}
	rs := records.New(e.rdb, e.names, 0, nil)
	rs.Record(&records.Update{ID: env.ID, Queued: job.StateEnqueued, Name: env.Name, Channel: job.DefaultChannel})
	rs.Record(&records.Update{ID: env.ID, State: job.StateDead, Name: env.Name, Channel: job.DefaultChannel, Error: "boom"})
	if err := rs.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := e.d.Cancel(ctx, env.ID); err != nil {
		t.Fatal(err)
	}

	// The lingering copy, and after it a live job of the same channel.
	data, err := wire.EncodeEnvelope(env)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.js.Publish(ctx, e.names.JobsSubject(job.DefaultChannel, 1), data); err != nil {
		t.Fatal(err)
	}
	live, err := e.d.Enqueue(ctx, GraphStep{Name: "live"})
	if err != nil {
		t.Fatal(err)
	}
	e.start()
	e.waitState(live, job.StateDone)
	testenv.Eventually(t, 15*time.Second, func() bool { return e.jobsQueued() == 0 }, "the jobs stream emptied")
	if n := e.runs("dead"); n != 0 {
		t.Fatalf("the cancelled dead job ran %d times from a copy of its message", n)
	}
	if rec, err := e.d.Job(ctx, env.ID); err != nil || rec.State != job.StateCancelled {
		t.Fatalf("record of the cancelled dead job: %+v, %v", rec, err)
	}
}
