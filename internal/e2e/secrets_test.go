package e2e_test

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/connector-go/connector/events"
	"github.com/connector-go/connector/internal/app"
	"github.com/connector-go/connector/internal/connect"
	"github.com/connector-go/connector/internal/telemetry"
	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/job"
	"github.com/connector-go/connector/worker"
	"github.com/nats-io/nats-server/v2/server"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// passwordRedis starts a private redis-server on a free port with a
// password for the default user and an ACL user "e2e" with password pw, and
// returns its URL with that user and password in it (the worst case for
// redaction: the URL itself is logged, redacted). Without the redis-server
// binary it falls back to an ACL user on the shared test Redis, and to no
// password at all on the embedded store; CONNECTOR_TEST_REQUIRE_REDIS=1
// forbids both fallbacks.
func passwordRedis(t *testing.T, pw string) string {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CONNECTOR_TEST_REQUIRE_REDIS") == "1" {
			t.Fatalf("redis-server binary not found and CONNECTOR_TEST_REQUIRE_REDIS=1: %v", err)
		}
		t.Logf("no redis-server binary: using an ACL user of the shared test Redis (%v)", err)
		return sharedRedisACLURL(t, pw)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	l.Close()
	var out testenv.Buffer
	cmd := exec.Command(bin, "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", t.TempDir(), "--requirepass", "default-"+pw,
		"--user", "e2e", "on", ">"+pw, "~*", "&*", "+@all")
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	testenv.Eventually(t, 10*time.Second, func() bool {
		select {
		case <-exited:
			t.Fatalf("redis-server exited:\n%s", out.String())
		default:
		}
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+port, 200*time.Millisecond)
		if err == nil {
			c.Close()
		}
		return err == nil
	}, "redis-server listening on %s", port)
	return "redis://e2e:" + pw + "@127.0.0.1:" + port + "/0"
}

// sharedRedisACLURL creates an ACL user with password pw on the shared test
// Redis and returns the URL with them; on the embedded store (no ACL) it
// returns the plain URL.
func sharedRedisACLURL(t *testing.T, pw string) string {
	t.Helper()
	rdb, prefix := testenv.Redis(t)
	redisURL := testenv.RedisURL(t)
	if testenv.RedisEmbedded() {
		t.Log("embedded Redis store: no Redis password in this run")
		return redisURL
	}
	name := "e2e_" + prefix
	ctx := context.Background()
	if err := rdb.Do(ctx, "ACL", "SETUSER", name, "on", ">"+pw, "~*", "&*", "+@all").Err(); err != nil {
		t.Fatalf("ACL SETUSER: %v", err)
	}
	t.Cleanup(func() { rdb.Do(context.Background(), "ACL", "DELUSER", name) })
	u, err := url.Parse(redisURL)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(name, pw)
	return u.String()
}

