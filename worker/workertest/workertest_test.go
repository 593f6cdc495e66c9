package workertest_test

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
	"github.com/connector-go/connector/worker"
	"github.com/connector-go/connector/worker/workertest"
)

type Import struct {
	ID   string `msgpack:"id"`
	Mode string `msgpack:"mode"`
}

func (Import) JobName() string { return "test.import" }

var errDown = errors.New("backend down")

func registry(trail *[]string) *worker.Registry {
	reg := worker.NewRegistry()
	reg.Use(func(next worker.Handler) worker.Handler {
		return func(ctx context.Context, m *worker.Message) (string, error) {
			*trail = append(*trail, "middleware "+m.Name)
			return next(ctx, m)
		}
	})
	worker.MustRegister(reg, func(ctx context.Context, j *job.Job[Import]) (string, error) {
		switch j.Args.Mode {
		case "ok":
			return "imported " + j.Args.ID, nil
		case "same":
			return "", job.NothingToDo("%s unchanged", j.Args.ID)
		case "down":
			return "", job.Retry(errDown)
		case "later":
			return "", job.RetryAfter(errDown, 42*time.Second)
		case "locked":
			return "", job.RetryNoCount(errDown, time.Second)
		case "panic":
			panic("boom")
		case "slow":
			<-ctx.Done()
			return "", ctx.Err()
		}
		return "", fmt.Errorf("bad mode %q", j.Args.Mode)
	})
	return reg
}

// Each outcome as the worker judges it, through the registry's middleware.
func TestWorkJudgesLikeTheWorker(t *testing.T) {
	ctx := context.Background()
	var trail []string
	reg := registry(&trail)
	pattern := job.RetryPattern{1: 10 * time.Second, 3: time.Minute}
	cases := []struct {
		name    string
		attempt int
		args    Import
		opts    []job.Option
		want    workertest.Result
	}{
		{"done", 1, Import{ID: "1", Mode: "ok"}, nil, workertest.Result{Kind: workertest.Done, Output: "imported 1"}},
		{"nothing to do", 1, Import{ID: "2", Mode: "same"}, nil, workertest.Result{Kind: workertest.NothingToDo, Output: "2 unchanged"}},
		{"retry by the pattern", 1, Import{Mode: "down"}, []job.Option{job.WithRetryPattern(pattern)}, workertest.Result{Kind: workertest.Retry, Delay: 10 * time.Second, Counted: true}},
		{"retry by the pattern, later step", 3, Import{Mode: "down"}, []job.Option{job.WithRetryPattern(pattern)}, workertest.Result{Kind: workertest.Retry, Delay: time.Minute, Counted: true}},
		{"retry after the error's delay", 1, Import{Mode: "later"}, nil, workertest.Result{Kind: workertest.Retry, Delay: 42 * time.Second, Counted: true}},
		{"retry not counted", 5, Import{Mode: "locked"}, []job.Option{job.WithMaxRetries(5)}, workertest.Result{Kind: workertest.Retry, Delay: time.Second}},
		{"max retries", 3, Import{Mode: "down"}, []job.Option{job.WithMaxRetries(3)}, workertest.Result{Kind: workertest.Dead, Reason: "max_retries"}},
		{"retry forever", 1000, Import{Mode: "down"}, []job.Option{job.WithMaxRetries(0)}, workertest.Result{Kind: workertest.Retry, Delay: job.DefaultRetryPattern.Delay(1000), Counted: true}},
		{"error", 1, Import{Mode: "?"}, nil, workertest.Result{Kind: workertest.Dead, Reason: "error"}},
		{"panic", 1, Import{Mode: "panic"}, nil, workertest.Result{Kind: workertest.Dead, Reason: "panic"}},
		{"timeout", 1, Import{Mode: "slow"}, []job.Option{job.WithTimeout(20 * time.Millisecond)}, workertest.Result{Kind: workertest.Retry, Delay: job.DefaultRetryPattern.Delay(1), Counted: true}},
		{"timeout on the last attempt", 2, Import{Mode: "slow"}, []job.Option{job.WithTimeout(20 * time.Millisecond), job.WithMaxRetries(2)}, workertest.Result{Kind: workertest.Dead, Reason: "timeout"}},
	}
	for _, c := range cases {
		trail = nil
		got := workertest.WorkAttempt(ctx, t, reg, c.attempt, c.args, c.opts...)
		if got.Kind != c.want.Kind || got.Output != c.want.Output || got.Delay != c.want.Delay || got.Counted != c.want.Counted || got.Reason != c.want.Reason {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
		if got.Meta.Attempt != c.attempt || got.Meta.Name != "test.import" || got.Meta.ID == "" {
			t.Errorf("%s: meta %+v", c.name, got.Meta)
		}
		if len(trail) != 1 {
			t.Errorf("%s: middleware ran %d times", c.name, len(trail))
		}
	}
	if got := workertest.Work(ctx, t, reg, Import{Mode: "down"}, job.WithMaxRetries(1)); got.Kind != workertest.Dead || !errors.Is(got.Err, errDown) || !errors.Is(got.Err, job.ErrMaxRetries) {
		t.Errorf("the last attempt's error: %v, want ErrMaxRetries wrapping the handler's", got.Err)
	}
	// Under 1 ms, the timeout still bounds the run (rounded up to 1 ms, not
	// down to 0: no timeout, and a slow job would run unbounded).
	for _, d := range []time.Duration{time.Millisecond, 300 * time.Microsecond} {
		if got := workertest.Work(ctx, t, reg, Import{Mode: "slow"}, job.WithTimeout(d)); !errors.Is(got.Err, job.ErrTimeout) {
			t.Errorf("timeout %s: error %v, want ErrTimeout", d, got.Err)
		}
	}
}

// fakeTB records a Fatalf instead of stopping the test.
type fakeTB struct {
	testing.TB
	fatal string
}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Fatalf(format string, a ...any) {
	f.fatal = fmt.Sprintf(format, a...)
	panic(f)
}

type Unregistered struct{}

func (Unregistered) JobName() string { return "test.unregistered" }

// A job with no handler fails the test, naming it.
func TestWorkWithoutHandlerFails(t *testing.T) {
	f := &fakeTB{TB: t}
	func() {
		defer func() {
			if r := recover(); r != nil && r != f {
				panic(r)
			}
		}()
		workertest.Work(context.Background(), f, worker.NewRegistry(), Unregistered{})
	}()
	if !strings.Contains(f.fatal, "test.unregistered") {
		t.Fatalf("Fatalf: %q", f.fatal)
	}
}

// ImportProduct's handler, tested without NATS or Redis.
func ExampleWork() {
	reg := worker.NewRegistry()
	worker.MustRegister(reg, func(ctx context.Context, j *job.Job[Import]) (string, error) {
		if j.Args.ID == "" {
			return "", job.Retry(errors.New("no id yet"))
		}
		return "imported " + j.Args.ID, nil
	})
	t := &testing.T{} // in a test: the test's t
	fmt.Println(workertest.Work(context.Background(), t, reg, Import{ID: "P-1"}))
	fmt.Println(workertest.Work(context.Background(), t, reg, Import{}, job.WithRetryPattern(job.RetryPattern{1: 30 * time.Second})))
	// Output:
	// done: "imported P-1"
	// retry in 30s (counted: true): no id yet
}

type Seen struct {
	ID string `msgpack:"id"`
}

func (Seen) JobName() string { return "test.seen" }

// seenRegistry registers a handler that reports the job it saw, waiting for
// its context to end up to wait (a timeout shorter than that fails it).
func seenRegistry(seen *job.Meta, ran *int, wait time.Duration) *worker.Registry {
	reg := worker.NewRegistry()
	worker.MustRegister(reg, func(ctx context.Context, j *job.Job[Seen]) (string, error) {
		*seen = j.Meta
		*ran++
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(wait):
		}
		if j.Args.ID == "down" {
			return "", job.Retry(errDown)
		}
		return "seen " + j.Args.ID, nil
	})
	return reg
}

