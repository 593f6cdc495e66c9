package telemetry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/connector-go/connector/internal/testenv"
	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/trace"
)

func clearOTELEnv(t *testing.T) {
	for _, k := range []string{"OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES", "OTEL_SDK_DISABLED", "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG"} {
		t.Setenv(k, "")
	}
}

func TestChooseExporter(t *testing.T) {
	clearOTELEnv(t)
	if got := chooseExporter(""); got != ExporterNone {
		t.Errorf("no env: %q, want none", got)
	}
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://collector:4318/v1/traces")
	if got := chooseExporter(""); got != ExporterOTLP {
		t.Errorf("traces endpoint set: %q, want otlp", got)
	}
	t.Setenv("OTEL_TRACES_EXPORTER", "Console")
	if got := chooseExporter(""); got != ExporterConsole {
		t.Errorf("OTEL_TRACES_EXPORTER=Console: %q", got)
	}
	if got := chooseExporter("none"); got != ExporterNone {
		t.Errorf("Config wins over env: %q", got)
	}
	_, err := Setup(context.Background(), Config{TracesExporter: "zipkin"})
	if !errors.Is(err, ErrUnknownExporter) {
		t.Errorf("unknown exporter: %v", err)
	}
}

func TestSetupNone(t *testing.T) {
	clearOTELEnv(t)
	p, err := Setup(context.Background(), Config{ServiceName: "svc"})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = p.Shutdown(context.Background()) }()
	if p.TracesExporter != ExporterNone || p.MetricsHandler != nil || p.Propagator == nil {
		t.Fatalf("%+v", p)
	}
	_, span := p.TracerProvider.Tracer("x").Start(context.Background(), "s")
	if span.IsRecording() {
		t.Error("none exporter records spans")
	}
	span.End()
	fields := p.Propagator.Fields()
	sort.Strings(fields)
	if f := strings.Join(fields, ","); f != "baggage,traceparent,tracestate" {
		t.Errorf("propagator fields %q", f)
	}
}

func TestSetupConsole(t *testing.T) {
	clearOTELEnv(t)
	var out testenv.Buffer
	p, err := Setup(context.Background(), Config{ServiceName: "svc", TracesExporter: "console", ConsoleOutput: &out})
	if err != nil {
		t.Fatal(err)
	}
	_, span := StartProducerSpan(context.Background(), p.TracerProvider.Tracer("t"), "JOBS", "id-1", nats.Header{})
	span.End()
	if err := p.Shutdown(context.Background()); err != nil { // flushes the batcher
		t.Fatal(err)
	}
	var got consoleSpan
	if err := json.Unmarshal([]byte(out.String()), &got); err != nil {
		t.Fatalf("console output %q: %v", out.String(), err)
	}
	if got.Name != "send JOBS" || got.Kind != "producer" || got.Attributes["messaging.message.id"] != "id-1" {
		t.Errorf("console span %+v", got)
	}
}

// TestSetupOTLPFromEnv points the standard OTEL_* variables at a local HTTP
// receiver and checks a span is POSTed to /v1/traces with the configured
// headers.
func TestSetupOTLPFromEnv(t *testing.T) {
	clearOTELEnv(t)
	type post struct {
		path, auth, ctype string
		body              []byte
	}
	posts := make(chan post, 4)
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		posts <- post{r.URL.Path, r.Header.Get("Authorization"), r.Header.Get("Content-Type"), b}
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.WriteHeader(http.StatusOK)
	}))
	defer recv.Close()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", recv.URL)
	t.Setenv("OTEL_EXPORTER_OTLP_HEADERS", "Authorization=Bearer t0k")
	t.Setenv("OTEL_SERVICE_NAME", "from-env")

	p, err := Setup(context.Background(), Config{ServiceName: "svc"})
	if err != nil {
		t.Fatal(err)
	}
	if p.TracesExporter != ExporterOTLP {
		t.Fatalf("exporter %q", p.TracesExporter)
	}
	_, span := p.TracerProvider.Tracer("t").Start(context.Background(), "otlp-span", trace.WithSpanKind(trace.SpanKindInternal))
	span.End()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-posts:
		if got.path != "/v1/traces" || got.auth != "Bearer t0k" || got.ctype != "application/x-protobuf" {
			t.Errorf("post %s auth=%q type=%q", got.path, got.auth, got.ctype)
		}
		// The protobuf carries strings verbatim.
		if !bytes.Contains(got.body, []byte("otlp-span")) || !bytes.Contains(got.body, []byte("from-env")) {
			t.Errorf("body lacks span name or OTEL_SERVICE_NAME")
		}
	default:
		t.Fatal("no span exported after Shutdown")
	}
}

func TestProvidersEndToEnd(t *testing.T) {
	// Setup + Health + real NATS: the wiring main will do.
	clearOTELEnv(t)
	p, err := Setup(context.Background(), Config{ServiceName: "svc", Prometheus: true})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = p.Shutdown(context.Background()) }()
	srv := testenv.StartNATS(t)
	nc := srv.Connect(t)
	h := NewHealth(nil)
	h.AddCheck("nats", NATSCheck(nc))
	hs := httptest.NewServer(h.Handler(p.MetricsHandler))
	defer hs.Close()
	if code, _ := get(t, hs.URL+"/readyz"); code != http.StatusOK {
		t.Fatalf("readyz %d", code)
	}
	if code, body := get(t, hs.URL+"/metrics"); code != http.StatusOK || !strings.Contains(body, "process_") {
		t.Fatalf("metrics %d", code)
	}
}
