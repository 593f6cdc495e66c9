package worker_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/connector-go/connector/dispatcher"
	"github.com/connector-go/connector/internal/graphs"
	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/internal/wire"
	"github.com/connector-go/connector/job"
	"github.com/connector-go/connector/worker"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"
)

// Step is a job whose behaviour a test scripts per run.
type Step struct {
	Key string `msgpack:"key"`
	N   int    `msgpack:"n"`
}

func (Step) JobName() string { return "test.step" }

// JobLabels tells the log lines of the job its backend and model.
func (Step) JobLabels() (backend, model string) { return "shop-v1", "product" }

// steps scripts Step jobs: script(key, n, run) decides each run's outcome.
type steps struct {
	mu     sync.Mutex
	runs   map[string]int // key -> runs
	order  []string       // "key#n" of each run
	script func(ctx context.Context, j *job.Job[Step], run int) (string, error)
}

func newSteps(script func(ctx context.Context, j *job.Job[Step], run int) (string, error)) *steps {
	return &steps{runs: map[string]int{}, script: script}
}

// longSteps are steps that succeed at once, but for "long", which waits
// until release is closed.
func longSteps(release chan struct{}) *steps {
	return newSteps(func(ctx context.Context, j *job.Job[Step], run int) (string, error) {
		if j.Args.Key == "long" {
			<-release
		}
		return "ok", nil
	})
}

func (s *steps) handler(ctx context.Context, j *job.Job[Step]) (string, error) {
	s.mu.Lock()
	s.runs[j.Args.Key]++
	run := s.runs[j.Args.Key]
	s.order = append(s.order, fmt.Sprintf("%s#%d", j.Args.Key, run))
	s.mu.Unlock()
	return s.script(ctx, j, run)
}

func (s *steps) count(key string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.runs[key]
}

func (s *steps) seen() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.order, " ")
}

func (s *steps) registry() *worker.Registry {
	reg := worker.NewRegistry()
	worker.MustRegister(reg, s.handler)
	return reg
}

// Jobs a worker received but did not run (prefetched, then a graceful
// shutdown) go back without losing an attempt: with MaxRetries(1) they
// still run, once, on the next worker.
func TestHandedBackJobsKeepTheirAttempts(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	// Every job waits for release: the first one the worker starts holds
	// its only runner, the others wait in its queue (on the next worker,
	// release is closed: they run at once).
	release := make(chan struct{})
	var started atomic.Int32
	s := newSteps(func(ctx context.Context, j *job.Job[Step], run int) (string, error) {
		started.Add(1)
		<-release
		return "ok", nil
	})
	ids, stopA, stopped := tenJobsOneRunner(t, e, s)
	testenv.Eventually(t, 10*time.Second, func() bool { return started.Load() == 1 }, "first job started")
	cons, err := e.js.Consumer(ctx, wire.MustNames(e.prefix).JobsStream(), wire.MustNames(e.prefix).JobsConsumer("root", 1))
	if err != nil {
		t.Fatal(err)
	}
	pending := func() int {
		info, err := cons.Info(ctx)
		if err != nil {
			return -1
		}
		return info.NumAckPending
	}
	testenv.Eventually(t, 10*time.Second, func() bool { return pending() >= 5 }, "the worker holds several jobs it has not started")
	// Stop while the first job still runs: the held jobs go back unrun
	// (a runner that takes one now sees the shutdown and hands it back).
	stopA()
	close(release)
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
	e.start(s.registry())
	for _, id := range ids {
		rec := e.waitState(id, job.StateDone, 20*time.Second)
		if rec.Attempts != 1 {
			t.Fatalf("job %s: %d attempts, want 1 (hand-backs are not attempts)", id, rec.Attempts)
		}
	}
	for i := 0; i < 10; i++ {
		if n := s.count(fmt.Sprint(i)); n != 1 {
			t.Fatalf("job %d ran %d times", i, n)
		}
	}
}

