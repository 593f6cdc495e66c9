package worker_test

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/internal/wire"
	"github.com/connector-go/connector/job"
	"github.com/connector-go/connector/worker"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
)

// A job that dies on its last allowed attempt, whose dead letter cannot be
// stored at first, keeps the reason and the error it died of: the refused
// letter is no lost attempt (the worker did not die, its lease did not
// expire), so its letter must not read "max_retries: ... was lost".
func TestRefusedDeadLetterKeepsItsReason(t *testing.T) {
	e := newEnv(t)
	djs, _, id := refusedLetter(t, e, job.WithMaxRetries(1))
	djs.failing.Store(false)
	e.waitState(id, job.StateDead, 20*time.Second)
	dl := findDead(t, e, id)
	if dl.Reason != wire.ReasonError || !contains(dl.Error, "422") || dl.Attempts != 1 {
		t.Fatalf("letter: reason %q, error %q, attempts %d: want reason %q, the handler's error, attempt 1",
			dl.Reason, dl.Error, dl.Attempts, wire.ReasonError)
	}
}

// A job interrupted by the end of the shutdown grace goes back to the
// queue, whatever error its handler makes of its cancelled context: a
// client that reports the cancel in an error of its own (a gRPC status,
// an error formatted with %v) must not get a job dead-lettered by a
// deploy.
func TestInterruptedJobWithItsOwnErrorIsHandedBack(t *testing.T) {
	e := newEnv(t)
	var interrupt atomic.Bool
	interrupt.Store(true)
	started := make(chan struct{}, 1)
	reg := worker.NewRegistry()
	worker.MustRegister(reg, func(ctx context.Context, j *job.Job[Flaky]) (string, error) {
		if !interrupt.Load() {
			return "second run", nil
		}
		started <- struct{}{}
		<-ctx.Done()
		return "", fmt.Errorf("rpc error: code = Canceled desc = %v", ctx.Err()) // not wrapped
	})
	stop := e.start(reg, worker.WithShutdownGrace(200*time.Millisecond))
	id, err := e.d.Enqueue(context.Background(), Flaky{Mode: "slow"})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("job did not start")
	}
	stop()
	if rec, _ := e.d.Job(context.Background(), id); rec.State == job.StateDead {
		t.Fatalf("job interrupted by the shutdown was dead-lettered: %+v", rec)
	}
	interrupt.Store(false)
	e.start(reg)
	if rec := e.waitState(id, job.StateDone, 20*time.Second); rec.Result != "second run" {
		t.Fatalf("record %+v", rec)
	}
}

