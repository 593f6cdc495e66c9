package bench

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/connector-go/connector/dispatcher"
	"github.com/connector-go/connector/worker"
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
