package workertest_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

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
	if got := workertest.Work(ctx, t, reg, Import{Mode: "slow"}, job.WithTimeout(time.Millisecond)); !errors.Is(got.Err, job.ErrTimeout) {
		t.Errorf("timeout error: %v, want ErrTimeout", got.Err)
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