// SIGTERM while a job still runs: the jobs the worker received and has not
// started go back at once (docs/architecture.md, failure model), not when
// the running job ends nor after their leases, and another worker runs them
// without losing an attempt while the stopping worker's job is still in its
// grace period.
func TestShutdownHandsBackQueuedJobsWhileAJobRuns(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	// The first job started holds the stopping worker's only runner until
	// release; every other run returns at once.
	release := make(chan struct{})
	var releaseOnce sync.Once
	unblock := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(unblock)
	var started atomic.Int32
	s := newSteps(func(ctx context.Context, j *job.Job[Step], run int) (string, error) {
		if started.Add(1) == 1 {
			<-release
		}
		return "ok", nil
	})
	ids, stopA, stopped := tenJobsOneRunner(t, e, s)
	testenv.Eventually(t, 10*time.Second, func() bool { return started.Load() == 1 }, "first job started")
	names := e.names()
	cons, err := e.js.Consumer(ctx, names.JobsStream(), names.JobsConsumer("root", 1))
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() bool {
		info, err := cons.Info(ctx)
		return err == nil && info.NumAckPending >= 5
	}, "the worker holds several jobs it has not started")
	first := strings.TrimSuffix(s.seen(), "#1")
	stopA() // its running job is not released: it is in its grace period
	e.start(s.registry())
	for i, id := range ids {
		if fmt.Sprint(i) == first {
			continue
		}
		rec := e.waitState(id, job.StateDone, 10*time.Second)
		if rec.Attempts != 1 {
			t.Fatalf("job %s: %d attempts, want 1 (hand-backs are not attempts)", id, rec.Attempts)
		}
	}
	select {
	case err := <-stopped:
		t.Fatalf("the stopping worker returned (%v) before its running job ended", err)
	default:
	}
	unblock()
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
	for i, id := range ids {
		if fmt.Sprint(i) == first {
			if rec := e.waitState(id, job.StateDone, 10*time.Second); rec.Attempts != 1 {
				t.Fatalf("running job %s: %d attempts, want 1", id, rec.Attempts)
			}
		}
		if n := s.count(fmt.Sprint(i)); n != 1 {
			t.Fatalf("job %d ran %d times (%s)", i, n, s.seen())
		}
	}
}

// In a sequential channel a retry waits in place; RetryNoCount there does
// not count either.
func TestSequentialNoCountRetriesDoNotCount(t *testing.T) {
	e := newEnv(t)
	s := newSteps(func(ctx context.Context, j *job.Job[Step], run int) (string, error) {
		if run <= 3 {
			return "", job.RetryNoCount(errors.New("backend busy"), 50*time.Millisecond)
		}
		return fmt.Sprintf("done at attempt %d", j.Attempt), nil
	})
	e.start(s.registry(), worker.WithChannels("root.seq:1:sequential"))
	id, err := e.d.Enqueue(context.Background(), Step{Key: "k"}, job.WithChannel("root.seq"), job.WithMaxRetries(2))
	if err != nil {
		t.Fatal(err)
	}
	rec := e.waitState(id, job.StateDone, 20*time.Second)
	if rec.Result != "done at attempt 1" || s.count("k") != 4 {
		t.Fatalf("record %+v after %d runs", rec, s.count("k"))
	}
}

// The head job of a sequential channel, retrying in place, is cancelled:
// it does not run again, and the channel goes on with the next job.
func TestCancelRetryingHeadOfSequentialChannel(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	s := newSteps(func(ctx context.Context, j *job.Job[Step], run int) (string, error) {
		if j.Args.Key == "head" {
			return "", job.RetryAfter(errors.New("down"), 700*time.Millisecond)
		}
		return "ok", nil
	})
	e.start(s.registry(), worker.WithChannels("root.seq:1:sequential"))
	head, _ := e.d.Enqueue(ctx, Step{Key: "head"}, job.WithChannel("root.seq"))
	next, _ := e.d.Enqueue(ctx, Step{Key: "next"}, job.WithChannel("root.seq"))
	e.waitState(head, job.StateWaiting, 10*time.Second)
	if err := e.d.Cancel(ctx, head); err != nil {
		t.Fatalf("cancel: %v", err)
	}
	e.waitState(next, job.StateDone, 10*time.Second)
	e.waitState(head, job.StateCancelled, 10*time.Second)
	if n := s.count("head"); n != 1 {
		t.Fatalf("cancelled head ran %d times (%s)", n, s.seen())
	}
}

