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
	"github.com/connector-go/connector/internal/streams"
	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/internal/wire"
	"github.com/connector-go/connector/job"
	"github.com/connector-go/connector/worker"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
)

type ImportProduct struct {
	BackendID  string `msgpack:"backend_id"`
	ExternalID string `msgpack:"external_id"`
}

func (ImportProduct) JobName() string { return "test.import_product" }

type Flaky struct {
	Fails int    `msgpack:"fails"`
	Mode  string `msgpack:"mode"`
}

func (Flaky) JobName() string { return "test.flaky" }

// env is one isolated deployment: its own NATS server, prefix and Redis keys.
type env struct {
	t      *testing.T
	srv    *testenv.NATSServer
	nc     *nats.Conn
	js     jetstream.JetStream
	rdb    *redis.Client
	prefix string
	d      *dispatcher.Dispatcher
}

func newEnv(t *testing.T) *env {
	t.Helper()
	srv, nc, js := testenv.JetStream(t)
	rdb, prefix := testenv.Redis(t)
	if err := streams.Ensure(context.Background(), js, streams.Config{Names: wire.MustNames(prefix)}); err != nil {
		t.Fatal(err)
	}
	d, err := dispatcher.New(js, dispatcher.WithPrefix(prefix), dispatcher.WithRedis(rdb))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close(context.Background()) })
	return &env{t: t, srv: srv, nc: nc, js: js, rdb: rdb, prefix: prefix, d: d}
}

// names are the env's stream and subject names.
func (e *env) names() wire.Names { return wire.MustNames(e.prefix) }

// start runs a worker until the test ends (or stop is called) and waits
// until its consumer exists.
func (e *env) start(reg *worker.Registry, opts ...worker.Option) (stop func()) {
	e.t.Helper()
	opts = append([]worker.Option{worker.WithPrefix(e.prefix), worker.WithRedis(e.rdb),
		worker.WithLogger(zaptest.NewLogger(e.t, zaptest.Level(zap.WarnLevel))),
		worker.WithUnknownJobRedeliveries(0, 0)}, opts...)
	w, err := worker.New(e.js, reg, opts...)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := w.Setup(context.Background()); err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					e.t.Errorf("worker.Run: %v", err)
				}
			case <-time.After(60 * time.Second):
				e.t.Errorf("worker did not stop")
			}
		})
	}
	e.t.Cleanup(stop)
	return stop
}

func (e *env) waitState(id string, want job.State, timeout time.Duration) job.Record {
	e.t.Helper()
	return testenv.WaitJob(e.t, e.d, id, want, timeout)
}