// A handler that ignores its cancelled context past the shutdown grace,
// and then fails, fails a job that was handed back already and lives on in
// its redelivery: it leaves no dead letter behind (requeued, the letter
// would run the job once more).
func TestStuckHandlerFailingAfterHandBackLeavesNoLetter(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	id := stuckThenFails(t, e, &permanentErr{code: 500})
	dls, err := e.d.DeadLetters(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, dl := range dls {
		if dl.JobID == id {
			t.Fatalf("job done elsewhere has a dead letter too: %+v", dl.DeadLetter)
		}
	}
}

// rejectErr is an error type whose Error reads its fields: a nil
// *rejectErr returned as an error (Go's typed-nil gotcha) panics in Error.
type rejectErr struct{ field string }

func (e *rejectErr) Error() string { return "rejected field " + e.field }

// A handler's error is the handler's: one whose Error method panics (a
// typed nil) fails its job, with a letter, and the worker goes on running
// jobs (it must not die of it, and crash one worker of the fleet after
// another on each redelivery).
func TestHandlerErrorWhoseErrorMethodPanics(t *testing.T) {
	e := newEnv(t)
	reg := worker.NewRegistry()
	worker.MustRegister(reg, func(ctx context.Context, j *job.Job[Flaky]) (string, error) {
		if j.Args.Mode == "typed-nil" {
			var re *rejectErr
			return "", re
		}
		return "fine", nil
	})
	e.start(reg)
	ctx := context.Background()
	bad, err := e.d.Enqueue(ctx, Flaky{Mode: "typed-nil"}, job.WithMaxRetries(1))
	if err != nil {
		t.Fatal(err)
	}
	e.waitState(bad, job.StateDead, 10*time.Second)
	findDead(t, e, bad)
	good, err := e.d.Enqueue(ctx, Flaky{Mode: "ok"})
	if err != nil {
		t.Fatal(err)
	}
	e.waitState(good, job.StateDone, 10*time.Second)
}

// Bad input in a limited and in a sequential channel is dead-lettered with
// its reason, and the channels go on running their jobs.
func TestMalformedMessagesInLimitedAndSequentialChannels(t *testing.T) {
	e := newEnv(t)
	reg := worker.NewRegistry()
	worker.MustRegister(reg, func(ctx context.Context, j *job.Job[ImportProduct]) (string, error) {
		return "ok", nil
	})
	e.start(reg, worker.WithChannels("root.lim:1,root.seq:1:sequential"))
	ctx := context.Background()
	n := e.names()
	for _, ch := range []string{"root.lim", "root.seq"} {
		if _, err := e.js.Publish(ctx, n.JobsSubject(ch, 1), []byte("\xc1 not msgpack")); err != nil {
			t.Fatal(err)
		}
		b, err := wire.Marshal(map[string]any{"v": 1, "id": "X" + ch[5:], "name": "test.import_product", "args": map[string]any{"external_id": 42}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.js.Publish(ctx, n.JobsSubject(ch, 1), b); err != nil {
			t.Fatal(err)
		}
		id, err := e.d.Enqueue(ctx, ImportProduct{ExternalID: "7"}, job.WithChannel(ch))
		if err != nil {
			t.Fatal(err)
		}
		e.waitState(id, job.StateDone, 15*time.Second)
	}
	testenv.Eventually(t, 10*time.Second, func() bool {
		dls, _ := e.d.DeadLetters(ctx, 0)
		return len(dls) == 4
	}, "4 dead letters")
	dls, _ := e.d.DeadLetters(ctx, 0)
	reasons := map[string]int{}
	for _, d := range dls {
		reasons[d.Reason]++
	}
	if reasons[wire.ReasonMalformed] != 2 || reasons[wire.ReasonBadArgs] != 2 {
		t.Fatalf("reasons %v", reasons)
	}
}

// A job handed back unrun before (its hand-back counted in Redis), that
// then runs, gets stuck past the shutdown grace (handed back: a counted
// attempt) and completes after that, keeps its hand-back count: its
// redelivery is attempt 2, not 3.
func TestStuckJobDoneAfterHandBackKeepsItsHandBackCount(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	release := make(chan struct{})
	var attempts []int
	var mu sync.Mutex
	s := newSteps(func(ctx context.Context, j *job.Job[Step], run int) (string, error) {
		mu.Lock()
		attempts = append(attempts, j.Attempt)
		mu.Unlock()
		if run == 1 {
			<-release // ignores ctx
		}
		return "ok", nil
	})
	w, err := worker.New(e.js, s.registry(), worker.WithPrefix(e.prefix), worker.WithRedis(e.rdb),
		worker.WithShutdownGrace(300*time.Millisecond), worker.WithLogger(zaptest.NewLogger(t, zaptest.Level(zap.ErrorLevel+1))))
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	id, err := e.d.Enqueue(ctx, Step{Key: "stuck"})
	if err != nil {
		t.Fatal(err)
	}
	// A hand-back, as a worker makes one: counted in Redis, then Nak'ed.
	n := e.names()
	cons, err := e.js.Consumer(ctx, n.JobsStream(), n.JobsConsumer("root", 1))
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var got int
	for m := range batch.Messages() {
		md, err := m.Metadata()
		if err != nil {
			t.Fatal(err)
		}
		e.rdb.Incr(ctx, n.RedisKey("handback", strconv.FormatUint(md.Sequence.Stream, 10)))
		if err := m.Nak(); err != nil {
			t.Fatal(err)
		}
		got++
	}
	if got != 1 {
		t.Fatalf("fetched %d messages", got)
	}
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(wctx) }()
	testenv.Eventually(t, 10*time.Second, func() bool { return s.count("stuck") == 1 }, "job running")
	cancel()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return")
	}
	close(release) // done now, after its hand-back
	testenv.Eventually(t, 10*time.Second, func() bool { return w.Running() == 0 }, "stuck handler returned")
	e.start(s.registry())
	e.waitState(id, job.StateDone, 10*time.Second)
	testenv.Eventually(t, 10*time.Second, func() bool { return s.count("stuck") == 2 }, "second run")
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(attempts) != "[1 2]" {
		t.Fatalf("attempts %v, want [1 2] (one hand-back, not counted; one interrupted run, counted)", attempts)
	}
}