// The handler sees the job as a worker gives it: the fields travel in the
// envelope a dispatcher makes of the options (the identity key computed by
// job.WithIdentityExact, the timeout and retry pattern in milliseconds).
func TestWorkShowsTheJobAsTheWorkerDoes(t *testing.T) {
	ctx := context.Background()
	var seen job.Meta
	var ran int
	reg := seenRegistry(&seen, &ran, 0)
	args := Seen{ID: "P-1"}
	raw, err := wire.Marshal(args) // the dispatcher's encoding
	if err != nil {
		t.Fatal(err)
	}
	res := workertest.Work(ctx, t, reg, args, job.WithIdentityExact(),
		job.WithTimeout(1500*time.Microsecond+time.Second), job.WithRetryPattern(job.RetryPattern{1: 2500 * time.Microsecond}))
	if res.Kind != workertest.Done {
		t.Fatalf("run: %v", res)
	}
	if want := job.IdentityExact(args.JobName(), raw); seen.IdentityKey != want || res.Meta.IdentityKey != want {
		t.Errorf("identity key seen %q (result's meta %q), want %q (job.IdentityExact of the encoded args)", seen.IdentityKey, res.Meta.IdentityKey, want)
	}
	if seen.Timeout != time.Second+2*time.Millisecond {
		t.Errorf("timeout seen %s, want 1.002s (the envelope's milliseconds, rounded up)", seen.Timeout)
	}
	if d := seen.RetryPattern.Delay(1); d != 2*time.Millisecond {
		t.Errorf("retry delay seen %s, want 2ms (the envelope's milliseconds)", d)
	}
	if seen.EnqueuedAt.IsZero() || seen.EnqueuedAt.Nanosecond()%int(time.Millisecond) != 0 {
		t.Errorf("enqueued at %v, want a time in milliseconds", seen.EnqueuedAt)
	}
}