// Cancel of a job a worker holds (waiting for a channel slot) cancels it:
// the worker checks the jobs it holds against the tombstone, and the job
// never starts. Its identity key is freed, as for a job cancelled before a
// worker took it, so a new job of that key runs.
func TestCancelOfABlockedJobDropsIt(t *testing.T) {
	e := cancelOfATakenJob(t, "blocked")
	ctx := context.Background()
	again, err := e.d.Enqueue(ctx, Step{Key: "again"}, job.WithChannel("root.one"), job.WithIdentityKey("held-key"))
	if err != nil {
		t.Fatal(err)
	}
	// Were the key still held by the cancelled job, Enqueue would answer
	// that job's id, which never runs.
	e.waitState(again, job.StateDone, 10*time.Second)
}

// A job whose ETA is over and that a worker took (here waiting for the
// channel's slot) before its record says so is cancelled too.
func TestCancelOfAFiredAndBlockedJobDropsIt(t *testing.T) {
	cancelOfATakenJob(t, "fired")
}

// A graph job a worker holds is dropped, and the jobs that wait for it are
// cancelled with it, as Cancel does for the jobs it reaches first.
func TestCancelOfABlockedGraphJobCancelsItsChildren(t *testing.T) {
	cancelOfATakenJob(t, "graph")
}

// A job queued in a worker behind a long one (one runner) is cancelled:
// the runner that frees up drops it instead of running it.
func TestCancelOfAJobQueuedBehindBusyRunnersDropsIt(t *testing.T) {
	cancelOfATakenJob(t, "queued")
}

