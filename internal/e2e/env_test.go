package e2e_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/connector-go/connector/dispatcher"
	"github.com/connector-go/connector/events"
	"github.com/connector-go/connector/internal/streams"
	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/internal/wire"
	"github.com/connector-go/connector/worker"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
)

// Jobs of the end-to-end tests.

type jobA struct {
	Order string `msgpack:"order"`
}

func (jobA) JobName() string { return "e2e.a" }

type jobB struct {
	Order string `msgpack:"order"`
}

func (jobB) JobName() string { return "e2e.b" }

type jobC struct {
	Partner string `msgpack:"partner"`
}

func (jobC) JobName() string { return "e2e.c" }

// jobFail fails with Msg: for good (dead letter) unless Retries > 0, in
// which case the first Retries attempts ask for a retry and the next one
// succeeds.
type jobFail struct {
	Msg     string `msgpack:"msg"`
	Retries int    `msgpack:"retries"`
}

func (jobFail) JobName() string { return "e2e.fail" }

// env is one isolated deployment: an embedded JetStream server, the real
// Redis, one prefix for subjects, streams and keys, and an in-memory span
// exporter behind a tracer provider that samples everything.
type env struct {
	t      *testing.T
	srv    *testenv.NATSServer
	nc     *nats.Conn
	js     jetstream.JetStream
	rdb    *redis.Client
	prefix string
	names  wire.Names
	spans  *tracetest.InMemoryExporter
	tp     *sdktrace.TracerProvider
	d      *dispatcher.Dispatcher
}

func newEnv(t *testing.T) *env {
	t.Helper()
	srv, nc, js := testenv.JetStream(t)
	rdb, prefix := testenv.Redis(t)
	names := wire.MustNames(prefix)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := streams.Ensure(ctx, js, streams.Config{Names: names, Memory: true}); err != nil {
		t.Fatal(err)
	}
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp), sdktrace.WithSampler(sdktrace.AlwaysSample()))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	d, err := dispatcher.New(js, dispatcher.WithPrefix(prefix), dispatcher.WithRedis(rdb), dispatcher.WithTracerProvider(tp))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close(context.Background()) })
	return &env{t: t, srv: srv, nc: nc, js: js, rdb: rdb, prefix: prefix, names: names, spans: exp, tp: tp, d: d}
}

// quietLogger logs warnings and errors to the test log.
func quietLogger(t *testing.T) *zap.Logger {
	return zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
}

// startWorker runs a worker for reg until the test ends.
func (e *env) startWorker(reg *worker.Registry, opts ...worker.Option) {
	e.t.Helper()
	opts = append([]worker.Option{worker.WithPrefix(e.prefix), worker.WithRedis(e.rdb),
		worker.WithLogger(quietLogger(e.t)), worker.WithMemoryStorage(),
		worker.WithTracerProvider(e.tp), worker.WithConcurrency(8)}, opts...)
	w, err := worker.New(e.js, reg, opts...)
	if err != nil {
		e.t.Fatal(err)
	}
	e.run("worker", w.Run)
}

// publisher is a Publisher of the test's prefix on js (e.js when nil).
func (e *env) publisher(js jetstream.JetStream, opts ...events.PublisherOption) *events.Publisher {
	e.t.Helper()
	if js == nil {
		js = e.js
	}
	p, err := events.NewPublisher(js, append([]events.PublisherOption{events.WithPrefix(e.prefix)}, opts...)...)
	if err != nil {
		e.t.Fatal(err)
	}
	return p
}

// listeners is a Listeners of the test's prefix on js, with Redis rdb and
// logger log.
func (e *env) listeners(js jetstream.JetStream, rdb redis.UniversalClient, log *zap.Logger, opts ...events.Option) *events.Listeners {
	e.t.Helper()
	l, err := events.NewListeners(js, append([]events.Option{events.WithPrefix(e.prefix), events.WithRedis(rdb),
		events.WithLogger(log)}, opts...)...)
	if err != nil {
		e.t.Fatal(err)
	}
	return l
}

// startListeners runs l until the test ends.
func (e *env) startListeners(l *events.Listeners) {
	e.t.Helper()
	e.run("listeners", l.Run)
}

// run runs f in the background until the test ends; the test fails if f
// returns an error or does not stop. (Jobs enqueued before the worker's
// consumer exists wait in the stream: no need to wait for it.)
func (e *env) run(what string, f func(context.Context) error) {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f(ctx) }()
	var once sync.Once
	e.t.Cleanup(func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					e.t.Errorf("%s.Run: %v", what, err)
				}
			case <-time.After(30 * time.Second):
				e.t.Errorf("%s did not stop", what)
			}
		})
	})
}

