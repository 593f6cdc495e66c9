package service_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/connector-go/connector/dispatcher"
	"github.com/connector-go/connector/events"
	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/internal/wire"
	"github.com/connector-go/connector/job"
	"github.com/connector-go/connector/service"
	"github.com/connector-go/connector/worker"
)

// waitEnded waits for Run to return, at most 20 s: a Run still going then
// runs on without the part that ended.
func waitEnded(t *testing.T, p *proc, what string) error {
	t.Helper()
	select {
	case <-p.ended:
		return p.err
	case <-time.After(20 * time.Second):
		t.Fatalf("Run runs on after %s", what)
		return nil
	}
}

// A service that returns nil while the process runs has ended, and the
// process is no longer whole: it stops, with an error that says so (status
// 1), rather than run on without it, or exit 0 as after a SIGTERM. So does
// one that returns a context error of its own (an HTTP call's, wrapping
// context.Canceled) while the process's context lives: it used to pass for
// the graceful stop and end the process with status 0.
func TestServiceEndingEarlyStopsTheProcess(t *testing.T) {
	for _, c := range []struct {
		name string
		ret  error
	}{
		{"nil", nil},
		{"its own cancellation", fmt.Errorf("fetch the catalog: %w", context.Canceled)},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := run(t, worker.NewRegistry(), nil, func(_ context.Context, env *service.Env) error {
				env.Go(func(context.Context) error { return c.ret })
				return nil
			})
			err := waitEnded(t, p, "its service returned "+c.name)
			if err == nil {
				t.Fatal("Run: nil (exit 0) after a service ended on its own, want an error")
			}
			if c.ret == nil && !errors.Is(err, service.ErrServiceEnded) {
				t.Errorf("Run: %v, want ErrServiceEnded", err)
			}
			t.Logf("Run: %v", err)
		})
	}
	// A service returning nil once its context ends is the graceful stop.
	p := run(t, worker.NewRegistry(), nil, func(_ context.Context, env *service.Env) error {
		env.Go(func(ctx context.Context) error { <-ctx.Done(); return nil })
		env.Go(func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() })
		return nil
	})
	p.ready(t)
	if err := p.stop(t); err != nil {
		t.Fatalf("Run after a graceful stop: %v", err)
	}
}

type slowExport struct{}

func (slowExport) JobName() string { return "test.slow_export" }

// A failing service stops the process as a SIGTERM does: not ready at
// once, and the job running then gets its grace and completes (its
// context not cancelled); the service's error is Run's.
func TestServiceErrorLetsRunningJobsFinish(t *testing.T) {
	started, release := make(chan struct{}), make(chan struct{})
	cancelled := make(chan bool, 1)
	reg := worker.NewRegistry()
	worker.MustRegister(reg, func(ctx context.Context, _ *job.Job[slowExport]) (string, error) {
		close(started)
		select {
		case <-release:
			cancelled <- false
			return "exported", nil
		case <-ctx.Done():
			cancelled <- true
			return "", ctx.Err()
		}
	})
	lost := errors.New("lost the backend's webhook socket")
	var d *dispatcher.Dispatcher
	p := run(t, reg, []string{"--shutdown-grace", "30s"}, func(_ context.Context, env *service.Env) error {
		d = env.Dispatcher
		env.Go(func(ctx context.Context) error {
			select {
			case <-started:
				return lost
			case <-ctx.Done():
				return nil
			}
		})
		return nil
	})
	p.ready(t)
	if _, err := d.Enqueue(context.Background(), slowExport{}); err != nil {
		t.Fatal(err)
	}
	<-started
	testenv.Eventually(t, 10*time.Second, func() bool { code, _ := get(p.base + "/readyz"); return code != http.StatusOK }, "not ready once the service failed")
	select {
	case <-p.ended:
		t.Fatalf("Run returned (%v) while a job ran, within its grace", p.err)
	default:
	}
	close(release)
	if err := waitEnded(t, p, "its service failed"); !errors.Is(err, lost) {
		t.Fatalf("Run: %v, want the service's error", err)
	}
	if <-cancelled {
		t.Fatal("the running job's context was cancelled within its grace")
	}
}

// A listener defined differently in the stream (ErrListenerConflict) fails
// the start: the process stops with that error instead of running its jobs
// without the listener.
func TestListenerConflictStopsTheProcess(t *testing.T) {
	on := func(model string) service.Setup {
		return func(_ context.Context, env *service.Env) error {
			l, err := env.Listeners()
			if err != nil {
				return err
			}
			return l.On("export_partner", model, "", func(context.Context, events.Event) error { return nil }, events.WithPartitions(1))
		}
	}
	first := run(t, worker.NewRegistry(), nil, on("res.partner"))
	first.ready(t)
	names := wire.MustNames(first.prefix)
	testenv.Eventually(t, 20*time.Second, func() bool {
		_, err := first.js(t).Consumer(context.Background(), names.EventsStream(), events.ConsumerName("export_partner", 0, 1))
		return err == nil
	}, "the first definition's consumer")
	if err := first.stop(t); err != nil {
		t.Fatal(err)
	}
	second := runOn(t, first, worker.NewRegistry(), on("res.users"))
	if err := waitEnded(t, second, "its listeners failed"); !errors.Is(err, events.ErrListenerConflict) {
		t.Fatalf("Run: %v, want ErrListenerConflict", err)
	}
}

// runOn is run on the NATS server and prefix of an earlier proc.
func runOn(t *testing.T, earlier *proc, reg *worker.Registry, setups ...service.Setup) *proc {
	t.Helper()
	addr := testenv.FreeAddr(t)
	p := &proc{nats: earlier.nats, prefix: earlier.prefix, base: "http://" + addr, ended: make(chan struct{})}
	args := []string{"--nats", p.nats.URL, "--redis", testenv.RedisURL(t), "--prefix", p.prefix,
		"--http", addr, "--log-level", "warn", "--ack-wait", "5s", "--shutdown-grace", "5s"}
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	go func() {
		defer close(p.ended)
		p.err = service.Run(ctx, args, func(string) string { return "" }, reg, setups...)
	}()
	t.Cleanup(func() { _ = p.stop(t) })
	return p
}