// cancelOfATakenJob: a job "held" is taken by a worker and waits behind a
// long job: for the slot of root.one:1, or (queued) for the only runner.
// Cancel of the long job answers ErrStarted; Cancel of the held one
// answers nil, its record says cancelled at once, and it never runs. How
// held is enqueued: "blocked" (with an identity key), "fired" (delayed by
// 200 ms), "graph" (the parent of a child job), "queued".
func cancelOfATakenJob(t *testing.T, how string) *env {
	e := newEnv(t)
	ctx := context.Background()
	release := make(chan struct{})
	s := longSteps(release)
	ch, opt := "root.one", worker.WithChannels("root.one:1")
	if how == "queued" {
		ch, opt = "root", worker.WithConcurrency(1)
	}
	e.start(s.registry(), opt)
	long, _ := e.d.Enqueue(ctx, Step{Key: "long"}, job.WithChannel(ch))
	testenv.Eventually(t, 10*time.Second, func() bool { return s.count("long") == 1 }, "long job running")
	var held, child string
	var slow *slowScripts
	switch how {
	case "blocked":
		held, _ = e.d.Enqueue(ctx, Step{Key: "held"}, job.WithChannel(ch), job.WithIdentityKey("held-key"))
	case "fired":
		held, _ = e.d.Enqueue(ctx, Step{Key: "held"}, job.WithChannel(ch), job.WithDelay(200*time.Millisecond))
	case "graph":
		res, err := e.d.EnqueueGraph(ctx, dispatcher.Chain(
			dispatcher.Job(Step{Key: "held"}, job.WithChannel(ch)), dispatcher.Job(Step{Key: "child"})))
		if err != nil {
			t.Fatal(err)
		}
		held, child = res.Jobs[0], res.Jobs[1]
		// The scripts on the graph answer slowly from now on (the worker's
		// cancel of the held job's children among them): Cancel returns
		// only once the children's records say cancelled too.
		slow = &slowScripts{key: graphs.Key(wire.MustNames(e.prefix), res.ID), delay: 500 * time.Millisecond}
		e.rdb.AddHook(slow)
	case "queued":
		held, _ = e.d.Enqueue(ctx, Step{Key: "held"}, job.WithChannel(ch))
	}
	names := wire.MustNames(e.prefix)
	cons, err := e.js.Consumer(ctx, names.JobsStream(), names.JobsConsumer(ch, 1))
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() bool {
		info, err := cons.Info(ctx)
		return err == nil && info.NumAckPending == 2
	}, "the second job taken by the worker, waiting behind the long one")
	if rec, _ := e.d.Job(ctx, held); how == "fired" && rec.State != job.StateWaiting {
		t.Fatalf("held job is %s: the test needs its record still waiting", rec.State)
	}
	if err := e.d.Cancel(ctx, long); !errors.Is(err, job.ErrStarted) {
		t.Fatalf("cancel of a running job = %v, want ErrStarted", err)
	}
	if err := e.d.Cancel(ctx, held); err != nil {
		t.Fatalf("cancel of a job taken and not started (%s) = %v, want nil", how, err)
	}
	for _, id := range []string{held, child} {
		if rec, _ := e.d.Job(ctx, id); id != "" && rec.State != job.StateCancelled {
			t.Fatalf("job %s is %s once Cancel returned", id, rec.State)
		}
	}
	if slow != nil && slow.delayed.Load() == 0 {
		t.Fatal("no script on the graph was slowed: the test proves nothing")
	}
	// The cancelled job leaves at once: its message is settled while the
	// long job still runs (and it never takes a slot).
	testenv.Eventually(t, 10*time.Second, func() bool {
		info, err := cons.Info(ctx)
		return err == nil && info.NumAckPending == 1
	}, "the cancelled job's message settled while the long job runs")
	close(release)
	e.waitState(long, job.StateDone, 10*time.Second)
	// The slot the dropped job took is free again: a later job runs.
	after, _ := e.d.Enqueue(ctx, Step{Key: "after"}, job.WithChannel(ch))
	e.waitState(after, job.StateDone, 10*time.Second)
	if n := s.count("held") + s.count("child"); n != 0 {
		t.Fatalf("cancelled job ran (%s)", s.seen())
	}
	testenv.Eventually(t, 10*time.Second, func() bool {
		info, err := cons.Info(ctx)
		return err == nil && info.NumAckPending == 0
	}, "the dropped job's message settled")
	return e
}

