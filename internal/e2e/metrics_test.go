package e2e_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/connector-go/connector/bindings"
	"github.com/connector-go/connector/events"
	"github.com/connector-go/connector/internal/app"
	"github.com/connector-go/connector/internal/telemetry"
	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/job"
	"github.com/connector-go/connector/worker"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// jobSlow blocks until the test releases it.
type jobSlow struct{}

func (jobSlow) JobName() string { return "e2e.slow" }

// appWorker is app.RunWorker running in the background.
type appWorker struct {
	cfg   *app.Config
	conns *app.Conns
	base  string // http://host:port of /livez, /readyz, /metrics
	stop  func() error
}

// startApp runs app.RunWorker for reg on e's connections (Redis replaced
// by rdb when not nil) with Prometheus metrics, on a free loopback port,
// and waits until /livez answers. extra services run beside the worker.
func (e *env) startApp(reg *worker.Registry, log *zap.Logger, rdb redis.UniversalClient, extra ...func(*app.Conns) app.Service) *appWorker {
	e.t.Helper()
	ctx := context.Background()
	tel, err := telemetry.Setup(ctx, telemetry.Config{ServiceName: "e2e-worker", Prometheus: true, TracesExporter: telemetry.ExporterNone})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = tel.Shutdown(context.Background()) })
	if rdb == nil {
		rdb = e.rdb
	}
	if log == nil {
		log = quietLogger(e.t)
	}
	a := &appWorker{
		cfg: &app.Config{
			Prefix: e.prefix, Replicas: 1, Concurrency: 8, AckWait: 10 * time.Second,
			ShutdownGrace: 10 * time.Second, HTTPAddr: testenv.FreeAddr(e.t), LogLevel: "info", LogFormat: "json",
			Provision: false, ServiceName: "e2e-worker",
			// The channels the tests' jobs name: the worker's metrics
			// carry the configured channel a job ran under.
			Channels: "root, root.shop, root.slow",
		},
		conns: &app.Conns{Log: log, NC: e.nc, JS: e.js, Redis: rdb, Telemetry: tel},
	}
	a.base = "http://" + a.cfg.HTTPAddr
	var services []app.Part
	for _, f := range extra {
		services = append(services, f(a.conns))
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- app.RunWorker(rctx, a.cfg, a.conns, reg, services...) }()
	stopped := false
	var stopErr error
	a.stop = func() error {
		if !stopped {
			stopped = true
			cancel()
			select {
			case stopErr = <-done:
			case <-time.After(30 * time.Second):
				stopErr = errors.New("RunWorker did not return")
			}
		}
		return stopErr
	}
	e.t.Cleanup(func() {
		if err := a.stop(); err != nil {
			e.t.Errorf("RunWorker: %v", err)
		}
	})
	testenv.Eventually(e.t, 10*time.Second, func() bool {
		select {
		case err := <-done:
			e.t.Fatalf("RunWorker returned early: %v", err)
		default:
		}
		code, _ := httpGet(e.t, a.base+"/livez")
		return code == http.StatusOK
	}, "/livez answers")
	return a
}

// readyz returns the status code and the decoded body of /readyz.
func readyz(t *testing.T, base string) (int, telemetry.ReadyReport) {
	t.Helper()
	code, body := httpGet(t, base+"/readyz")
	var r telemetry.ReadyReport
	if code != 0 {
		if err := json.Unmarshal([]byte(body), &r); err != nil {
			t.Fatalf("/readyz body %q: %v", body, err)
		}
	}
	return code, r
}