func TestTypedJobRunsAndIsRecorded(t *testing.T) {
	e := newEnv(t)
	reg := worker.NewRegistry()
	got := make(chan ImportProduct, 1)
	worker.MustRegister(reg, func(ctx context.Context, j *job.Job[ImportProduct]) (string, error) {
		got <- j.Args
		return "imported " + j.Args.ExternalID, nil
	})
	e.start(reg)
	id, err := e.d.Enqueue(context.Background(), ImportProduct{BackendID: "shop1", ExternalID: "42"},
		job.WithDescription("import product 42"), job.WithChannel("root.shop"))
	if err != nil {
		t.Fatal(err)
	}
	select {
	case a := <-got:
		if a.BackendID != "shop1" || a.ExternalID != "42" {
			t.Fatalf("args = %+v", a)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("job did not run")
	}
	rec := e.waitState(id, job.StateDone, 10*time.Second)
	if rec.Result != "imported 42" || rec.Attempts != 1 || rec.Channel != "root.shop" ||
		rec.Description != "import product 42" || rec.StartedAt.IsZero() || rec.EndedAt.IsZero() || rec.EnqueuedAt.IsZero() {
		t.Fatalf("record = %+v", rec)
	}
}

func TestRetryPatternTimingAndAttempts(t *testing.T) {
	e := newEnv(t)
	reg := worker.NewRegistry()
	var mu sync.Mutex
	var starts []time.Time
	var attempts []int
	worker.MustRegister(reg, func(ctx context.Context, j *job.Job[Flaky]) (string, error) {
		mu.Lock()
		starts = append(starts, time.Now())
		attempts = append(attempts, j.Attempt)
		n := len(starts)
		mu.Unlock()
		if n <= j.Args.Fails {
			return "", job.Retry(fmt.Errorf("backend busy (try %d)", n))
		}
		return "ok", nil
	})
	e.start(reg)
	// from try 1 on wait 1s, from try 2 on wait 2s
	id, err := e.d.Enqueue(context.Background(), Flaky{Fails: 2},
		job.WithRetryPattern(job.RetryPattern{1: time.Second, 2: 2 * time.Second}), job.WithMaxRetries(5))
	if err != nil {
		t.Fatal(err)
	}
	rec := e.waitState(id, job.StateDone, 20*time.Second)
	mu.Lock()
	defer mu.Unlock()
	if len(starts) != 3 || rec.Attempts != 3 {
		t.Fatalf("starts=%d record=%+v", len(starts), rec)
	}
	if fmt.Sprint(attempts) != "[1 2 3]" {
		t.Fatalf("attempt numbers %v", attempts)
	}
	for i, want := range []time.Duration{time.Second, 2 * time.Second} {
		gap := starts[i+1].Sub(starts[i])
		if gap < want || gap > want+time.Second {
			t.Errorf("gap before attempt %d = %s, want %s (+ at most 1s)", i+2, gap, want)
		}
	}
}

func TestRetryableErrorOwnDelayAndNoCount(t *testing.T) {
	e := newEnv(t)
	reg := worker.NewRegistry()
	var runs atomic.Int32
	worker.MustRegister(reg, func(ctx context.Context, j *job.Job[Flaky]) (string, error) {
		n := runs.Add(1)
		if int(n) <= j.Args.Fails {
			// Lock held elsewhere: does not count against max retries.
			return "", job.RetryNoCount(errors.New("locked"), 100*time.Millisecond)
		}
		return fmt.Sprintf("attempt %d", j.Attempt), nil
	})
	e.start(reg)
	id, err := e.d.Enqueue(context.Background(), Flaky{Fails: 4}, job.WithMaxRetries(1))
	if err != nil {
		t.Fatal(err)
	}
	rec := e.waitState(id, job.StateDone, 15*time.Second)
	if runs.Load() != 5 || rec.Result != "attempt 1" {
		t.Fatalf("runs=%d record=%+v", runs.Load(), rec)
	}
}

func TestMaxRetriesDeadLettersWithError(t *testing.T) {
	e := newEnv(t)
	reg := worker.NewRegistry()
	var runs atomic.Int32
	worker.MustRegister(reg, func(ctx context.Context, j *job.Job[Flaky]) (string, error) {
		runs.Add(1)
		return "", job.RetryAfter(errors.New("shop answered 503"), 50*time.Millisecond)
	})
	e.start(reg)
	id, err := e.d.Enqueue(context.Background(), Flaky{}, job.WithMaxRetries(3))
	if err != nil {
		t.Fatal(err)
	}
	rec := e.waitState(id, job.StateDead, 15*time.Second)
	if runs.Load() != 3 || rec.Attempts != 3 {
		t.Fatalf("runs=%d record=%+v", runs.Load(), rec)
	}
	dl := findDead(t, e, id)
	if dl.Reason != wire.ReasonMaxRetries || dl.Attempts != 3 || dl.DiedAt == 0 || dl.EnqueuedAt == 0 ||
		!contains(dl.Error, "shop answered 503") || !contains(dl.Error, "max retries") {
		t.Fatalf("dead letter = %+v", dl.DeadLetter)
	}
}

func contains(s, sub string) bool {
	return len(sub) == 0 || (len(s) >= len(sub) && indexOf(s, sub) >= 0)
}
func indexOf(s, sub string) int {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return i
		}
	}
	return -1
}