// A job whose ETA is over while no worker runs is in the jobs stream, not
// taken: Cancel cancels it, and the worker that receives it later drops it.
func TestCancelOfAFiredJobNotTaken(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	id, err := e.d.Enqueue(ctx, Step{Key: "late"}, job.WithDelay(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	scheduleFired(t, e, id)
	s := newSteps(func(ctx context.Context, j *job.Job[Step], run int) (string, error) { return "ok", nil })
	cancelledThenDropped(t, e, s, id, "late", 0)
}

// A job whose retry fired while no worker ran: its record names the retry's
// schedule, so Cancel knows that no worker took it since (nil, not
// ErrStarted), and the worker that receives it later drops it.
func TestCancelOfAFiredRetryNotTaken(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	names := e.names()
	s := newSteps(func(ctx context.Context, j *job.Job[Step], run int) (string, error) {
		if run == 1 {
			return "", job.RetryAfter(errors.New("down"), 4*time.Second)
		}
		return "ok", nil
	})
	stop := e.start(s.registry())
	id, _ := e.d.Enqueue(ctx, Step{Key: "flaky"})
	e.waitState(id, job.StateWaiting, 10*time.Second)
	stop() // before the retry fires (a stop takes at most about 2 s): no worker receives it
	str, err := e.js.Stream(ctx, names.JobsStream())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := str.GetLastMsgForSubject(ctx, names.ScheduleSubject(id)); err != nil {
		t.Fatalf("the retry's schedule is not there once the worker stopped: %v", err)
	}
	scheduleFired(t, e, id)
	cancelledThenDropped(t, e, s, id, "flaky", 1)
}

// scheduleFired waits until the schedule of job id has fired (the server
// purges it as it stores the job).
func scheduleFired(t *testing.T, e *env, id string) {
	t.Helper()
	ctx := context.Background()
	str, err := e.js.Stream(ctx, e.names().JobsStream())
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() bool {
		_, err := str.GetLastMsgForSubject(ctx, e.names().ScheduleSubject(id))
		return errors.Is(err, jetstream.ErrMsgNotFound)
	}, "the schedule of %s fired", id)
}

// cancelledThenDropped cancels job id, fired and taken by no worker (nil),
// then starts a worker of s: it drops the job (cancelled), which so ran
// as many times as before (runs, of its Step key).
func cancelledThenDropped(t *testing.T, e *env, s *steps, id, key string, runs int) {
	t.Helper()
	ctx := context.Background()
	if err := e.d.Cancel(ctx, id); err != nil {
		t.Fatalf("cancel of a fired job no worker took = %v, want nil", err)
	}
	e.start(s.registry())
	other, _ := e.d.Enqueue(ctx, Step{Key: "other"})
	e.waitState(other, job.StateDone, 10*time.Second)
	e.waitState(id, job.StateCancelled, 10*time.Second)
	if n := s.count(key); n != runs {
		t.Fatalf("cancelled job ran %d times, want %d", n, runs)
	}
}

// A requeued job can be cancelled again before it runs.
func TestRequeuedJobCanBeCancelled(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	s := newSteps(func(ctx context.Context, j *job.Job[Step], run int) (string, error) {
		if j.Args.Key == "bad" {
			return "", errors.New("permanent")
		}
		return "ok", nil
	})
	stop := e.start(s.registry())
	id, _ := e.d.Enqueue(ctx, Step{Key: "bad"})
	e.waitState(id, job.StateDead, 10*time.Second)
	stop()
	if err := e.d.Requeue(ctx, id); err != nil {
		t.Fatal(err)
	}
	if err := e.d.Cancel(ctx, id); err != nil {
		t.Fatalf("cancel after requeue: %v", err)
	}
	e.start(s.registry())
	marker, _ := e.d.Enqueue(ctx, Step{Key: "marker"})
	e.waitState(marker, job.StateDone, 10*time.Second)
	if rec, _ := e.d.Job(ctx, id); rec.State != job.StateCancelled || s.count("bad") != 1 {
		t.Fatalf("state %s, runs %d", rec.State, s.count("bad"))
	}
}

// The shutdown grace period bounds Run even when a handler ignores its
// context: the job is handed back and completes on another worker.
func TestShutdownGraceBoundsAStuckHandler(t *testing.T) {
	e := newEnv(t)
	never := make(chan struct{})
	defer close(never)
	s := newSteps(func(ctx context.Context, j *job.Job[Step], run int) (string, error) {
		if run == 1 {
			<-never // ignores ctx
		}
		return "ok", nil
	})
	_, id := stopPastGrace(t, e, s)
	e.start(s.registry())
	e.waitState(id, job.StateDone, 10*time.Second)
}

// worker.Logger may be used from the job's own goroutines (-race).
func TestJobLoggerFromSeveralGoroutines(t *testing.T) {
	e := newEnv(t)
	s := newSteps(func(ctx context.Context, j *job.Job[Step], run int) (string, error) {
		var wg sync.WaitGroup
		for i := 0; i < 4; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				worker.Logger(ctx).Debug("working")
			}()
		}
		wg.Wait()
		return "ok", nil
	})
	e.start(s.registry())
	id, _ := e.d.Enqueue(context.Background(), Step{Key: "k"})
	e.waitState(id, job.StateDone, 10*time.Second)
}