// waitSpans waits until a finished span satisfies every one of conds (one
// span per cond) and returns all finished spans.
func (e *env) waitSpans(timeout time.Duration, what string, conds ...func(tracetest.SpanStub) bool) tracetest.SpanStubs {
	e.t.Helper()
	var got tracetest.SpanStubs
	testenv.Eventually(e.t, timeout, func() bool {
		got = e.spans.GetSpans()
		for _, c := range conds {
			if len(filter(got, c)) == 0 {
				return false
			}
		}
		return true
	}, "%s (have %d spans: %v)", what, len(e.spans.GetSpans()), spanNames(e.spans.GetSpans()))
	return got
}

func filter(spans tracetest.SpanStubs, cond func(tracetest.SpanStub) bool) tracetest.SpanStubs {
	var out tracetest.SpanStubs
	for _, s := range spans {
		if cond(s) {
			out = append(out, s)
		}
	}
	return out
}

func spanNames(spans tracetest.SpanStubs) []string {
	out := make([]string, len(spans))
	for i, s := range spans {
		out[i] = s.Name + "/" + attr(s, "messaging.message.id")
	}
	return out
}

// attr returns the string form of a span attribute ("" when absent).
func attr(s tracetest.SpanStub, key string) string {
	for _, kv := range s.Attributes {
		if string(kv.Key) == key {
			return kv.Value.String()
		}
	}
	return ""
}

func hasAttr(s tracetest.SpanStub, key string) bool {
	for _, kv := range s.Attributes {
		if kv.Key == attribute.Key(key) {
			return true
		}
	}
	return false
}

// op selects spans by messaging operation and message id.
func op(operation, messageID string) func(tracetest.SpanStub) bool {
	return func(s tracetest.SpanStub) bool {
		return attr(s, "messaging.operation.type") == operation && attr(s, "messaging.message.id") == messageID
	}
}

// one returns the only span matching cond.
func one(t *testing.T, spans tracetest.SpanStubs, what string, cond func(tracetest.SpanStub) bool) tracetest.SpanStub {
	t.Helper()
	got := filter(spans, cond)
	if len(got) != 1 {
		t.Fatalf("%s: %d spans, want 1 (all: %v)", what, len(got), spanNames(spans))
	}
	return got[0]
}

// childOf checks that child's parent is parent's span, in the same trace.
func childOf(t *testing.T, child, parent tracetest.SpanStub) {
	t.Helper()
	if child.Parent.SpanID() != parent.SpanContext.SpanID() {
		t.Errorf("span %q: parent %s, want %q (%s)", child.Name, child.Parent.SpanID(), parent.Name, parent.SpanContext.SpanID())
	}
	if child.SpanContext.TraceID() != parent.SpanContext.TraceID() {
		t.Errorf("span %q in trace %s, parent %q in %s", child.Name, child.SpanContext.TraceID(), parent.Name, parent.SpanContext.TraceID())
	}
}

// jobsConsumer stands for "a durable consumer of the jobs stream" in
// messaging: the worker's consumer names are its own business (one per
// channel and priority band, or one for all), so the test checks that the
// span names a consumer that exists rather than a name.
const jobsConsumer = "*"

// messaging checks a span's kind and its messaging semantic-convention
// attributes. group "" means no consumer group; jobsConsumer means a
// durable consumer that exists on destination.
func (e *env) messaging(s tracetest.SpanStub, kind trace.SpanKind, operation, destination, group string) {
	t := e.t
	t.Helper()
	if s.SpanKind != kind {
		t.Errorf("span %q: kind %v, want %v", s.Name, s.SpanKind, kind)
	}
	want := map[string]string{
		"messaging.system":           "nats",
		"messaging.operation.type":   operation,
		"messaging.operation.name":   operation,
		"messaging.destination.name": destination,
	}
	if group != "" && group != jobsConsumer {
		want["messaging.consumer.group.name"] = group
	}
	for k, v := range want {
		if got := attr(s, k); got != v {
			t.Errorf("span %q: %s = %q, want %q", s.Name, k, got, v)
		}
	}
	switch g := attr(s, "messaging.consumer.group.name"); {
	case group == "" && g != "":
		t.Errorf("span %q: unexpected messaging.consumer.group.name %q", s.Name, g)
	case group == jobsConsumer:
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := e.js.Consumer(ctx, destination, g); g == "" || err != nil {
			t.Errorf("span %q: messaging.consumer.group.name %q is no consumer of %s (%v)", s.Name, g, destination, err)
		}
	}
	if s.Name != operation+" "+destination {
		t.Errorf("span name %q, want %q", s.Name, operation+" "+destination)
	}
	if attr(s, "messaging.message.id") == "" {
		t.Errorf("span %q: no messaging.message.id", s.Name)
	}
}
