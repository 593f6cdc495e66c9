package dispatcher_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/connector-go/connector/dispatcher"
	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/internal/wire"
	"github.com/connector-go/connector/job"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
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

// An operation on a prefix whose streams do not exist (a prefix other
// than the workers', streams not provisioned) says which stream it missed,
// and still matches jetstream.ErrStreamNotFound.
func TestOperationsNameTheMissingStream(t *testing.T) {
	_, _, js := testenv.JetStream(t)
	rdb, prefix := testenv.Redis(t)
	names := wire.MustNames(prefix)
	d, err := dispatcher.New(js, dispatcher.WithPrefix(prefix), dispatcher.WithRedis(rdb))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close(context.Background())
	ctx := context.Background()
	_, statsErr := d.Stats(ctx)
	_, deadErr := d.DeadLetters(ctx, 10)
	for _, c := range []struct {
		op     string
		err    error
		stream string
	}{
		{"Stats", statsErr, names.JobsStream()},
		{"DeadLetters", deadErr, names.DeadStream()},
		{"Requeue", d.Requeue(ctx, wire.NewID()), names.DeadStream()},
		{"Unschedule", d.Unschedule(ctx, "nightly"), names.JobsStream()},
	} {
		if !errors.Is(c.err, jetstream.ErrStreamNotFound) || !strings.Contains(fmt.Sprint(c.err), "stream "+c.stream+":") {
			t.Errorf("%s = %v, want jetstream.ErrStreamNotFound naming stream %s", c.op, c.err, c.stream)
		}
	}
}