// Every line about a job carries job_id, job_name, channel and attempt,
// and backend and model when the arguments tell them.
func TestJobLogLinesCarryTheJobFields(t *testing.T) {
	e := newEnv(t)
	core, logs := observer.New(zapcore.DebugLevel)
	s := newSteps(func(ctx context.Context, j *job.Job[Step], run int) (string, error) {
		worker.Logger(ctx).Info("handler says hello")
		if j.Args.Key == "bad" {
			return "", errors.New("permanent")
		}
		return "ok", nil
	})
	e.start(s.registry(), worker.WithLogger(zap.New(core)))
	ctx := context.Background()
	good, _ := e.d.Enqueue(ctx, Step{Key: "good"}, job.WithChannel("root.shop"))
	bad, _ := e.d.Enqueue(ctx, Step{Key: "bad"}, job.WithChannel("root.shop"))
	e.waitState(good, job.StateDone, 10*time.Second)
	e.waitState(bad, job.StateDead, 10*time.Second)
	check := func(msg, id string, labels bool) {
		t.Helper()
		testenv.Eventually(t, 5*time.Second, func() bool {
			for _, l := range logs.FilterMessage(msg).All() {
				f := l.ContextMap()
				if f["job_id"] == id && f["job_name"] == "test.step" && f["channel"] == "root.shop" && f["attempt"] == int64(1) &&
					(!labels || f["backend"] == "shop-v1" && f["model"] == "product") {
					return true
				}
			}
			return false
		}, "a %q line with the job's fields (lines: %v)", msg, logs.FilterMessage(msg).All())
	}
	check("handler says hello", good, true)
	check("job done", good, true)
	check("job dead-lettered", bad, false)
}

// A channel that becomes sequential replaces its per-band consumers: the
// worker starts (no consumer overlap error) and runs its jobs.
func TestChannelBecomesSequential(t *testing.T) {
	e := newEnv(t)
	s := newSteps(func(ctx context.Context, j *job.Job[Step], run int) (string, error) { return "ok", nil })
	ctx := context.Background()
	stop := e.start(s.registry(), worker.WithChannels("root.x:2"))
	first, _ := e.d.Enqueue(ctx, Step{Key: "before"}, job.WithChannel("root.x"))
	e.waitState(first, job.StateDone, 10*time.Second)
	stop()
	e.start(s.registry(), worker.WithChannels("root.x:1:sequential"))
	id, _ := e.d.Enqueue(ctx, Step{Key: "after"}, job.WithChannel("root.x"))
	e.waitState(id, job.StateDone, 10*time.Second)
}

// A sequential channel orders its unconfigured sub-channels too: a job of
// root.seq.sub waits while the head job of root.seq retries.
func TestSequentialChannelCoversSubChannels(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	s := newSteps(func(ctx context.Context, j *job.Job[Step], run int) (string, error) {
		if j.Args.Key == "head" && run < 3 {
			return "", job.RetryAfter(errors.New("not yet"), 200*time.Millisecond)
		}
		return "ok", nil
	})
	e.start(s.registry(), worker.WithChannels("root.seq:1:sequential"), worker.WithConcurrency(8))
	head, _ := e.d.Enqueue(ctx, Step{Key: "head"}, job.WithChannel("root.seq"))
	sub, _ := e.d.Enqueue(ctx, Step{Key: "sub"}, job.WithChannel("root.seq.sub"))
	e.waitState(head, job.StateDone, 20*time.Second)
	e.waitState(sub, job.StateDone, 20*time.Second)
	if got := s.seen(); got != "head#1 head#2 head#3 sub#1" {
		t.Fatalf("run order %q: the sub-channel's job overtook the retrying head", got)
	}
}

// countingJS counts the publishes made through a JetStream context.
type countingJS struct {
	jetstream.JetStream
	sync, async atomic.Int64
}