// app.RunWorker serves /metrics with the series of docs/observability.md:
// jobs that succeed, retry and die, an event handled by a listener, a job
// running while scraped; then shuts down, /readyz saying "draining" while
// the running job finishes.
func TestRunWorkerMetrics(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	release := make(chan struct{}) // one send lets one slow job finish
	started := make(chan struct{}, 1)
	reg := worker.NewRegistry()
	worker.MustRegister(reg, func(ctx context.Context, j *job.Job[jobA]) (string, error) {
		time.Sleep(20 * time.Millisecond) // a measurable duration
		return "ok", nil
	})
	worker.MustRegister(reg, func(ctx context.Context, j *job.Job[jobFail]) (string, error) {
		if j.Meta.Attempt <= j.Args.Retries {
			return "", job.RetryAfter(errors.New(j.Args.Msg), 10*time.Millisecond)
		}
		if j.Args.Retries > 0 {
			return "ok after retry", nil
		}
		return "", errors.New(j.Args.Msg)
	})
	worker.MustRegister(reg, func(ctx context.Context, j *job.Job[jobSlow]) (string, error) {
		started <- struct{}{}
		<-release
		return "slow done", nil
	})
	handled := make(chan string, 1)
	listen := func(c *app.Conns) app.Service {
		l := e.listeners(c.JS, c.Redis, c.Log, events.WithMeterProvider(c.Telemetry.MeterProvider), events.WithAckWait(5*time.Second))
		if err := l.On("e2e_listener", "sale.order", "", func(ctx context.Context, ev events.Event) error {
			handled <- ev.RecordID
			return nil
		}, events.WithPartitions(1)); err != nil {
			t.Fatal(err)
		}
		return l.Run
	}
	a := e.startApp(reg, nil, nil, listen)
	d, err := a.conns.Dispatcher(a.cfg) // counts enqueued jobs in the same registry
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() bool { code, _ := readyz(t, a.base); return code == http.StatusOK }, "/readyz 200")

	var ids []string
	enqueue := func(args job.Args, opts ...job.Option) string {
		t.Helper()
		id, err := d.Enqueue(ctx, args, opts...)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
		return id
	}
	var okIDs []string
	for i := range 3 {
		okIDs = append(okIDs, enqueue(jobA{Order: fmt.Sprint(i)}))
	}
	retryID := enqueue(jobFail{Msg: "busy", Retries: 1}, job.WithChannel("root.shop"))
	deadID := enqueue(jobFail{Msg: "broken"}, job.WithChannel("root.shop"))
	slowID := enqueue(jobSlow{}, job.WithChannel("root.slow"))
	if _, err := e.publisher(nil).Publish(ctx, events.Event{Model: "sale.order", Name: events.Create, RecordID: "SO1"}); err != nil {
		t.Fatal(err)
	}
	for _, id := range append(okIDs, retryID) {
		waitState(t, d, id, job.StateDone)
	}
	waitState(t, d, deadID, job.StateDead)
	<-started
	select {
	case <-handled:
	case <-time.After(10 * time.Second):
		t.Fatal("event not handled")
	}

	// While the slow job runs: in flight, and pending for its consumer.
	var m metrics
	testenv.Eventually(t, 10*time.Second, func() bool {
		m, _ = scrape(t, a.base)
		return m.value(t, "connector_events_handled_total", "event_listener", "e2e_listener") == 1
	}, "events handled counted")
	if got := m.value(t, "connector_jobs_inflight", "job_channel", "root.slow"); got != 1 {
		t.Errorf("inflight{root.slow} = %v, want 1", got)
	}
	if got := m.sum("connector_consumer_pending"); got != 1 {
		t.Errorf("consumer_pending summed over consumers = %v while one job runs, want 1", got)
	}
	release <- struct{}{}
	waitState(t, d, slowID, job.StateDone)

	m, text := scrape(t, a.base)
	type series struct {
		name   string
		labels []string
		want   float64
	}
	a1 := []string{"job_name", "e2e.a", "job_channel", "root"}
	fail := []string{"job_name", "e2e.fail", "job_channel", "root.shop"}
	with := func(l []string, kv ...string) []string { return append(append([]string{}, l...), kv...) }
	for _, s := range []series{
		{"connector_jobs_enqueued_total", a1, 3},
		{"connector_jobs_enqueued_total", fail, 2},
		{"connector_jobs_started_total", a1, 3},
		{"connector_jobs_started_total", fail, 3}, // the retried job twice, the dead one once
		{"connector_jobs_ended_total", with(a1, "job_outcome", "succeeded"), 3},
		{"connector_jobs_ended_total", with(fail, "job_outcome", "retried"), 1},
		{"connector_jobs_ended_total", with(fail, "job_outcome", "succeeded"), 1},
		{"connector_jobs_ended_total", with(fail, "job_outcome", "dead"), 1},
		{"connector_jobs_ended_total", []string{"job_name", "e2e.slow", "job_channel", "root.slow", "job_outcome", "succeeded"}, 1},
		{"connector_job_duration_seconds_count", with(a1, "job_outcome", "succeeded"), 3},
		{"connector_job_duration_seconds_count", with(fail, "job_outcome", "dead"), 1},
		{"connector_job_queue_wait_seconds_count", a1, 3},
		{"connector_jobs_inflight", []string{"job_channel", "root"}, 0},
		{"connector_jobs_inflight", []string{"job_channel", "root.shop"}, 0},
		{"connector_jobs_inflight", []string{"job_channel", "root.slow"}, 0},
		{"connector_events_handled_total", []string{"event_listener", "e2e_listener", "event_model", "sale.order",
			"event_name", "create", "event_outcome", "succeeded"}, 1},
	} {
		if got := m.value(t, s.name, s.labels...); got != s.want {
			t.Errorf("%s%v = %v, want %v", s.name, s.labels, got, s.want)
		}
	}
	if got, n := m.sum("connector_consumer_pending"), len(m.find("connector_consumer_pending")); got != 0 || n == 0 {
		t.Errorf("consumer_pending: %d series summing to %v, want some, all 0", n, got)
	}
	// Histograms: the 20 ms jobs are above 10 ms and below 1 s; the buckets
	// are the documented ones.
	succ := with(a1, "job_outcome", "succeeded")
	if sum := m.value(t, "connector_job_duration_seconds_sum", succ...); sum < 0.06 || sum > 30 {
		t.Errorf("duration sum of three 20 ms jobs = %v s", sum)
	}
	if b := m.bucket(t, "connector_job_duration_seconds", "0.01", succ...); b != 0 {
		t.Errorf("duration bucket le=0.01 holds %v of the 20 ms jobs", b)
	}
	if b := m.bucket(t, "connector_job_duration_seconds", "+Inf", succ...); b != 3 {
		t.Errorf("duration bucket le=+Inf = %v, want 3", b)
	}
	var les []string
	for _, s := range m.find("connector_job_duration_seconds_bucket", succ...) {
		les = append(les, s.labels["le"])
	}
	if got, want := strings.Join(les, " "), "0.005 0.01 0.05 0.1 0.25 0.5 1 2.5 5 10 30 60 300 900 3600 7200 14400 +Inf"; got != want {
		t.Errorf("duration buckets %q, want %q", got, want)
	}
	if sum := m.value(t, "connector_job_queue_wait_seconds_sum", a1...); sum < 0 || sum > 30 {
		t.Errorf("queue wait sum %v s", sum)
	}
	if m.value(t, "connector_job_duration_seconds_sum", with(fail, "job_outcome", "dead")...) <= 0 {
		t.Log("NOTE: the dead run's duration is recorded as 0 (worker.dead ends its series with 0)")
	}
	// Every series carries the scope; the process exposes Go and process collectors.
	for _, s := range m.find("connector_jobs_started_total") {
		if s.labels["otel_scope_name"] != "github.com/connector-go/connector" {
			t.Errorf("series %v: otel_scope_name %q", s.labels, s.labels["otel_scope_name"])
		}
	}
	if len(m.find("go_goroutines")) == 0 || len(m.find("target_info", "service_name", "e2e-worker")) == 0 {
		t.Error("go_* collector or target_info{service_name} missing")
	}
	// No inflight gauge below zero, no job id in any label value.
	for _, s := range m.find("connector_jobs_inflight") {
		if s.value < 0 {
			t.Errorf("inflight %v = %v", s.labels, s.value)
		}
	}
	for _, id := range ids {
		if strings.Contains(text, id) {
			t.Errorf("job id %s appears in /metrics: unbounded label values", id)
		}
	}

	// Shutdown: while a job runs, /readyz answers 503 "draining" and /livez 200.
	slow2 := enqueue(jobSlow{}, job.WithChannel("root.slow"))
	<-started
	stopped := make(chan error, 1)
	go func() { stopped <- a.stop() }()
	testenv.Eventually(t, 10*time.Second, func() bool {
		code, r := readyz(t, a.base)
		return code == http.StatusServiceUnavailable && strings.Contains(fmt.Sprint(r.Checks), "draining")
	}, "/readyz 503 draining during shutdown")
	if code, _ := httpGet(t, a.base+"/livez"); code != http.StatusOK {
		t.Errorf("/livez %d while draining, want 200", code)
	}
	release <- struct{}{}
	if err := <-stopped; err != nil {
		t.Errorf("RunWorker: %v", err)
	}
	waitState(t, d, slow2, job.StateDone)
}

