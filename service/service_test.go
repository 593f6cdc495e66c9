package service_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/connector-go/connector/events"
	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/job"
	"github.com/connector-go/connector/service"
	"github.com/connector-go/connector/worker"
	"github.com/nats-io/nats.go/jetstream"
)

type exportPartner struct {
	ID string `msgpack:"id"`
}

func (exportPartner) JobName() string { return "test.export_partner" }

func get(url string) (int, string) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// proc is a service.Run in the background.
type proc struct {
	prefix string
	base   string // http://<health and metrics address>
	nats   *testenv.NATSServer
	cancel context.CancelFunc
	ended  chan struct{} // closed when Run has returned, with err
	err    error
}

// wait waits for Run to return and returns its error.
func (p *proc) wait(t *testing.T) error {
	t.Helper()
	select {
	case <-p.ended:
		return p.err
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return")
		return nil
	}
}

// stop cancels Run's context and returns its error.
func (p *proc) stop(t *testing.T) error {
	t.Helper()
	p.cancel()
	return p.wait(t)
}

// run starts service.Run on a fresh embedded NATS and the test's Redis
// prefix, with extra flags.
func run(t *testing.T, reg *worker.Registry, extra []string, setups ...service.Setup) *proc {
	t.Helper()
	t.Setenv("OTEL_TRACES_EXPORTER", "none")
	p := &proc{nats: testenv.StartNATS(t)}
	_, p.prefix = testenv.Redis(t)
	addr := testenv.FreeAddr(t)
	p.base = "http://" + addr
	args := append([]string{"--nats", p.nats.URL, "--redis", testenv.RedisURL(t), "--prefix", p.prefix,
		"--http", addr, "--log-level", "warn", "--ack-wait", "5s", "--shutdown-grace", "5s"}, extra...)
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel, p.ended = cancel, make(chan struct{})
	go func() {
		defer close(p.ended)
		p.err = service.Run(ctx, args, func(string) string { return "" }, reg, setups...)
	}()
	t.Cleanup(func() { _ = p.stop(t) })
	return p
}