func (c *countingJS) PublishMsg(ctx context.Context, m *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	c.sync.Add(1)
	return c.JetStream.PublishMsg(ctx, m, opts...)
}

func (c *countingJS) PublishMsgAsync(m *nats.Msg, opts ...jetstream.PublishOpt) (jetstream.PubAckFuture, error) {
	c.async.Add(1)
	return c.JetStream.PublishMsgAsync(m, opts...)
}

// EnqueueMany uses asynchronous publishes: 10k jobs, no synchronous
// publish (round trip) each, none through the JetStream context's
// per-message futures either: they go out on the connection as a
// pipeline (internal/jspub proves publishes do not wait for their
// acknowledgements), and all are stored.
func TestEnqueueManyPublishesAsynchronously(t *testing.T) {
	e := newEnv(t)
	cjs := &countingJS{JetStream: e.js}
	d, err := dispatcher.New(cjs, dispatcher.WithPrefix(e.prefix), dispatcher.WithRedis(e.rdb))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close(context.Background())
	items := make([]dispatcher.Item, 10_000)
	for i := range items {
		items[i] = dispatcher.Item{Args: Step{Key: fmt.Sprint(i)}}
	}
	before := cjs.Conn().Stats()
	if _, err := d.EnqueueMany(context.Background(), items); err != nil {
		t.Fatal(err)
	}
	after := cjs.Conn().Stats()
	if cjs.sync.Load() != 0 || cjs.async.Load() != 0 {
		t.Fatalf("%d synchronous and %d per-message asynchronous publishes for %d jobs", cjs.sync.Load(), cjs.async.Load(), len(items))
	}
	if sent, acked := after.OutMsgs-before.OutMsgs, after.InMsgs-before.InMsgs; sent < uint64(len(items)) || acked < uint64(len(items)) {
		t.Fatalf("%d messages out and %d in for %d jobs", sent, acked, len(items))
	}
	info, err := cjs.Stream(context.Background(), wire.MustNames(e.prefix).JobsStream())
	if err != nil {
		t.Fatal(err)
	}
	if n := info.CachedInfo().State.Msgs; n != uint64(len(items)) {
		t.Fatalf("%d jobs stored of %d", n, len(items))
	}
}

// A handler that ignores its cancelled context past the grace period has
// its job handed back (it runs again elsewhere); when it returns a
// retryable error later, this worker schedules no retry of its own: the
// job would otherwise live on twice (its redelivery and the schedule).
func TestStuckHandlerRetryAfterHandBackSchedulesNothing(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	stuckThenFails(t, e, job.RetryAfter(errors.New("backend timed out"), time.Hour))
	st, err := e.js.Stream(ctx, e.names().JobsStream())
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(e.names().ScheduleWildcard()))
	if err != nil {
		t.Fatal(err)
	}
	if len(info.State.Subjects) != 0 {
		t.Fatalf("a retry of the handed-back job is scheduled too (%v): it would run again", info.State.Subjects)
	}
}

// stuckThenFails runs a job whose first run ignores its cancelled context
// past the shutdown grace (stopPastGrace) and, once its job was handed
// back, fails with err; a new worker then runs the job again, and it is
// done. It returns the job's id.
func stuckThenFails(t *testing.T, e *env, err error) string {
	t.Helper()
	release := make(chan struct{})
	s := newSteps(func(ctx context.Context, j *job.Job[Step], run int) (string, error) {
		if run == 1 {
			<-release // ignores ctx
			return "", err
		}
		return "ok", nil
	})
	w, id := stopPastGrace(t, e, s)
	close(release) // the handler gives up now, after its job was handed back
	testenv.Eventually(t, 10*time.Second, func() bool { return w.Running() == 0 }, "stuck handler returned")
	e.start(s.registry())
	e.waitState(id, job.StateDone, 10*time.Second)
	return id
}

