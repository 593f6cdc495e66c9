package app_test

import (
	"context"
	"errors"
	"flag"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/connector-go/connector/internal/app"
	"github.com/connector-go/connector/internal/records"
	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/internal/wire"
	"github.com/connector-go/connector/job"
	"github.com/connector-go/connector/worker"
	"github.com/nats-io/nats.go"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"
)

func bind(t *testing.T, env map[string]string, args ...string) app.Config {
	t.Helper()
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var cfg app.Config
	cfg.Bind(fs, func(k string) string { return env[k] })
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// serversConfig is the configuration of a process on a NATS server of
// its own and the test Redis, under a prefix of its own.
func serversConfig(t *testing.T) (app.Config, *testenv.NATSServer, string) {
	t.Helper()
	srv := testenv.StartNATS(t)
	_, prefix := testenv.Redis(t)
	cfg := bind(t, map[string]string{
		"CONNECTOR_NATS_URL": srv.URL, "CONNECTOR_REDIS_URL": testenv.RedisURL(t), "CONNECTOR_PREFIX": prefix,
	})
	return cfg, srv, prefix
}

// Retention and schedule registration come from flags and environment,
// with the documented defaults.
func TestBindRetentionAndSchedules(t *testing.T) {
	if cfg := bind(t, nil); cfg.RecordTTL != records.DefaultTTL || !cfg.RegisterSchedules {
		t.Errorf("defaults: record TTL %v, register schedules %v; want %v, true", cfg.RecordTTL, cfg.RegisterSchedules, records.DefaultTTL)
	}
	cfg := bind(t, map[string]string{"CONNECTOR_RECORD_TTL": "36h", "CONNECTOR_REGISTER_SCHEDULES": "false"})
	if cfg.RecordTTL != 36*time.Hour || cfg.RegisterSchedules {
		t.Errorf("from env: record TTL %v, register schedules %v; want 36h, false", cfg.RecordTTL, cfg.RegisterSchedules)
	}
	cfg = bind(t, map[string]string{"CONNECTOR_RECORD_TTL": "36h", "CONNECTOR_REGISTER_SCHEDULES": "false"},
		"--record-ttl", "2h", "--register-schedules=true")
	if cfg.RecordTTL != 2*time.Hour || !cfg.RegisterSchedules {
		t.Errorf("flags over env: record TTL %v, register schedules %v; want 2h, true", cfg.RecordTTL, cfg.RegisterSchedules)
	}
}

type ttlJob struct{}

func (ttlJob) JobName() string { return "app.ttl" }

// The record TTL reaches both sides of a job record: the producer's (the
// Conns' dispatcher) and the workers' (RunWorker); and RunWorker serves
// the health endpoint on a listener it is given.
func TestRecordTTLAndHTTPListener(t *testing.T) {
	srv := testenv.StartNATS(t)
	rdb, prefix := testenv.Redis(t)
	const ttl = 90 * time.Minute
	cfg := bind(t, map[string]string{
		"CONNECTOR_NATS_URL": srv.URL, "CONNECTOR_REDIS_URL": testenv.RedisURL(t), "CONNECTOR_PREFIX": prefix,
		"CONNECTOR_RECORD_TTL": ttl.String(),
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.HTTPAddr, cfg.HTTPListener = "", ln
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	conns, err := app.Open(ctx, &cfg, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conns.Close()
	reg := worker.NewRegistry()
	worker.MustRegister(reg, func(context.Context, *job.Job[ttlJob]) (string, error) { return "done", nil })
	done := make(chan error, 1)
	go func() { done <- app.RunWorker(ctx, &cfg, conns, reg) }()
	defer func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("RunWorker: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("RunWorker did not return")
		}
	}()
	d, err := conns.Dispatcher(&cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = d.Close(context.Background()) }()
	// A caller-chosen id: the record has keys of its own.
	const id = "ttl-job-1"
	if _, err := d.Enqueue(ctx, ttlJob{}, job.WithID(id)); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 20*time.Second, func() bool {
		rec, err := d.Job(ctx, id)
		return err == nil && rec.State == job.StateDone
	}, "job %s done", id)
	names := wire.MustNames(prefix)
	for _, key := range []string{names.RedisKey("job", id) + ":q", names.RedisKey("job", id)} {
		var left time.Duration
		testenv.Eventually(t, 5*time.Second, func() bool {
			left = rdb.PTTL(ctx, key).Val()
			return left > 0
		}, "key %s with a TTL", key)
		if left > ttl || left < ttl-time.Minute {
			t.Errorf("%s expires in %v, want the configured %v (default %v)", key, left, ttl, records.DefaultTTL)
		}
	}

	resp, err := http.Get("http://" + ln.Addr().String() + "/livez")
	if err != nil {
		t.Fatalf("health on the given listener: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/livez: %s", resp.Status)
	}
}

// Dead letters' and events' retention come from --dead-max-age /
// CONNECTOR_DEAD_MAX_AGE and --events-max-age / CONNECTOR_EVENTS_MAX_AGE
// and reach the streams a worker provisions.
func TestMaxAgesReachTheStreams(t *testing.T) {
	def := bind(t, nil)
	if sc, err := def.Streams(); err != nil || sc.DeadMaxAge != 0 || sc.EventsMaxAge != 7*24*time.Hour {
		t.Fatalf("default max ages: dead %v, events %v (%v), want 0 (forever) and 168h", sc.DeadMaxAge, sc.EventsMaxAge, err)
	}
	cfg := bind(t, map[string]string{"CONNECTOR_DEAD_MAX_AGE": "720h", "CONNECTOR_EVENTS_MAX_AGE": "336h"})
	sc, err := cfg.Streams()
	if err != nil || sc.DeadMaxAge != 720*time.Hour || sc.EventsMaxAge != 336*time.Hour {
		t.Fatalf("from env: dead %v, events %v (%v)", sc.DeadMaxAge, sc.EventsMaxAge, err)
	}
	_, _, js := testenv.JetStream(t)
	prefix := testenv.Prefix(t)
	w, err := worker.New(js, worker.NewRegistry(), worker.WithPrefix(prefix), worker.WithDeadMaxAge(sc.DeadMaxAge),
		worker.WithEventsMaxAge(sc.EventsMaxAge))
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Setup(context.Background()); err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(context.Background(), wire.MustNames(prefix).DeadStream())
	if err != nil {
		t.Fatal(err)
	}
	if got := s.CachedInfo().Config.MaxAge; got != 720*time.Hour {
		t.Fatalf("dead-letter stream MaxAge %v, want 720h", got)
	}
	s, err = js.Stream(context.Background(), wire.MustNames(prefix).EventsStream())
	if err != nil {
		t.Fatal(err)
	}
	if got := s.CachedInfo().Config.MaxAge; got != 336*time.Hour {
		t.Fatalf("events stream MaxAge %v, want 336h", got)
	}
}

// slowCloseListener takes a while to close, as a listener may under load,
// and says when it has.
type slowCloseListener struct {
	net.Listener
	closed atomic.Bool
}

func (l *slowCloseListener) Close() error {
	time.Sleep(100 * time.Millisecond)
	err := l.Listener.Close()
	l.closed.Store(true)
	return err
}

// RunWorker returns only once its health server has shut down: a caller
// closing the listener or exiting right after it finds the server stopped,
// and a normal stop logs no error (it used to log "health endpoint
// stopped: use of closed network connection" when `connector dev`'s
// deferred Close beat the server's shutdown).
func TestRunWorkerReturnsAfterTheHealthServerStopped(t *testing.T) {
	cfg, _, _ := serversConfig(t)
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := &slowCloseListener{Listener: inner}
	defer inner.Close()
	cfg.HTTPAddr, cfg.HTTPListener = "", ln
	core, logs := observer.New(zap.WarnLevel)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	conns, err := app.Open(ctx, &cfg, zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	defer conns.Close()
	done := make(chan error, 1)
	go func() { done <- app.RunWorker(ctx, &cfg, conns, worker.NewRegistry()) }()
	testenv.Eventually(t, 20*time.Second, func() bool {
		resp, err := http.Get("http://" + inner.Addr().String() + "/livez")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, "health server up")
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("RunWorker: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("RunWorker did not return")
	}
	if !ln.closed.Load() {
		t.Error("RunWorker returned before its health server had shut down (listener still open)")
	}
	for _, e := range logs.FilterMessage("health endpoint stopped").All() {
		t.Errorf("logged on a normal stop: %s %v", e.Message, e.ContextMap())
	}
}

// Conns.Close returns once the NATS connection has drained: what was
// published last has reached the server, and the connection is closed
// (Drain alone returns at once and drains in the background, which a
// process exiting next would cut short).
func TestConnsCloseWaitsForTheDrain(t *testing.T) {
	cfg, srv, prefix := serversConfig(t)
	conns, err := app.Open(context.Background(), &cfg, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	obs := srv.Connect(t)
	var got atomic.Int64
	sub, err := obs.Subscribe(prefix+".drain", func(*nats.Msg) { got.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := obs.Flush(); err != nil {
		t.Fatal(err)
	}
	const n = 5000
	payload := make([]byte, 1024)
	for i := 0; i < n; i++ {
		if err := conns.NC.Publish(prefix+".drain", payload); err != nil {
			t.Fatal(err)
		}
	}
	conns.Close()
	if !conns.NC.IsClosed() {
		t.Errorf("Close returned with the connection %s, want closed (drained)", conns.NC.Status())
	}
	testenv.Eventually(t, 10*time.Second, func() bool { return got.Load() == n }, "all %d messages published before Close received", n)
}

// A NATS connection that nats.go closes for good (it gives up after two
// identical authorization errors with a password given as a value) never
// comes back: RunWorker stops with ErrNATSClosed, so that the process
// exits and its supervisor starts it again, instead of a worker that is
// live and never ready again.
func TestRunWorkerStopsWhenNATSIsClosedForGood(t *testing.T) {
	cfg, _, _ := serversConfig(t)
	cfg.HTTPAddr = ""
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	conns, err := app.Open(ctx, &cfg, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer conns.Close()
	reg := worker.NewRegistry()
	worker.MustRegister(reg, func(context.Context, *job.Job[ttlJob]) (string, error) { return "done", nil })
	done := make(chan error, 1)
	go func() { done <- app.RunWorker(ctx, &cfg, conns, reg) }()
	// Running: a job ran.
	d, err := conns.Dispatcher(&cfg)
	if err != nil {
		t.Fatal(err)
	}
	id, err := d.Enqueue(ctx, ttlJob{})
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 20*time.Second, func() bool {
		rec, err := d.Job(ctx, id)
		return err == nil && rec.State == job.StateDone
	}, "a job ran")
	_ = d.Close(ctx)
	conns.NC.Close()
	select {
	case err := <-done:
		if !errors.Is(err, app.ErrNATSClosed) {
			t.Fatalf("RunWorker after its connection closed: %v, want ErrNATSClosed", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("RunWorker went on with a closed NATS connection")
	}
}

// A worker whose health and metrics address cannot be listened on (taken,
// or a typo such as CONNECTOR_HTTP_ADDR=8080) does not start: it used to
// log one error and run on without /livez, /readyz and /metrics (a pod
// never ready, yet running jobs; no metrics for the autoscaler).
func TestRunWorkerFailsWhenItCannotServeHealth(t *testing.T) {
	srv := testenv.StartNATS(t)
	_, prefix := testenv.Redis(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	for _, addr := range []string{busy.Addr().String(), "8080"} {
		cfg := bind(t, map[string]string{
			"CONNECTOR_NATS_URL": srv.URL, "CONNECTOR_REDIS_URL": testenv.RedisURL(t), "CONNECTOR_PREFIX": prefix,
			"CONNECTOR_HTTP_ADDR": addr,
		})
		ctx, cancel := context.WithCancel(context.Background())
		conns, err := app.Open(ctx, &cfg, zap.NewNop())
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- app.RunWorker(ctx, &cfg, conns, worker.NewRegistry()) }()
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), addr) {
				t.Errorf("CONNECTOR_HTTP_ADDR=%s: RunWorker %v, want an error naming the address", addr, err)
			}
		case <-time.After(15 * time.Second):
			t.Errorf("CONNECTOR_HTTP_ADDR=%s: RunWorker runs without its health endpoint", addr)
			cancel()
			<-done
		}
		cancel()
		conns.Close()
	}
}