// A message that never ran (not a job envelope) is dead-lettered and
// counted as dead, but must not move the in-flight gauge: it never started.
func TestMalformedJobMetrics(t *testing.T) {
	e := newEnv(t)
	a := e.startApp(worker.NewRegistry(), nil, nil)
	if _, err := e.js.Publish(context.Background(), e.names.JobsSubject("root", 0), []byte("not a job")); err != nil {
		t.Fatal(err)
	}
	var m metrics
	testenv.Eventually(t, 10*time.Second, func() bool {
		m, _ = scrape(t, a.base)
		return len(m.find("connector_jobs_ended_total", "job_outcome", "dead")) == 1
	}, "the malformed message counted as dead")
	for _, s := range m.find("connector_jobs_inflight") {
		if s.value < 0 {
			// Messages that never went through Started (malformed,
			// unknown job, lost last attempt) must not end a series
			// (worker.dead counts them with Metrics.JobRejected), or the
			// gauge goes negative.
			t.Fatalf("connector_jobs_inflight%v = %v after a malformed message", s.labels, s.value)
		}
	}
}

func waitState(t *testing.T, d testenv.JobReader, id string, want job.State) job.Record {
	t.Helper()
	return testenv.WaitJob(t, d, id, want, 20*time.Second)
}

// /readyz fails (503, the broken check named) when Redis is unreachable or
// NATS is gone, while /livez stays 200: a broken dependency must not get
// the pod restarted.
func TestReadyzDependencies(t *testing.T) {
	t.Run("redis unreachable", func(t *testing.T) {
		e := newEnv(t)
		rdb := redis.NewClient(&redis.Options{Addr: testenv.FreeAddr(t), Password: "S3CRET",
			DialTimeout: 200 * time.Millisecond, MaxRetries: -1})
		t.Cleanup(func() { _ = rdb.Close() })
		a := e.startApp(worker.NewRegistry(), nil, rdb)
		code, r := readyz(t, a.base)
		if code != http.StatusServiceUnavailable || r.Status != "unavailable" ||
			fmt.Sprint(r.Failed) != "[redis]" || r.Checks["nats"] != "ok" || r.Checks["streams"] != "ok" {
			t.Errorf("/readyz %d %+v, want 503 with only redis failing", code, r)
		}
		if !strings.Contains(r.Checks["redis"], "connection refused") || strings.Contains(fmt.Sprint(r), "S3CRET") {
			t.Errorf("redis check %q: want the (redacted) cause", r.Checks["redis"])
		}
		if code, _ := httpGet(t, a.base+"/livez"); code != http.StatusOK {
			t.Errorf("/livez %d, want 200", code)
		}
	})
	t.Run("nats stopped", func(t *testing.T) {
		e := newEnv(t)
		a := e.startApp(worker.NewRegistry(), nil, nil)
		testenv.Eventually(t, 10*time.Second, func() bool { code, _ := readyz(t, a.base); return code == http.StatusOK }, "/readyz 200")
		e.srv.Server.Shutdown()
		e.srv.Server.WaitForShutdown()
		var r telemetry.ReadyReport
		// The streams check may time out before the client notices the
		// disconnection: wait for the nats check itself to fail.
		testenv.Eventually(t, 15*time.Second, func() bool {
			var code int
			code, r = readyz(t, a.base)
			return code == http.StatusServiceUnavailable && r.Checks["nats"] != "ok"
		}, "/readyz 503 with the nats check failing once NATS is gone")
		if !strings.Contains(r.Checks["nats"], "not connected") || r.Checks["redis"] != "ok" {
			t.Errorf("/readyz %+v, want nats failing and redis ok", r)
		}
		if code, _ := httpGet(t, a.base+"/livez"); code != http.StatusOK {
			t.Errorf("/livez %d, want 200", code)
		}
	})
}