// stopPastGrace runs a worker of s with a 300 ms shutdown grace, enqueues
// the job "stuck", waits until its handler runs, stops the worker and
// waits for Run to return: the handler, which ignores its context, still
// runs, and its job was handed back.
func stopPastGrace(t *testing.T, e *env, s *steps) (*worker.Worker, string) {
	t.Helper()
	ctx := context.Background()
	w, err := worker.New(e.js, s.registry(), worker.WithPrefix(e.prefix), worker.WithRedis(e.rdb),
		worker.WithShutdownGrace(300*time.Millisecond), worker.WithLogger(zaptest.NewLogger(t, zaptest.Level(zap.ErrorLevel+1))))
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(wctx) }()
	id, _ := e.d.Enqueue(ctx, Step{Key: "stuck"})
	testenv.Eventually(t, 10*time.Second, func() bool { return s.count("stuck") == 1 }, "job running")
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return: the grace period is no bound")
	}
	return w, id
}

// tenJobsOneRunner enqueues ten jobs (MaxRetries 1) and runs them on a
// worker of a single runner; stop stops it, and Run's error is on stopped.
func tenJobsOneRunner(t *testing.T, e *env, s *steps) (ids []string, stop context.CancelFunc, stopped chan error) {
	t.Helper()
	ctx := context.Background()
	for i := 0; i < 10; i++ {
		id, err := e.d.Enqueue(ctx, Step{Key: fmt.Sprint(i), N: i}, job.WithMaxRetries(1))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	a, err := worker.New(e.js, s.registry(), worker.WithPrefix(e.prefix), worker.WithRedis(e.rdb), worker.WithConcurrency(1),
		worker.WithLogger(zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))))
	if err != nil {
		t.Fatal(err)
	}
	actx, stop := context.WithCancel(ctx)
	stopped = make(chan error, 1)
	go func() { stopped <- a.Run(actx) }()
	return ids, stop, stopped
}

// A job of a better band waiting for a throttled channel leaves a "wants"
// mark (and its place) for as long as the throttle's wait, holding back
// worse bands fleet-wide. Cancelled, it takes both away at once.
func TestCancelledBlockedJobTakesItsWantsMarkAway(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	s := newSteps(func(ctx context.Context, j *job.Job[Step], run int) (string, error) { return "ok", nil })
	e.start(s.registry(), worker.WithChannels("root.one:5:throttle=30"))
	first, _ := e.d.Enqueue(ctx, Step{Key: "first"}, job.WithChannel("root.one"))
	e.waitState(first, job.StateDone, 10*time.Second)
	high, _ := e.d.Enqueue(ctx, Step{Key: "high"}, job.WithChannel("root.one"), job.WithPriority(0))
	tag := "{" + e.prefix + ":channels}"
	mark, place := tag+":wants:root.one:0", tag+":waiting:root.one:0"
	testenv.Eventually(t, 10*time.Second, func() bool {
		return e.rdb.PTTL(ctx, mark).Val() > 20*time.Second && e.rdb.ZCard(ctx, place).Val() == 1
	}, "the high job's mark and place, for the throttle's wait")
	if err := e.d.Cancel(ctx, high); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() bool {
		return e.rdb.Exists(ctx, mark).Val() == 0 && e.rdb.ZCard(ctx, place).Val() == 0
	}, "the cancelled job's mark and place gone")
	if n := s.count("high"); n != 0 {
		t.Fatalf("cancelled job ran (%s)", s.seen())
	}
}

// slowScripts delays the scripts run on one key by delay: a slow Redis.
type slowScripts struct {
	key     string
	delay   time.Duration
	delayed atomic.Int32
}

func (h *slowScripts) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *slowScripts) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if a := cmd.Args(); len(a) > 3 && (cmd.Name() == "evalsha" || cmd.Name() == "eval") && a[3] == h.key {
			h.delayed.Add(1)
			time.Sleep(h.delay)
		}
		return next(ctx, cmd)
	}
}

func (h *slowScripts) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
