package worker_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/job"
	"github.com/connector-go/connector/worker"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Bulky is a job whose args are as large as the caller makes them.
type Bulky struct {
	Blob string `msgpack:"blob"`
}

func (Bulky) JobName() string { return "test.bulky" }

// A job the dispatcher accepts (its message within 256 bytes of the 1 MiB
// limit, and of the test server's max_payload) that fails for good is
// dead-lettered like any other, though its message plus why it died is
// over max_payload: the message goes to the dead-letter stream on its own,
// and the letter names it (body_seq). Listed, it reads as any letter; a
// requeue puts the whole job back and removes both. Before, the letter
// was refused for ever: the job came back every 5 s and its handler ran
// again, up to its max retries, then its record stayed "enqueued".
func TestLargeFailedJobIsDeadLettered(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	var runs atomic.Int32
	reg := worker.NewRegistry()
	worker.MustRegister(reg, func(ctx context.Context, j *job.Job[Bulky]) (string, error) {
		if j.Args.Blob == "" {
			return "probe", nil
		}
		if runs.Add(1) == 1 {
			return "", &permanentErr{code: 413}
		}
		return "done after the requeue", nil
	})

	probe, id := enqueueLarge(t, e)
	e.start(reg, worker.WithConcurrency(1))
	e.waitState(probe, job.StateDone, 10*time.Second)
	testenv.Eventually(t, 10*time.Second, func() bool { return runs.Load() >= 1 }, "the large job run")
	e.waitState(id, job.StateDead, 20*time.Second)
	dl := findDead(t, e, id)
	if dl.BodySeq == 0 || len(dl.Data) < 1<<19 {
		t.Fatalf("the large job's letter: body at %d, %d bytes of message", dl.BodySeq, len(dl.Data))
	}
	if n := runs.Load(); n != 1 {
		t.Fatalf("the handler ran %d times for a permanent error", n)
	}
	if err := e.d.Requeue(ctx, id); err != nil {
		t.Fatal(err)
	}
	e.waitState(id, job.StateDone, 20*time.Second)
	dead, err := e.js.Stream(ctx, e.names().DeadStream())
	if err != nil {
		t.Fatal(err)
	}
	for _, seq := range []uint64{dl.Seq, dl.BodySeq} {
		if _, err := dead.GetMsg(ctx, seq); err == nil {
			t.Errorf("dead-letter stream message %d left after the requeue", seq)
		}
	}
}

// enqueueLarge enqueues a probe (Bulky without a blob), reads the size of
// its message, then a Bulky job whose message is 256 bytes under the 1 MiB
// limit (the test server's max_payload). It returns both ids.
func enqueueLarge(t *testing.T, e *env) (probe, id string) {
	t.Helper()
	ctx := context.Background()
	probe, err := e.d.Enqueue(ctx, Bulky{})
	if err != nil {
		t.Fatal(err)
	}
	s, err := e.js.Stream(ctx, e.names().JobsStream())
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := s.GetMsg(ctx, info.State.LastSeq)
	if err != nil {
		t.Fatal(err)
	}
	overhead := len(raw.Data)
	for k, vs := range raw.Header {
		for _, v := range vs {
			overhead += len(k) + len(v) + 4 // "k: v\r\n"
		}
	}
	overhead += 16 // NATS/1.0 line, closing CRLF, a longer msgpack string length
	id, err = e.d.Enqueue(ctx, Bulky{Blob: strings.Repeat("x", (1<<20)-256-overhead)})
	if err != nil {
		t.Fatalf("enqueue of a job under the 1 MiB limit: %v", err)
	}
	return probe, id
}

// letterRefusedOnce refuses the first letter published without the
// message (the one that names a message kept apart), as a dead-letter
// stream briefly unavailable.
type letterRefusedOnce struct {
	jetstream.JetStream
	prefix  string
	refused atomic.Int32
}

func (j *letterRefusedOnce) PublishMsg(ctx context.Context, m *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	if strings.HasPrefix(m.Subject, j.prefix) && len(m.Data) < 1<<16 && j.refused.Add(1) == 1 {
		return nil, errors.New("stream unavailable")
	}
	return j.JetStream.PublishMsg(ctx, m, opts...)
}

// A large job whose letter is refused after its message was kept apart
// dies again on its redelivery: its message is kept once, not once per
// death (the first copy named by no letter, kept for ever).
func TestLargeJobDyingTwiceKeepsItsMessageOnce(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	reg := worker.NewRegistry()
	worker.MustRegister(reg, func(ctx context.Context, j *job.Job[Bulky]) (string, error) {
		if j.Args.Blob == "" {
			return "probe", nil
		}
		return "", &permanentErr{code: 413}
	})
	probe, id := enqueueLarge(t, e)
	ljs := &letterRefusedOnce{JetStream: e.js, prefix: e.names().DeadJobSubject("")}
	e.runOn(ljs, reg)
	e.waitState(probe, job.StateDone, 10*time.Second)
	e.waitState(id, job.StateDead, 30*time.Second)
	if ljs.refused.Load() < 1 {
		t.Fatal("no letter refused: the test proves nothing")
	}
	dl := findDead(t, e, id)
	if dl.BodySeq == 0 || len(dl.Data) < 1<<19 {
		t.Fatalf("the large job's letter: body at %d, %d bytes of message", dl.BodySeq, len(dl.Data))
	}
	dead, err := e.js.Stream(ctx, e.names().DeadStream())
	if err != nil {
		t.Fatal(err)
	}
	info, err := dead.Info(ctx, jetstream.WithSubjectFilter(e.names().DeadWildcard()))
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 2 {
		t.Fatalf("%d messages in the dead-letter stream, want 2 (the letter and the message it names once): %v", info.State.Msgs, info.State.Subjects)
	}
}