func findDead(t *testing.T, e *env, id string) dispatcher.DeadLetter {
	t.Helper()
	var found *dispatcher.DeadLetter
	testenv.Eventually(t, 10*time.Second, func() bool {
		dls, err := e.d.DeadLetters(context.Background(), 0)
		if err != nil {
			return false
		}
		for i := range dls {
			if dls[i].JobID == id {
				found = &dls[i]
				return true
			}
		}
		return false
	}, "dead letter of %s", id)
	return *found
}

type permanentErr struct{ code int }

func (e *permanentErr) Error() string { return fmt.Sprintf("record rejected (%d)", e.code) }

func TestPermanentErrorAndPanicDeadLetterAndWorkerSurvives(t *testing.T) {
	e := newEnv(t)
	reg := worker.NewRegistry()
	worker.MustRegister(reg, func(ctx context.Context, j *job.Job[Flaky]) (string, error) {
		switch j.Args.Mode {
		case "error":
			return "", fmt.Errorf("export: %w", &permanentErr{code: 422})
		case "panic":
			var m map[string]int
			//lint:ignore SA5000 a runtime panic on purpose, as a handler's bug makes one
			m["boom"]++ // nil map write
		case "nothing":
			return "", job.NothingToDo("already up to date")
		}
		return "fine", nil
	})
	e.start(reg, worker.WithConcurrency(1))
	ctx := context.Background()
	idErr, _ := e.d.Enqueue(ctx, Flaky{Mode: "error"})
	idPanic, _ := e.d.Enqueue(ctx, Flaky{Mode: "panic"})
	idNothing, _ := e.d.Enqueue(ctx, Flaky{Mode: "nothing"})
	idOK, _ := e.d.Enqueue(ctx, Flaky{Mode: "ok"})

	e.waitState(idOK, job.StateDone, 10*time.Second)
	if rec := e.waitState(idNothing, job.StateDone, 5*time.Second); rec.Result != "already up to date" {
		t.Fatalf("nothing to do result %q", rec.Result)
	}
	rec := e.waitState(idErr, job.StateDead, 5*time.Second)
	if rec.Attempts != 1 || rec.ErrorType != "*worker_test.permanentErr" {
		t.Fatalf("error record = %+v", rec)
	}
	dl := findDead(t, e, idErr)
	if dl.Reason != wire.ReasonError || dl.ErrorType != "*worker_test.permanentErr" || !contains(dl.Error, "422") {
		t.Fatalf("error letter = %+v", dl.DeadLetter)
	}
	e.waitState(idPanic, job.StateDead, 5*time.Second)
	dl = findDead(t, e, idPanic)
	if dl.Reason != wire.ReasonPanic || !contains(dl.Stack, "worker_test.go") || !contains(dl.Error, "nil map") {
		t.Fatalf("panic letter = reason %q error %q stack %q", dl.Reason, dl.Error, dl.Stack)
	}
}

// refusingJS refuses the publishes on subjects starting with prefix while
// failing is set, as a stream that does not answer would.
type refusingJS struct {
	jetstream.JetStream
	prefix  string
	failing atomic.Bool
	refused atomic.Int32
}

func (j *refusingJS) PublishMsg(ctx context.Context, m *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	if j.failing.Load() && len(m.Subject) >= len(j.prefix) && m.Subject[:len(j.prefix)] == j.prefix {
		j.refused.Add(1)
		return nil, errors.New("stream unavailable")
	}
	return j.JetStream.PublishMsg(ctx, m, opts...)
}

// runOn runs a worker of reg on js (the env's stream and Redis) until the
// test ends.
func (e *env) runOn(js jetstream.JetStream, reg *worker.Registry) {
	e.t.Helper()
	w, err := worker.New(js, reg, worker.WithPrefix(e.prefix), worker.WithRedis(e.rdb),
		worker.WithLogger(zaptest.NewLogger(e.t, zaptest.Level(zap.ErrorLevel+1))))
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	e.t.Cleanup(func() { cancel(); <-done })
}

// lostAckJS stores the first message published on subjects under prefix
// but answers a timeout, as a publish whose acknowledgement was lost.
type lostAckJS struct {
	jetstream.JetStream
	prefix string
	lost   atomic.Int32
}

