package bench

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/connector-go/connector/dispatcher"
	"github.com/connector-go/connector/internal/streams"
	"github.com/connector-go/connector/internal/wire"
	"github.com/connector-go/connector/worker"
	"github.com/nats-io/nats.go/jetstream"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// Overhead runs pairs of framework runs, the extra options in one run of
// each pair only, and reports one ratio per pair.
func TestOverheadAppliesOptionsToOneRunOfEachPair(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer func() { _ = tp.Shutdown(context.Background()) }()
	const n, pairs = 200, 2
	var out bytes.Buffer
	med, err := Overhead(ctx, Options{N: n, Size: 16},
		[]worker.Option{worker.WithTracerProvider(tp)}, []dispatcher.Option{dispatcher.WithTracerProvider(tp)}, pairs, &out)
	if err != nil {
		t.Fatal(err)
	}
	if med <= 0 {
		t.Errorf("median %v", med)
	}
	if got := strings.Count(out.String(), "with/plain"); got != pairs {
		t.Errorf("%d pair lines, want %d:\n%s", got, pairs, out.String())
	}
	process := 0
	for _, s := range rec.Ended() {
		if s.SpanKind() == trace.SpanKindConsumer {
			process++
		}
	}
	// One CONSUMER span per job of the traced runs, none from the plain ones.
	if process != n*pairs {
		t.Errorf("%d process spans, want %d (the traced run of each pair)", process, n*pairs)
	}
}

func TestRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out bytes.Buffer
	ratio, err := Run(ctx, Options{N: 200, Size: 16, Rounds: 2}, &out)
	if err != nil {
		t.Fatal(err)
	}
	if ratio <= 0 || !strings.Contains(out.String(), "mean over 2 round(s)") {
		t.Errorf("ratio %v, output:\n%s", ratio, out.String())
	}
}

// With Layout, each round also runs the raw client on the jobs stream's
// layout, and the report splits b/a at it.
func TestRunWithLayout(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out bytes.Buffer
	if _, err := Run(ctx, Options{N: 200, Size: 16, Rounds: 2, Layout: true, Channels: 3}, &out); err != nil {
		t.Fatal(err)
	}
	if got := strings.Count(out.String(), "(a') raw on layout"); got != 2 {
		t.Errorf("%d layout lines, want 2:\n%s", got, out.String())
	}
	if !strings.Contains(out.String(), "layout: a' = ") || !strings.Contains(out.String(), "3 channels (2 idle)") {
		t.Errorf("no layout summary:\n%s", out.String())
	}
}

// The layout run publishes what the dispatcher publishes for the
// benchmark's job: same subject, same size (only the id's characters
// differ), so the server's work is the framework's.
func TestLayoutMessageIsTheDispatchers(t *testing.T) {
	ctx, js, names := benchServer(t, "layoutcheck")
	if err := streams.Ensure(ctx, js, streams.Config{Names: names}); err != nil {
		t.Fatal(err)
	}
	d, err := dispatcher.New(js, dispatcher.WithPrefix("layoutcheck"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.EnqueueMany(ctx, []dispatcher.Item{{Args: Payload{Data: []byte(strings.Repeat("x", 256))}}}); err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(ctx, names.JobsStream())
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.GetMsg(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	subj, data, err := layoutMessage(names, 256)
	if err != nil {
		t.Fatal(err)
	}
	if m.Subject != subj || len(m.Data) != len(data) || len(m.Header) != 0 {
		t.Errorf("dispatcher stored %d bytes on %s (headers %v); the layout run publishes %d on %s", len(m.Data), m.Subject, m.Header, len(data), subj)
	}
}

// With Channels, the workers of a run (the framework's, and the one that
// makes the layout run's consumers) configure that many channels: three
// band consumers each on the jobs stream.
func TestChannelsConfigureIdleChannels(t *testing.T) {
	ctx, js, names := benchServer(t, "chancheck")
	w, err := worker.New(js, worker.NewRegistry(), workerOptions(Options{Channels: 4}, "chancheck")...)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(ctx, names.JobsStream())
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for range s.ConsumerNames(ctx).Name() {
		n++
	}
	if n != 12 {
		t.Errorf("%d consumers on the jobs stream, want 12 (4 channels, 3 bands each)", n)
	}
}

// benchServer starts a run's server for a test, with the names of prefix,
// whose streams are deleted when the test ends.
func benchServer(t *testing.T, prefix string) (context.Context, jetstream.JetStream, wire.Names) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	js, stop, err := start(ctx, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	names := wire.MustNames(prefix)
	t.Cleanup(func() { deleteStreams(ctx, js, names) })
	return ctx, js, names
}

func TestMedian(t *testing.T) {
	for _, c := range []struct {
		in   []float64
		want float64
	}{{nil, 0}, {[]float64{3}, 3}, {[]float64{3, 1, 2}, 2}, {[]float64{4, 1, 3, 2}, 2.5}} {
		if got := Median(c.in); got != c.want {
			t.Errorf("Median(%v) = %v, want %v", c.in, got, c.want)
		}
	}
}