// A connector's own process: its jobs, its listener (enqueuing a job for
// each event) and a service of its own run on the process's connections,
// with health and metrics; a cancelled context shuts it down gracefully.
func TestRunsJobsListenersAndServices(t *testing.T) {
	exported := make(chan string, 4)
	reg := worker.NewRegistry()
	worker.MustRegister(reg, func(ctx context.Context, j *job.Job[exportPartner]) (string, error) {
		exported <- j.Args.ID
		return "exported", nil
	})
	serviceStopped := make(chan struct{})
	var setupEnv *service.Env
	p := run(t, reg, nil, func(ctx context.Context, env *service.Env) error {
		setupEnv = env
		l, err := env.Listeners()
		if err != nil {
			return err
		}
		if again, _ := env.Listeners(); again != l {
			t.Error("Listeners: a second call built another set")
		}
		env.Go(func(ctx context.Context) error {
			<-ctx.Done()
			close(serviceStopped)
			return nil
		})
		return l.On("export_partner", "res.partner", "", func(ctx context.Context, ev events.Event) error {
			_, err := env.Dispatcher.Enqueue(ctx, exportPartner{ID: ev.RecordID})
			return err
		}, events.WithPartitions(1))
	})
	p.ready(t)

	// Another service of the company publishes an event.
	p.publish(t, events.Event{Model: "res.partner", Name: events.Write, RecordID: "42"})
	select {
	case id := <-exported:
		if id != "42" {
			t.Fatalf("exported %q, want 42", id)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the event's job did not run")
	}
	testenv.Eventually(t, 10*time.Second, func() bool {
		_, m := get(p.base + "/metrics")
		return strings.Contains(m, `connector_events_handled_total{`) && strings.Contains(m, `event_listener="export_partner"`) &&
			strings.Contains(m, `connector_jobs_enqueued_total{`) && strings.Contains(m, `connector_jobs_ended_total{`)
	}, "the listener's, the dispatcher's and the worker's metrics on /metrics")

	if setupEnv.Prefix != p.prefix || !setupEnv.RegisterSchedules {
		t.Errorf("Env: prefix %q (want %q), register schedules %v (want the default, true)", setupEnv.Prefix, p.prefix, setupEnv.RegisterSchedules)
	}
	// Once started, the process takes no new listeners.
	if again, err := setupEnv.Listeners(); err != nil || again == nil {
		t.Errorf("Listeners after start, already built: %v, %v", again, err)
	}

	if err := p.stop(t); err != nil {
		t.Fatalf("Run after a graceful shutdown: %v", err)
	}
	select {
	case <-serviceStopped:
	default:
		t.Fatal("Run returned before the setup's service stopped")
	}
}

// ready waits until the process answers /readyz with 200.
func (p *proc) ready(t *testing.T) {
	t.Helper()
	testenv.Eventually(t, 20*time.Second, func() bool { code, _ := get(p.base + "/readyz"); return code == http.StatusOK }, "/readyz 200")
}

// publish publishes ev in the process's deployment, as another service of
// the company would.
func (p *proc) publish(t *testing.T, ev events.Event) {
	t.Helper()
	pub, err := events.NewPublisher(p.js(t), events.WithPrefix(p.prefix))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pub.Publish(context.Background(), ev); err != nil {
		t.Fatal(err)
	}
}

// js connects to the process's NATS server, as another service would.
func (p *proc) js(t *testing.T) jetstream.JetStream { return jsOf(t, p.nats) }

// jsOf connects to srv, as another service would.
func jsOf(t *testing.T, srv *testenv.NATSServer) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(srv.Connect(t))
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// After the setups, Env takes no new listeners: ErrStarted. (And Env
// carries the flags a setup may need.)
func TestListenersAfterStart(t *testing.T) {
	envs := make(chan *service.Env, 1)
	p := run(t, worker.NewRegistry(), []string{"--register-schedules=false"}, func(_ context.Context, env *service.Env) error {
		envs <- env
		return nil
	})
	env := <-envs
	if env.RegisterSchedules {
		t.Error("Env.RegisterSchedules under --register-schedules=false")
	}
	p.ready(t)
	if _, err := env.Listeners(); !errors.Is(err, service.ErrStarted) {
		t.Fatalf("Listeners after start: %v, want ErrStarted", err)
	}
}

// The listeners' handlers get the process's -shutdown-grace at shutdown,
// as its jobs do, not the events package's default of 30 s.
func TestListenersShareTheShutdownGrace(t *testing.T) {
	handling := make(chan struct{}, 1)
	p := run(t, worker.NewRegistry(), []string{"--shutdown-grace", "1s"}, func(_ context.Context, env *service.Env) error {
		l, err := env.Listeners()
		if err != nil {
			return err
		}
		return l.On("slow", "res.partner", "", func(ctx context.Context, _ events.Event) error {
			handling <- struct{}{}
			<-ctx.Done() // a handler that ends only when its context does
			return ctx.Err()
		}, events.WithPartitions(1))
	})
	p.ready(t)
	p.publish(t, events.Event{Model: "res.partner", Name: events.Write, RecordID: "1"})
	select {
	case <-handling:
	case <-time.After(20 * time.Second):
		t.Fatal("the handler did not start")
	}
	begin := time.Now()
	p.cancel()
	select {
	case <-p.ended:
	case <-time.After(20 * time.Second): // the events package's default grace is 30 s
		t.Fatal("Run did not return within 20 s of its shutdown with a 1 s grace")
	}
	t.Logf("Run returned %v after the shutdown began", time.Since(begin).Round(time.Millisecond))
}

// NATS or Redis unreachable at start: Run returns the error (Main exits
// with status 1) and the process's supervisor starts it again; no setup
// runs. (Once running, an outage pauses work instead: the worker's tests.)
func TestUnreachableAtStartIsAnError(t *testing.T) {
	t.Setenv("OTEL_TRACES_EXPORTER", "none")
	srv := testenv.StartNATS(t)
	_, prefix := testenv.Redis(t)
	noEnv := func(string) string { return "" }
	for _, c := range []struct{ name, nats, redis, wait, want string }{
		{"NATS", "nats://" + testenv.FreeAddr(t), testenv.RedisURL(t), "0", "connect: nats"},
		{"Redis", srv.URL, "redis://" + testenv.FreeAddr(t) + "/0", "0", "connect: redis"},
		{"NATS after waiting", "nats://" + testenv.FreeAddr(t), testenv.RedisURL(t), "1s", "gave up waiting"},
		{"Redis after waiting", srv.URL, "redis://" + testenv.FreeAddr(t) + "/0", "1s", "gave up waiting"},
	} {
		ran := false
		done := make(chan error, 1)
		go func() {
			done <- service.Run(context.Background(), []string{"--nats", c.nats, "--redis", c.redis, "--prefix", prefix,
				"--http", "", "--log-level", "error", "--start-wait", c.wait}, noEnv, worker.NewRegistry(),
				func(context.Context, *service.Env) error { ran = true; return nil })
		}()
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), c.want) || ran {
				t.Errorf("%s unreachable: Run %v (setup ran: %v), want an error with %q before any setup", c.name, err, ran, c.want)
			}
		case <-time.After(60 * time.Second):
			t.Errorf("%s unreachable: Run did not return", c.name)
		}
	}
}

// A setup's error stops the process before it starts, and is Run's error.
func TestSetupErrorStopsTheProcess(t *testing.T) {
	broken := errors.New("catalog URL missing")
	p := run(t, worker.NewRegistry(), nil, func(context.Context, *service.Env) error { return broken })
	if err := p.wait(t); !errors.Is(err, broken) {
		t.Fatalf("Run: %v, want the setup's error", err)
	}
}

// A service that fails stops the process (the worker drains) and its
// error is Run's.
func TestServiceErrorStopsTheProcess(t *testing.T) {
	lost := errors.New("lost the backend's webhook socket")
	p := run(t, worker.NewRegistry(), nil, func(_ context.Context, env *service.Env) error {
		env.Go(func(context.Context) error { return lost })
		return nil
	})
	if err := p.wait(t); !errors.Is(err, lost) {
		t.Fatalf("Run: %v, want the service's error", err)
	}
}