func (j *lostAckJS) PublishMsg(ctx context.Context, m *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	ack, err := j.JetStream.PublishMsg(ctx, m, opts...)
	if err == nil && strings.HasPrefix(m.Subject, j.prefix) && j.lost.Add(1) == 1 {
		return nil, context.DeadlineExceeded
	}
	return ack, err
}

// A retry whose schedule was stored but whose publish timed out runs once
// more, not twice: the worker publishes the schedule again (it replaces
// the first) rather than retry the job in place as well (its redelivery
// and the schedule both ran it).
func TestRetryScheduleWithALostAckRunsOnce(t *testing.T) {
	e := newEnv(t)
	ljs := &lostAckJS{JetStream: e.js, prefix: e.prefix + ".sched."}
	var runs atomic.Int32
	reg := worker.NewRegistry()
	worker.MustRegister(reg, func(ctx context.Context, j *job.Job[Flaky]) (string, error) {
		if runs.Add(1) == 1 {
			return "", job.RetryAfter(errors.New("backend busy"), 200*time.Millisecond)
		}
		return "fine", nil
	})
	e.runOn(ljs, reg)
	ctx := context.Background()
	id, err := e.d.Enqueue(ctx, Flaky{Mode: "retry"})
	if err != nil {
		t.Fatal(err)
	}
	e.waitState(id, job.StateDone, 20*time.Second)
	if ljs.lost.Load() < 1 {
		t.Fatal("no schedule publish lost its acknowledgement: the test proves nothing")
	}
	// Every schedule fired and every job message was taken and settled.
	n := e.names()
	testenv.Eventually(t, 20*time.Second, func() bool {
		s, err := e.js.Stream(ctx, n.JobsStream())
		if err != nil {
			return false
		}
		info, err := s.Info(ctx, jetstream.WithSubjectFilter(n.ScheduleWildcard()))
		return err == nil && len(info.State.Subjects) == 0 &&
			testenv.CaughtUp(ctx, e.js, n.JobsStream(), n.JobsWildcard(), n.JobsConsumer("root", 1))
	}, "the schedules fired and the jobs settled")
	if got := runs.Load(); got != 2 {
		t.Fatalf("the handler ran %d times, want 2 (the first run and its one retry)", got)
	}
}

// A retry whose schedule cannot be published (NATS refuses the publish) is
// retried in place: the job is not lost, and its next run is its next
// attempt (docs/architecture.md, failure model: NATS down).
func TestRetryNotScheduledIsRetriedInPlace(t *testing.T) {
	e := newEnv(t)
	rjs := &refusingJS{JetStream: e.js, prefix: e.prefix + ".sched."}
	rjs.failing.Store(true)
	var runs atomic.Int32
	reg := worker.NewRegistry()
	worker.MustRegister(reg, func(ctx context.Context, j *job.Job[Flaky]) (string, error) {
		if runs.Add(1) == 1 {
			return "", job.RetryAfter(errors.New("backend busy"), 100*time.Millisecond)
		}
		return "fine", nil
	})
	e.runOn(rjs, reg)
	id, err := e.d.Enqueue(context.Background(), Flaky{Mode: "retry"})
	if err != nil {
		t.Fatal(err)
	}
	rec := e.waitState(id, job.StateDone, 20*time.Second)
	if rjs.refused.Load() < 1 {
		t.Fatal("the retry's schedule was not refused: the test proves nothing")
	}
	if n := runs.Load(); n != 2 || rec.Attempts != 2 {
		t.Fatalf("%d runs, record %+v: want 2 runs, the second one attempt 2", n, rec)
	}
}

// A dead letter that cannot be stored does not end its job
// (docs/architecture.md, failure model: "dead-letter publish fails"): the
// job stays queued and comes back, and is dead-lettered once the letter
// is stored.
func TestDeadLetterNotStoredKeepsTheJob(t *testing.T) {
	e := newEnv(t)
	djs, runs, id := refusedLetter(t, e)
	if rec, _ := e.d.Job(context.Background(), id); rec.State == job.StateDead {
		t.Fatalf("job recorded dead although its letter was not stored: %+v", rec)
	}
	djs.failing.Store(false)
	e.waitState(id, job.StateDead, 20*time.Second)
	if dl := findDead(t, e, id); dl.Reason != wire.ReasonError || !contains(dl.Error, "422") {
		t.Fatalf("letter = %+v", dl.DeadLetter)
	}
	if n := runs.Load(); n < 2 {
		t.Fatalf("handler ran %d times: the job did not come back after its letter was refused", n)
	}
}