// Options a dispatcher refuses (the envelope would be invalid) fail the
// test rather than run a job no worker would ever see.
func TestWorkRefusesWhatTheDispatcherRefuses(t *testing.T) {
	var seen job.Meta
	var ran int
	reg := seenRegistry(&seen, &ran, 0)
	for name, opt := range map[string]job.Option{
		"negative max retries":    job.WithMaxRetries(-1),
		"id with a dot":           job.WithID("order.42"),
		"channel part not a word": job.WithChannel("root.1shop"),
		"negative retry delay":    job.WithRetryPattern(job.RetryPattern{1: -time.Second}),
		"dedup id header":         job.WithHeader("Nats-Msg-Id", "order-42"),
		"schedule header":         job.WithHeader("Nats-Schedule-Target", "elsewhere"),
	} {
		f := &fakeTB{TB: t}
		func() {
			defer func() {
				if r := recover(); r != nil && r != f {
					panic(r)
				}
			}()
			res := workertest.Work(context.Background(), f, reg, Seen{ID: "x"}, opt)
			t.Errorf("%s: ran (%v), want the test failed", name, res)
		}()
		if f.fatal == "" {
			t.Errorf("%s: no Fatalf", name)
		}
	}
	if ran != 0 {
		t.Errorf("the handler ran %d times", ran)
	}
}

// An attempt past the job's max retries is never run by a worker: a job
// redelivered after its last allowed attempt was lost is dead-lettered
// unrun ("max_retries").
func TestWorkAttemptPastMaxRetriesIsDead(t *testing.T) {
	var seen job.Meta
	var ran int
	reg := seenRegistry(&seen, &ran, 0)
	res := workertest.WorkAttempt(context.Background(), t, reg, 4, Seen{ID: "x"}, job.WithMaxRetries(3))
	if res.Kind != workertest.Dead || res.Reason != "max_retries" || !errors.Is(res.Err, job.ErrMaxRetries) || ran != 0 {
		t.Errorf("attempt 4 of 3: %v (handler ran %d times), want dead (max_retries), unrun", res, ran)
	}
	if res := workertest.WorkAttempt(context.Background(), t, reg, 4, Seen{ID: "x"}, job.WithMaxRetries(0)); res.Kind != workertest.Done {
		t.Errorf("attempt 4 of a job retried forever: %v", res)
	}
}

// The same job enqueued by a dispatcher and run by a worker on NATS shows
// its handler the fields workertest shows, and the options a dispatcher
// refuses are the ones workertest refuses.
func TestWorkMatchesARealWorker(t *testing.T) {
	_, _, js := testenv.JetStream(t)
	rdb, prefix := testenv.Redis(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	metas := make(chan job.Meta, 1)
	reg := worker.NewRegistry()
	worker.MustRegister(reg, func(ctx context.Context, j *job.Job[Seen]) (string, error) {
		select {
		case metas <- j.Meta:
		default:
		}
		return "seen", nil
	})
	w, err := worker.New(js, reg, worker.WithPrefix(prefix), worker.WithRedis(rdb), worker.WithMemoryStorage())
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	wctx, stop := context.WithCancel(ctx)
	ran := make(chan error, 1)
	go func() { ran <- w.Run(wctx) }()
	defer func() { stop(); <-ran }()
	d, err := dispatcher.New(js, dispatcher.WithPrefix(prefix), dispatcher.WithRedis(rdb))
	if err != nil {
		t.Fatal(err)
	}

	args := Seen{ID: "P-1"}
	opts := []job.Option{job.WithIdentityExact(), job.WithChannel("root.shop"), job.WithPriority(3), job.WithMaxRetries(7),
		job.WithDescription("import P-1"), job.WithTimeout(time.Second + 1500*time.Microsecond),
		job.WithRetryPattern(job.RetryPattern{1: 2500 * time.Microsecond, 3: time.Minute})}
	if _, err := d.Enqueue(ctx, args, opts...); err != nil {
		t.Fatal(err)
	}
	var real job.Meta
	select {
	case real = <-metas:
	case <-ctx.Done():
		t.Fatal("the worker did not run the job")
	}
	var ignored job.Meta
	var n int
	got := workertest.Work(ctx, t, seenRegistry(&ignored, &n, 0), args, opts...).Meta
	real.ID, real.EnqueuedAt, got.ID, got.EnqueuedAt = "", time.Time{}, "", time.Time{}
	if fmt.Sprintf("%+v", got) != fmt.Sprintf("%+v", real) {
		t.Errorf("workertest shows the handler\n%+v\nthe worker shows it\n%+v", got, real)
	}

	for name, opt := range map[string]job.Option{
		"negative max retries":    job.WithMaxRetries(-1),
		"id with a dot":           job.WithID("order.42"),
		"channel part not a word": job.WithChannel("root.1shop"),
		"negative retry delay":    job.WithRetryPattern(job.RetryPattern{1: -time.Second}),
		"dedup id header":         job.WithHeader("Nats-Msg-Id", "order-42"),
		"schedule header":         job.WithHeader("Nats-Schedule-Target", "elsewhere"),
	} {
		if _, err := d.Enqueue(ctx, Seen{ID: "x"}, opt); err == nil {
			t.Errorf("%s: the dispatcher enqueued it (TestWorkRefusesWhatTheDispatcherRefuses expects a refusal)", name)
		}
	}
}