// A worker process (app.Open + app.RunWorker) whose NATS and Redis URLs
// hold passwords (NATS with user/password auth, Redis a second
// redis-server with requirepass and an ACL user), whose jobs and event
// listener fail with errors quoting URLs and tokens with a secret: no
// password appears in its log lines, spans (attributes, events, status),
// metrics (names, labels, values), or /readyz.
func TestSecretsStayOut(t *testing.T) {
	const (
		natsPW  = "S3CRET-nats-7f1c"
		redisPW = "S3CRET-redis-91ab"
		jobPW   = "S3CRET-job-c0de"
	)
	srv := testenv.StartNATS(t, func(o *server.Options) { o.Username, o.Password = "worker", natsPW })
	prefix := testenv.Prefix(t)
	redisURL := passwordRedis(t, redisPW)
	natsURL := strings.Replace(srv.URL, "nats://", "nats://worker:"+natsPW+"@", 1)

	var logs testenv.Buffer
	log, err := telemetry.NewLogger("debug", "json", telemetry.WithLogOutput(&logs))
	if err != nil {
		t.Fatal(err)
	}
	cfg := &app.Config{
		NATS: connect.NATSConfig{URL: natsURL}, Redis: connect.RedisConfig{URL: redisURL},
		Prefix: prefix, Replicas: 1, Concurrency: 4, AckWait: 10 * time.Second, ShutdownGrace: 5 * time.Second,
		HTTPAddr: testenv.FreeAddr(t), LogLevel: "debug", LogFormat: "json", Provision: true, ServiceName: "e2e-secrets",
	}
	ctx := context.Background()
	conns, err := app.Open(ctx, cfg, log)
	if err != nil {
		t.Fatalf("app.Open: %v", err)
	}
	defer conns.Close()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	defer func() { _ = tp.Shutdown(context.Background()) }()
	conns.Telemetry.TracerProvider = tp

	// Errors as careless code writes them: a DSN, a URL with a token.
	leaky := func(what string) error {
		return fmt.Errorf("%s: post https://api.shop.example/v1/orders?token=%s: dial nats://shop:%s@10.1.2.3:4222 and redis://:%s@10.1.2.4:6379/0 failed",
			what, jobPW, jobPW, jobPW)
	}
	reg := worker.NewRegistry()
	worker.MustRegister(reg, func(ctx context.Context, j *job.Job[jobFail]) (string, error) {
		worker.Logger(ctx).Info("calling the shop", telemetry.RedactedURL("url", "https://u:"+jobPW+"@api.shop.example/"))
		if j.Args.Retries > 0 {
			return "", job.RetryAfter(leaky(j.Args.Msg), 10*time.Millisecond)
		}
		return "", leaky(j.Args.Msg)
	})
	listen := func(c *app.Conns) app.Service {
		l, err := events.NewListeners(c.JS, events.WithPrefix(prefix), events.WithRedis(c.Redis), events.WithLogger(c.Log),
			events.WithMeterProvider(c.Telemetry.MeterProvider), events.WithTracerProvider(tp), events.WithAckWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if err := l.On("e2e_leaky", "sale.order", "", func(ctx context.Context, ev events.Event) error {
			return leaky("export " + ev.RecordID)
		}, events.WithMaxDeliver(2), events.WithRetryDelay(func(int) time.Duration { return 10 * time.Millisecond }), events.WithPartitions(1)); err != nil {
			t.Fatal(err)
		}
		return l.Run
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- app.RunWorker(runCtx, cfg, conns, reg, listen(conns)) }()
	stopped := false
	stopApp := func() {
		if stopped {
			return
		}
		stopped = true
		stop()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("RunWorker: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("RunWorker did not stop")
		}
	}
	defer stopApp()

	base := "http://" + cfg.HTTPAddr
	testenv.Eventually(t, 15*time.Second, func() bool { code, _ := httpGet(t, base+"/readyz"); return code == 200 }, "/readyz 200")
	d, err := conns.Dispatcher(cfg)
	if err != nil {
		t.Fatal(err)
	}
	deadID, err := d.Enqueue(ctx, jobFail{Msg: "export"})
	if err != nil {
		t.Fatal(err)
	}
	retriedID, err := d.Enqueue(ctx, jobFail{Msg: "import", Retries: 1}, job.WithMaxRetries(2))
	if err != nil {
		t.Fatal(err)
	}
	pub, err := events.NewPublisher(conns.JS, events.WithPrefix(prefix))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pub.Publish(ctx, events.Event{Model: "sale.order", Name: events.Write, RecordID: "SO9"}); err != nil {
		t.Fatal(err)
	}
	waitState(t, d, deadID, job.StateDead)
	waitState(t, d, retriedID, job.StateDead)
	var m metrics
	var metricsText string
	testenv.Eventually(t, 15*time.Second, func() bool {
		m, metricsText = scrape(t, base)
		return m.value(t, "connector_events_handled_total", "event_outcome", "dead") == 1
	}, "the failing event dead-lettered")
	_, readyBody := httpGet(t, base+"/readyz")
	stopApp()
	_ = log.Sync()

	secrets := map[string]string{"NATS password": natsPW, "Redis password": redisPW, "Redis default password": "default-" + redisPW,
		"secret in a job error": jobPW}
	check := func(where, text string) {
		t.Helper()
		for what, s := range secrets {
			if strings.Contains(text, s) {
				t.Errorf("%s leaks the %s: %s", where, what, excerpt(text, s))
			}
		}
	}
	check("/metrics", metricsText)
	check("/readyz", readyBody)

	// Spans: attributes, events and status of every span.
	spans := exp.GetSpans()
	if len(filter(spans, func(s tracetest.SpanStub) bool { return len(exceptionEvents(s)) > 0 })) < 3 {
		t.Errorf("want exception events on the failed runs and the failed event handling; spans: %v", spanNames(spans))
	}
	for _, s := range spans {
		var b strings.Builder
		fmt.Fprintf(&b, "%s %s", s.Name, s.Status.Description)
		for _, kv := range s.Attributes {
			fmt.Fprintf(&b, " %s=%s", kv.Key, kv.Value.String())
		}
		for _, ev := range s.Events {
			for _, kv := range ev.Attributes {
				fmt.Fprintf(&b, " %s.%s=%s", ev.Name, kv.Key, kv.Value.String())
			}
		}
		check("span "+s.Name, b.String())
	}

	// Logs: the connection passwords never; the job's secret is the one
	// the code under test passed through Redact or not.
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	if len(lines) < 5 || !strings.Contains(logs.String(), `"connected"`) || !strings.Contains(logs.String(), "dead-lettered") {
		t.Fatalf("expected the connection and failure logs, got %d lines:\n%s", len(lines), logs.String())
	}
	if !strings.Contains(logs.String(), "xxxxx") {
		t.Error("no redacted value in the logs: the test proves nothing")
	}
	var jobLeaks []string
	for _, line := range lines {
		for what, s := range secrets {
			if !strings.Contains(line, s) {
				continue
			}
			if s == jobPW {
				jobLeaks = append(jobLeaks, line)
				continue
			}
			t.Errorf("log line leaks the %s: %s", what, line)
		}
	}

	// Dead letters and job records keep the handler's error as it was:
	// operators need the cause. Tools that show them must redact.
	letters, err := d.DeadLetters(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	var kept int
	for _, l := range letters {
		if strings.Contains(l.Error, jobPW) || strings.Contains(l.Stack, jobPW) {
			kept++
		}
	}
	rec, err := d.Job(ctx, deadID)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("dead letters keeping the raw error: %d of %d; job record error raw: %v", kept, len(letters), strings.Contains(rec.Error, jobPW))

	if len(jobLeaks) > 0 {
		// The worker and the listeners log handler errors with zap.Error
		// (not redacted), although docs/observability.md says the error
		// field is redacted. Reported to the runtime's owner; this test
		// asserts the fix as soon as it lands.
		t.Fatalf("%d log lines quote a handler error unredacted:\n%s", len(jobLeaks), strings.ReplaceAll(strings.Join(jobLeaks, "\n"), jobPW, "<SECRET>"))
	}
}

// excerpt shows s in its context, itself masked.
func excerpt(text, s string) string {
	i := strings.Index(text, s)
	lo, hi := max(0, i-80), min(len(text), i+len(s)+40)
	return strings.ReplaceAll(text[lo:hi], s, "<SECRET>")
}