// refusedLetter runs a job that fails for good (422) on a worker whose
// dead letters are refused, until one is: runs counts the handler's
// runs. Storing djs.failing false lets the letters through. opts are the
// job's.
func refusedLetter(t *testing.T, e *env, opts ...job.Option) (djs *refusingJS, runs *atomic.Int32, id string) {
	t.Helper()
	djs = &refusingJS{JetStream: e.js, prefix: e.prefix + ".dead."}
	djs.failing.Store(true)
	runs = new(atomic.Int32)
	reg := worker.NewRegistry()
	worker.MustRegister(reg, func(ctx context.Context, j *job.Job[Flaky]) (string, error) {
		runs.Add(1)
		return "", &permanentErr{code: 422}
	})
	e.runOn(djs, reg)
	id, err := e.d.Enqueue(context.Background(), Flaky{Mode: "error"}, opts...)
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() bool { return djs.refused.Load() >= 1 }, "a dead letter refused")
	return djs, runs, id
}

func TestMalformedMessagesAreDeadLetteredWithReason(t *testing.T) {
	e := newEnv(t)
	reg := worker.NewRegistry()
	var ok atomic.Int32
	worker.MustRegister(reg, func(ctx context.Context, j *job.Job[ImportProduct]) (string, error) {
		ok.Add(1)
		return "", nil
	})
	e.start(reg)
	ctx := context.Background()
	n := e.names()
	pub := func(data []byte) {
		t.Helper()
		if _, err := e.js.Publish(ctx, n.JobsSubject("root", 1), data); err != nil {
			t.Fatal(err)
		}
	}
	enc := func(v any) []byte {
		b, err := wire.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	pub([]byte("not msgpack at all \xc1"))
	pub(enc(map[string]any{"v": 2, "id": "A1", "name": "test.import_product", "args": map[string]any{}}))
	pub(enc(map[string]any{"v": 1, "id": "A2", "name": "nobody.knows", "args": map[string]any{}}))
	pub(enc(map[string]any{"v": 1, "id": "A3", "name": "test.import_product", "args": map[string]any{"external_id": 42, "extra": true}}))
	pub(enc(map[string]any{"v": 1, "id": "A4", "name": "test.import_product", "args": map[string]any{}, "surprise": 1}))
	good, err := e.d.Enqueue(ctx, ImportProduct{ExternalID: "7"})
	if err != nil {
		t.Fatal(err)
	}
	e.waitState(good, job.StateDone, 10*time.Second)

	var dls []dispatcher.DeadLetter
	testenv.Eventually(t, 10*time.Second, func() bool {
		dls, _ = e.d.DeadLetters(ctx, 0)
		return len(dls) == 5
	}, "5 dead letters")
	reasons := map[string]string{}
	for _, d := range dls {
		key := d.JobID
		if key == "" {
			key = "?" + fmt.Sprint(len(reasons))
		}
		reasons[key] = d.Reason + ": " + d.Error
		if len(d.Data) == 0 {
			t.Errorf("letter %s lost the original message", key)
		}
	}
	want := map[string]string{"A2": "unknown_job", "A3": "bad_args"}
	for id, reason := range want {
		if !contains(reasons[id], reason) {
			t.Errorf("%s: %q, want reason %s", id, reasons[id], reason)
		}
	}
	malformed := 0
	for _, d := range dls {
		if d.Reason == wire.ReasonMalformed {
			malformed++
			if !contains(d.Error, "invalid envelope") {
				t.Errorf("malformed letter error %q", d.Error)
			}
		}
	}
	if malformed != 3 {
		t.Errorf("malformed letters = %d, want 3: %v", malformed, reasons)
	}
	if ok.Load() != 1 {
		t.Errorf("good jobs run = %d", ok.Load())
	}
}

func TestRequeueDeadJob(t *testing.T) {
	e := newEnv(t)
	reg := worker.NewRegistry()
	var fail atomic.Bool
	fail.Store(true)
	worker.MustRegister(reg, func(ctx context.Context, j *job.Job[Flaky]) (string, error) {
		if fail.Load() {
			return "", errors.New("mapping bug")
		}
		return fmt.Sprintf("attempt %d", j.Attempt), nil
	})
	e.start(reg)
	ctx := context.Background()
	id1, _ := e.d.Enqueue(ctx, Flaky{Mode: "a"})
	id2, _ := e.d.Enqueue(ctx, Flaky{Mode: "b"})
	id3, _ := e.d.Enqueue(ctx, Flaky{Mode: "c"})
	for _, id := range []string{id1, id2, id3} {
		e.waitState(id, job.StateDead, 10*time.Second)
	}
	fail.Store(false) // the bug is fixed
	if err := e.d.Requeue(ctx, id1); err != nil {
		t.Fatal(err)
	}
	rec := e.waitState(id1, job.StateDone, 10*time.Second)
	if rec.Result != "attempt 1" || rec.Error != "" {
		t.Fatalf("requeued record = %+v", rec)
	}
	n, err := e.d.RequeueAll(ctx)
	if err != nil || n != 2 {
		t.Fatalf("requeue all = %d, %v", n, err)
	}
	e.waitState(id2, job.StateDone, 10*time.Second)
	e.waitState(id3, job.StateDone, 10*time.Second)
	if dls, _ := e.d.DeadLetters(ctx, 0); len(dls) != 0 {
		t.Fatalf("dead letters left: %d", len(dls))
	}
	if err := e.d.Requeue(ctx, "nosuchjob"); !errors.Is(err, job.ErrNotFound) {
		t.Fatalf("requeue unknown = %v", err)
	}
}

func TestRetryWaitHoldsNoCapacity(t *testing.T) {
	e := newEnv(t)
	reg := worker.NewRegistry()
	worker.MustRegister(reg, func(ctx context.Context, j *job.Job[Flaky]) (string, error) {
		if j.Args.Mode == "slow-retry" && j.Attempt == 1 {
			return "", job.RetryAfter(errors.New("later"), 30*time.Second)
		}
		return "ok", nil
	})
	// One slot fleet-wide: if the waiting retry held it, nothing else could run.
	e.start(reg, worker.WithConcurrency(1), worker.WithMaxAckPending(1))
	ctx := context.Background()
	waiting, _ := e.d.Enqueue(ctx, Flaky{Mode: "slow-retry"})
	e.waitState(waiting, job.StateWaiting, 10*time.Second)
	for i := 0; i < 5; i++ {
		id, _ := e.d.Enqueue(ctx, Flaky{Mode: "quick"})
		e.waitState(id, job.StateDone, 10*time.Second)
	}
	cons, err := e.js.Consumer(ctx, e.names().JobsStream(), e.names().JobsConsumer("root", 1))
	if err != nil {
		t.Fatal(err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.NumAckPending != 0 {
		t.Fatalf("ack pending while the retry waits = %d", info.NumAckPending)
	}
}

func TestAliasesAndMiddleware(t *testing.T) {
	e := newEnv(t)
	reg := worker.NewRegistry()
	var order []string
	var mu sync.Mutex
	mw := func(tag string) worker.Middleware {
		return func(next worker.Handler) worker.Handler {
			return func(ctx context.Context, m *worker.Message) (string, error) {
				mu.Lock()
				order = append(order, tag+">"+m.Name)
				mu.Unlock()
				return next(ctx, m)
			}
		}
	}
	reg.Use(mw("outer"), mw("inner"))
	worker.MustRegister(reg, func(ctx context.Context, j *job.Job[ImportProduct]) (string, error) {
		return "new handler", nil
	}, worker.WithAliases("legacy.import_product"))
	if err := worker.Register(reg, func(ctx context.Context, j *job.Job[ImportProduct]) (string, error) { return "", nil }); !errors.Is(err, worker.ErrDuplicate) {
		t.Fatalf("duplicate registration: %v", err)
	}
	e.start(reg)
	id, err := e.d.EnqueueRaw(context.Background(), "legacy.import_product", mustMarshal(t, ImportProduct{ExternalID: "1"}))
	if err != nil {
		t.Fatal(err)
	}
	rec := e.waitState(id, job.StateDone, 10*time.Second)
	mu.Lock()
	defer mu.Unlock()
	if rec.Result != "new handler" || fmt.Sprint(order) != "[outer>legacy.import_product inner>legacy.import_product]" {
		t.Fatalf("result %q order %v", rec.Result, order)
	}
}

func mustMarshal(t *testing.T, v any) []byte {
	b, err := wire.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestBulkEnqueue10k(t *testing.T) {
	e := newEnv(t)
	reg := worker.NewRegistry()
	var runs atomic.Int32
	worker.MustRegister(reg, func(ctx context.Context, j *job.Job[ImportProduct]) (string, error) {
		runs.Add(1)
		return "", nil
	})
	const n = 10000
	items := make([]dispatcher.Item, n)
	for i := range items {
		items[i] = dispatcher.Item{Args: ImportProduct{ExternalID: fmt.Sprint(i)}}
	}
	res, err := e.d.EnqueueMany(context.Background(), items)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, r := range res {
		if r.Err != nil || r.ID == "" || seen[r.ID] {
			t.Fatalf("bad result %+v", r)
		}
		seen[r.ID] = true
	}
	e.start(reg)
	testenv.Eventually(t, 60*time.Second, func() bool { return runs.Load() == n }, "%d jobs run (got %d)", n, runs.Load())
}

func TestTimeoutIsRetriedThenDead(t *testing.T) {
	e := newEnv(t)
	reg := worker.NewRegistry()
	worker.MustRegister(reg, func(ctx context.Context, j *job.Job[Flaky]) (string, error) {
		<-ctx.Done()
		return "", ctx.Err()
	})
	e.start(reg)
	id, _ := e.d.Enqueue(context.Background(), Flaky{}, job.WithTimeout(100*time.Millisecond), job.WithMaxRetries(2),
		job.WithRetryPattern(job.RetryPattern{1: 10 * time.Millisecond}))
	rec := e.waitState(id, job.StateDead, 10*time.Second)
	dl := findDead(t, e, id)
	if rec.Attempts != 2 || dl.Reason != wire.ReasonTimeout || !contains(dl.Error, "timeout") {
		t.Fatalf("record %+v letter %+v", rec, dl.DeadLetter)
	}
}

// A job whose id the caller chose carries it as Nats-Msg-Id: publishing it
// again (a retry after a timeout) stores nothing new. Generated ids carry
// none: they are new by construction.
func TestCallerChosenIDIsPublishedOnce(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		id, err := e.d.Enqueue(ctx, ImportProduct{ExternalID: "7"}, job.WithID("order-7-import"))
		if err != nil || id != "order-7-import" {
			t.Fatalf("enqueue %d: %q %v", i, id, err)
		}
	}
	if _, err := e.d.Enqueue(ctx, ImportProduct{ExternalID: "8"}); err != nil {
		t.Fatal(err)
	}
	s, err := e.js.Stream(ctx, wire.MustNames(e.prefix).JobsStream())
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 2 {
		t.Fatalf("jobs stream holds %d messages, want 2 (one per distinct job)", info.State.Msgs)
	}
	reg := worker.NewRegistry()
	var runs atomic.Int32
	worker.MustRegister(reg, func(ctx context.Context, j *job.Job[ImportProduct]) (string, error) {
		runs.Add(1)
		return "", nil
	})
	e.start(reg)
	e.waitState("order-7-import", job.StateDone, 10*time.Second)
	testenv.Eventually(t, 10*time.Second, func() bool { return runs.Load() == 2 }, "2 runs (got %d)", runs.Load())
}
