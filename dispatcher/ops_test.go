package dispatcher_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/connector-go/connector/internal/wire"
	"github.com/connector-go/connector/job"
	"github.com/nats-io/nats.go"
)

// deadLetter puts a dead letter of a new job in the dead-letter stream and
// returns the job's id.
func (e *genv) deadLetter(n int) string { return e.lettersOf(n, 1) }

// lettersOf puts count dead letters of one new job (Bulk{N: n}) in the
// dead-letter stream and returns the job's id.
func (e *genv) lettersOf(n, count int) string {
	e.t.Helper()
	ctx := context.Background()
	env := &wire.Envelope{ID: wire.NewID(), Name: Bulk{}.JobName(), Args: []byte{0x81, 0xa1, 'n', byte(n)}}
	data, err := wire.EncodeEnvelope(env)
	if err != nil {
		e.t.Fatal(err)
	}
	for i := range count {
		letter, err := wire.Marshal(&wire.DeadLetter{V: 1, Reason: wire.ReasonError, Error: "boom", Attempts: 1,
			JobID: env.ID, JobName: env.Name, Subject: e.names.JobsSubject(job.DefaultChannel, 1), StreamSeq: uint64(10 + i),
			DiedAt: time.Now().UnixMilli(), Data: data})
		if err != nil {
			e.t.Fatal(err)
		}
		m := nats.NewMsg(e.names.DeadJobSubject(env.ID))
		m.Data = letter
		if _, err := e.js.PublishMsg(ctx, m); err != nil {
			e.t.Fatal(err)
		}
	}
	return env.ID
}

// Requeue takes a job id: an id that is a subject wildcard is refused
// (job.ErrNotFound), not taken to requeue whichever job died last
// ("connector jobs requeue '*'" printed "requeued *"). So are Cancel's
// and Job's.
func TestRequeueRefusesAWildcard(t *testing.T) {
	e := newGenv(t)
	ctx := context.Background()
	ids := []string{e.deadLetter(0), e.deadLetter(1)}
	for _, id := range []string{"*", ">", "a.b", ""} {
		if err := e.d.Requeue(ctx, id); !errors.Is(err, job.ErrNotFound) {
			t.Errorf("Requeue(%q) = %v, want job.ErrNotFound", id, err)
		}
		if err := e.d.Cancel(ctx, id); !errors.Is(err, job.ErrNotFound) {
			t.Errorf("Cancel(%q) = %v, want job.ErrNotFound", id, err)
		}
		if _, err := e.d.Job(ctx, id); !errors.Is(err, job.ErrNotFound) {
			t.Errorf("Job(%q) = %v, want job.ErrNotFound", id, err)
		}
	}
	dead, err := e.d.DeadLetters(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(dead) != 2 {
		t.Fatalf("dead letters left: %d of %v, want both", len(dead), ids)
	}
	if err := e.d.Requeue(ctx, ids[0]); err != nil {
		t.Fatal(err)
	}
}
