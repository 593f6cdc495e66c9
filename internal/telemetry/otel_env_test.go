package telemetry

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/connector-go/connector/internal/testenv"
	"go.opentelemetry.io/otel/metric/noop"
)

// OTEL_SDK_DISABLED=true disables the SDK for every signal (OpenTelemetry
// SDK environment variables specification): no spans are recorded or
// exported even when an OTLP endpoint is configured, and the OpenTelemetry
// metrics are a noop. The Go SDK does not read the variable itself.
func TestSetupHonoursOTELSDKDisabled(t *testing.T) {
	clearOTELEnv(t)
	var posts atomic.Int64
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		posts.Add(1)
		w.WriteHeader(http.StatusOK)
	}))
	defer recv.Close()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", recv.URL)
	for _, v := range []string{"true", "TRUE", "True"} {
		t.Setenv("OTEL_SDK_DISABLED", v)
		p, err := Setup(context.Background(), Config{ServiceName: "svc", Prometheus: true})
		if err != nil {
			t.Fatal(err)
		}
		_, span := p.TracerProvider.Tracer("t").Start(context.Background(), "s")
		recording := span.IsRecording()
		span.End()
		if err := p.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
		if recording || p.TracesExporter != ExporterNone {
			t.Errorf("OTEL_SDK_DISABLED=%q: exporter %q, span recording %v; want none and not recording", v, p.TracesExporter, recording)
		}
		if _, ok := p.MeterProvider.(noop.MeterProvider); !ok {
			t.Errorf("OTEL_SDK_DISABLED=%q: meter provider %T, want the noop one", v, p.MeterProvider)
		}
		if p.MetricsHandler == nil || !strings.Contains(scrape(t, p.MetricsHandler), "go_goroutines") {
			t.Errorf("OTEL_SDK_DISABLED=%q: /metrics should still serve the Go runtime's metrics", v)
		}
	}
	if n := posts.Load(); n != 0 {
		t.Errorf("%d exports with the SDK disabled", n)
	}
	// Anything but "true" leaves the SDK on.
	t.Setenv("OTEL_SDK_DISABLED", "false")
	p, err := Setup(context.Background(), Config{ServiceName: "svc"})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = p.Shutdown(context.Background()) }()
	if p.TracesExporter != ExporterOTLP {
		t.Errorf("OTEL_SDK_DISABLED=false: exporter %q, want otlp", p.TracesExporter)
	}
}

// OTEL_TRACES_SAMPLER is read by the SDK's tracer provider that Setup builds.
func TestSetupHonoursOTELTracesSampler(t *testing.T) {
	clearOTELEnv(t)
	t.Setenv("OTEL_TRACES_SAMPLER", "always_off")
	var out testenv.Buffer
	p, err := Setup(context.Background(), Config{TracesExporter: ExporterConsole, ConsoleOutput: &out})
	if err != nil {
		t.Fatal(err)
	}
	_, span := p.TracerProvider.Tracer("t").Start(context.Background(), "s")
	if span.IsRecording() || span.SpanContext().IsSampled() {
		t.Error("OTEL_TRACES_SAMPLER=always_off: span sampled")
	}
	span.End()
	if err := p.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if out.String() != "" {
		t.Errorf("always_off exported %q", out.String())
	}
}

// A collector that accepts connections but never answers: ending spans never
// blocks (the batch processor drops when full), and Shutdown returns by its
// context's deadline.
func TestUnreachableCollectorBlocksNothing(t *testing.T) {
	clearOTELEnv(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	stuck := make(chan struct{})
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-stuck })}
	go func() { _ = srv.Serve(ln) }()
	defer func() { close(stuck); _ = srv.Close() }()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+ln.Addr().String())
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "1")

	p, err := Setup(context.Background(), Config{ServiceName: "svc"})
	if err != nil {
		t.Fatal(err)
	}
	tr := p.TracerProvider.Tracer("t")
	start := time.Now()
	for i := 0; i < 20000; i++ { // well over the default queue of 2048
		_, span := tr.Start(context.Background(), "job")
		span.End()
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("ending 20000 spans took %s with a stuck collector", d)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start = time.Now()
	_ = p.Shutdown(ctx)
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Shutdown took %s with a 300ms deadline", d)
	}
}