// A bindings.Store built with the worker's meter provider, as
// cmd/connector wires it (bindings.WithMeterProvider(conns.Telemetry.
// MeterProvider)), reports its Redis operations, run for real, on the
// worker's /metrics: connector_store_op_duration_seconds{store_op,
// store_outcome} with the documented buckets.
func TestStoreOpMetricsServed(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	a := e.startApp(worker.NewRegistry(), nil, nil)
	s := bindings.New(a.conns.Redis, a.cfg.Prefix, bindings.WithMeterProvider(a.conns.Telemetry.MeterProvider))
	b := s.Binder("shop-eu", "product")
	if err := b.Bind(ctx, "1001", "P-1", time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := b.Bind(ctx, "1001", "P-2", time.Now()); !errors.Is(err, bindings.ErrConflict) {
		t.Fatalf("conflicting bind: %v", err)
	}
	if got, err := b.ToInternalMany(ctx, []string{"1001", "1002"}); err != nil || got["1001"] != "P-1" {
		t.Fatalf("ToInternalMany: %v, %v", got, err)
	}
	l, err := s.Lock(ctx, "shop-eu/product/1001", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Lock(ctx, "shop-eu/product/1001", time.Minute); !errors.Is(err, bindings.ErrLocked) {
		t.Fatalf("second lock: %v", err)
	}
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}

	m, _ := scrape(t, a.base)
	for _, c := range []struct {
		op, outcome string
		n           float64
	}{
		{"bind", "ok", 1}, {"bind", "conflict", 1}, {"to_internal_many", "ok", 1},
		{"lock", "ok", 1}, {"lock", "locked", 1}, {"release", "ok", 1},
	} {
		labels := []string{"store_op", c.op, "store_outcome", c.outcome}
		if got := m.value(t, "connector_store_op_duration_seconds_count", labels...); got != c.n {
			t.Errorf("connector_store_op_duration_seconds_count%v = %v, want %v", labels, got, c.n)
		}
		if sum := m.value(t, "connector_store_op_duration_seconds_sum", labels...); sum <= 0 || sum > 30 {
			t.Errorf("connector_store_op_duration_seconds_sum%v = %v s", labels, sum)
		}
	}
	if n := len(m.find("connector_store_op_duration_seconds_count")); n != 6 {
		t.Errorf("%d store op series, want 6", n)
	}
	var les []string
	for _, s := range m.find("connector_store_op_duration_seconds_bucket", "store_op", "bind", "store_outcome", "ok") {
		les = append(les, s.labels["le"])
	}
	if got, want := strings.Join(les, " "), "0.0002 0.0005 0.001 0.0025 0.005 0.01 0.025 0.05 0.1 0.25 1 +Inf"; got != want {
		t.Errorf("store op buckets %q, want %q (docs/observability.md: 0.2 ms to 1 s)", got, want)
	}
}

// connector_consumer_pending is read from the JetStream server, so every
// replica reports the same fleet-wide value: with one job running on a
// fleet of two, each replica says 1. Summing over replicas would say 2;
// docs/observability.md must aggregate with max, not sum.
func TestBacklogIsFleetWideOnEveryReplica(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	release := make(chan struct{})
	started := make(chan struct{}, 2)
	newReg := func() *worker.Registry {
		reg := worker.NewRegistry()
		worker.MustRegister(reg, func(ctx context.Context, j *job.Job[jobSlow]) (string, error) {
			started <- struct{}{}
			<-release
			return "slow done", nil
		})
		return reg
	}
	r1, r2 := e.startApp(newReg(), nil, nil), e.startApp(newReg(), nil, nil)
	t.Cleanup(func() { close(release) }) // before the replicas stop
	if _, err := e.d.Enqueue(ctx, jobSlow{}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-started:
	case <-time.After(20 * time.Second):
		t.Fatal("slow job did not start")
	}
	var m1, m2 metrics
	testenv.Eventually(t, 10*time.Second, func() bool {
		m1, _ = scrape(t, r1.base)
		m2, _ = scrape(t, r2.base)
		return m1.sum("connector_consumer_pending") == 1 && m2.sum("connector_consumer_pending") == 1
	}, "each replica reporting the one running job as pending")
	byConsumer := func(m metrics) map[string]float64 {
		out := map[string]float64{}
		for _, s := range m.find("connector_consumer_pending") {
			out[s.labels["consumer"]] = s.value
		}
		return out
	}
	c1, c2 := byConsumer(m1), byConsumer(m2)
	if fmt.Sprint(c1) != fmt.Sprint(c2) || len(c1) == 0 {
		t.Errorf("replicas disagree on the backlog: %v and %v", c1, c2)
	}

	doc, err := os.ReadFile(filepath.Join(testenv.ModuleRoot(t), "docs", "observability.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(doc), "max by (consumer) (connector_consumer_pending)") {
		t.Error("docs/observability.md: no `max by (consumer) (connector_consumer_pending)` backlog query")
	}
	if regexp.MustCompile(`sum(\s+by\s*\([^)]*\))?\s*\(\s*connector_consumer_pending`).Match(doc) {
		t.Error("docs/observability.md sums connector_consumer_pending: that counts the backlog once per replica")
	}
}

// jobLabeled tells its backend and model (worker JobLabels).
type jobLabeled struct {
	Backend string `msgpack:"backend"`
	Model   string `msgpack:"model"`
}

func (jobLabeled) JobName() string                      { return "e2e.labeled" }
func (j jobLabeled) JobLabels() (backend, model string) { return j.Backend, j.Model }

// A handler's line through worker.Logger(ctx) carries exactly the job
// fields docs/observability.md lists under "Fields of job lines", with the
// job's values.
func TestJobLogFieldsAsDocumented(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	var logs testenv.Buffer
	log, err := telemetry.NewLogger("info", "json", telemetry.WithLogOutput(&logs))
	if err != nil {
		t.Fatal(err)
	}
	reg := worker.NewRegistry()
	worker.MustRegister(reg, func(ctx context.Context, j *job.Job[jobLabeled]) (string, error) {
		worker.Logger(ctx).Info("e2e handler line")
		return "", nil
	})
	e.startWorker(reg, worker.WithLogger(log))
	rctx, root := e.tp.Tracer("e2e/producer").Start(ctx, "POST /products")
	id, err := e.d.Enqueue(rctx, jobLabeled{Backend: "shop-eu", Model: "product"})
	root.End()
	if err != nil {
		t.Fatal(err)
	}
	var line map[string]any
	testenv.Eventually(t, 20*time.Second, func() bool {
		for _, l := range strings.Split(logs.String(), "\n") {
			if strings.Contains(l, `"e2e handler line"`) {
				if err := json.Unmarshal([]byte(l), &line); err != nil {
					t.Fatalf("log line %q: %v", l, err)
				}
				return true
			}
		}
		return false
	}, "the handler's log line")

	doc, err := os.ReadFile(filepath.Join(testenv.ModuleRoot(t), "docs", "observability.md"))
	if err != nil {
		t.Fatal(err)
	}
	section := string(doc)
	i := strings.Index(section, "### Fields of job lines")
	if i < 0 {
		t.Fatal(`docs/observability.md: no "### Fields of job lines" section`)
	}
	section = section[i+len("### Fields of job lines"):]
	if j := strings.Index(section, "\n#"); j >= 0 {
		section = section[:j]
	}
	var documented []string
	for _, row := range strings.Split(section, "\n") {
		if !strings.HasPrefix(row, "| `") {
			continue
		}
		cell := strings.SplitN(row, "|", 3)[1]
		for _, m := range regexp.MustCompile("`([a-z_.]+)`").FindAllStringSubmatch(cell, -1) {
			documented = append(documented, m[1])
		}
	}
	var logged []string
	for k := range line {
		switch k {
		case "ts", "level", "logger", "caller", "msg":
		default:
			logged = append(logged, k)
		}
	}
	slices.Sort(documented)
	slices.Sort(logged)
	if !slices.Equal(documented, logged) {
		t.Errorf("job line fields %v, documented %v\nline: %v", logged, documented, line)
	}
	want := map[string]any{
		"job_id": id, "job_name": "e2e.labeled", "channel": job.DefaultChannel, "attempt": float64(1),
		"trace_id": root.SpanContext().TraceID().String(), "backend": "shop-eu", "model": "product",
	}
	for k, v := range want {
		if line[k] != v {
			t.Errorf("field %s = %v, want %v", k, line[k], v)
		}
	}
}

// connector_listener_pending{event_listener} is a listener's lag, read from
// JetStream at each scrape: events pending plus the one being handled;
// back to 0 once they are handled.
func TestListenerBacklogMetric(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	release := make(chan struct{})
	handling := make(chan struct{}, 3)
	listen := func(c *app.Conns) app.Service {
		l := e.listeners(c.JS, c.Redis, c.Log, events.WithAckWait(5*time.Second))
		if err := l.On("lagging", "sale.order", "", func(ctx context.Context, ev events.Event) error {
			handling <- struct{}{}
			<-release
			return nil
		}, events.WithPartitions(1)); err != nil {
			t.Fatal(err)
		}
		return l.Run
	}
	a := e.startApp(worker.NewRegistry(), nil, nil, listen)
	pub := e.publisher(nil)
	for range 3 {
		if _, err := pub.Publish(ctx, events.Event{Model: "sale.order", Name: events.Write, RecordID: "SO9"}); err != nil {
			t.Fatal(err)
		}
	}
	<-handling // one taken, two pending behind it (one at a time per partition)
	lag := func() float64 {
		m, _ := scrape(t, a.base)
		return m.value(t, "connector_listener_pending", "event_listener", "lagging")
	}
	testenv.Eventually(t, 10*time.Second, func() bool { return lag() == 3 }, "listener lag 3")
	for range 3 {
		release <- struct{}{}
	}
	testenv.Eventually(t, 10*time.Second, func() bool { return lag() == 0 }, "listener lag back to 0")
}
