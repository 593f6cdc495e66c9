package telemetry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/exemplar"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
)

// Traces exporter names accepted by Config.TracesExporter and
// OTEL_TRACES_EXPORTER.
const (
	ExporterOTLP    = "otlp"
	ExporterNone    = "none"
	ExporterConsole = "console"
)

// ErrUnknownExporter is returned by Setup for an exporter name it does not
// know.
var ErrUnknownExporter = errors.New("telemetry: unknown traces exporter")

// Config selects what Setup builds.
type Config struct {
	// ServiceName becomes the resource attribute service.name (unless
	// OTEL_SERVICE_NAME is set, which wins, as the specification says).
	ServiceName string
	// Prometheus builds an OpenTelemetry MeterProvider exported through a
	// Prometheus registry of its own, served by Providers.MetricsHandler.
	// When false, metrics go to a noop MeterProvider.
	Prometheus bool
	// TracesExporter is "otlp", "console" or "none". Empty reads
	// OTEL_TRACES_EXPORTER; when that is empty too, "otlp" is chosen if
	// OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is
	// set, else "none".
	TracesExporter string

	// ConsoleOutput receives the "console" exporter's spans, one JSON object
	// per line. Nil means standard output.
	ConsoleOutput io.Writer
}

// Providers is what Setup built. Nothing is installed globally: hand the
// providers and the propagator to the code that needs them (or call
// otel.SetTracerProvider / otel.SetTextMapPropagator yourself in main).
type Providers struct {
	TracerProvider trace.TracerProvider
	MeterProvider  metric.MeterProvider
	// Propagator is W3C tracecontext + baggage.
	Propagator propagation.TextMapPropagator
	// MetricsHandler serves the Prometheus text format; nil unless
	// Config.Prometheus.
	MetricsHandler http.Handler
	// Registry is the Prometheus registry behind MetricsHandler (nil unless
	// Config.Prometheus): register extra collectors on it.
	Registry *prometheus.Registry
	// TracesExporter is the exporter actually chosen.
	TracesExporter string
	// Shutdown flushes pending spans and stops the providers. Call it once,
	// with a deadline, when the process ends.
	Shutdown func(context.Context) error
}

// NewPropagator returns the propagator the runtime uses on NATS headers:
// W3C tracecontext + baggage.
func NewPropagator() propagation.TextMapPropagator {
	return propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
}

// Setup builds the tracer and meter providers.
//
// The OTLP exporter is OTLP over HTTP/protobuf (otlptracehttp); it reads the
// standard environment itself: OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT,
// _HEADERS, _TIMEOUT, _COMPRESSION, _INSECURE, _CERTIFICATE... The SDK
// reads OTEL_TRACES_SAMPLER[_ARG] and OTEL_BSP_*; the resource reads
// OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES. OTEL_SDK_DISABLED=true
// (read here) makes tracing and the OpenTelemetry metrics noops.
func Setup(ctx context.Context, cfg Config) (*Providers, error) {
	p := &Providers{Propagator: NewPropagator()}
	var shutdowns []func(context.Context) error

	res, err := newResource(ctx, cfg.ServiceName)
	if err != nil {
		return nil, err
	}

	disabled := sdkDisabled()
	exp := chooseExporter(cfg.TracesExporter)
	if disabled {
		exp = ExporterNone
	}
	p.TracesExporter = exp
	switch exp {
	case ExporterNone:
		p.TracerProvider = tracenoop.NewTracerProvider()
	case ExporterOTLP, ExporterConsole:
		var se sdktrace.SpanExporter
		if exp == ExporterOTLP {
			se, err = otlptracehttp.New(ctx)
			if err != nil {
				return nil, fmt.Errorf("telemetry: otlp trace exporter: %w", err)
			}
		} else {
			w := cfg.ConsoleOutput
			if w == nil {
				w = os.Stdout
			}
			se = &consoleExporter{w: w}
		}
		tp := sdktrace.NewTracerProvider(
			sdktrace.WithBatcher(se),
			sdktrace.WithResource(res),
		)
		p.TracerProvider = tp
		shutdowns = append(shutdowns, tp.Shutdown)
	default:
		return nil, fmt.Errorf("%w: %q (want otlp, console or none)", ErrUnknownExporter, exp)
	}

	if cfg.Prometheus {
		reg := prometheus.NewRegistry()
		reg.MustRegister(
			collectors.NewGoCollector(),
			collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		)
		p.Registry = reg
		p.MetricsHandler = promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
		p.MeterProvider = metricnoop.NewMeterProvider()
		if !disabled { // else the registry serves the Go and process collectors only
			pe, err := otelprom.New(otelprom.WithRegisterer(reg))
			if err != nil {
				return nil, errors.Join(fmt.Errorf("telemetry: prometheus exporter: %w", err), runAll(ctx, shutdowns))
			}
			// Exemplars cost an offer per measurement on the hot path and
			// Prometheus text output drops them anyway.
			mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(pe), sdkmetric.WithResource(res),
				sdkmetric.WithExemplarFilter(exemplar.AlwaysOffFilter))
			p.MeterProvider = mp
			shutdowns = append(shutdowns, mp.Shutdown)
		}
	} else {
		p.MeterProvider = metricnoop.NewMeterProvider()
	}

	var once sync.Once
	var shutdownErr error
	p.Shutdown = func(ctx context.Context) error {
		once.Do(func() { shutdownErr = runAll(ctx, shutdowns) })
		return shutdownErr
	}
	return p, nil
}

func runAll(ctx context.Context, fs []func(context.Context) error) error {
	var errs []error
	for _, f := range fs {
		if err := f(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// sdkDisabled reports OTEL_SDK_DISABLED=true (case-insensitive; any other
// value is false, as the specification says): every signal then gets a noop
// provider, whatever the exporter settings. The Go SDK does not read it.
func sdkDisabled() bool {
	return strings.EqualFold(os.Getenv("OTEL_SDK_DISABLED"), "true")
}

func chooseExporter(name string) string {
	if name == "" {
		name = os.Getenv("OTEL_TRACES_EXPORTER")
	}
	name = strings.ToLower(strings.TrimSpace(name))
	if name == "" {
		if os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "" {
			return ExporterOTLP
		}
		return ExporterNone
	}
	return name
}

func newResource(ctx context.Context, service string) (*resource.Resource, error) {
	var attrs []attribute.KeyValue
	if service != "" {
		attrs = append(attrs, semconv.ServiceName(service))
	}
	// WithFromEnv comes last so OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES win.
	r, err := resource.New(ctx,
		resource.WithTelemetrySDK(),
		resource.WithHost(),
		resource.WithSchemaURL(semconv.SchemaURL),
		resource.WithAttributes(attrs...),
		resource.WithFromEnv(),
	)
	if err != nil && r == nil {
		return nil, fmt.Errorf("telemetry: resource: %w", err)
	}
	// Partial resources (a detector failed) are still usable.
	return r, nil
}

// consoleExporter writes finished spans as JSON lines: the "console"
// exporter, for development. It keeps the module free of stdouttrace.
type consoleExporter struct {
	mu sync.Mutex
	w  io.Writer
}

type consoleSpan struct {
	Name       string            `json:"name"`
	Kind       string            `json:"kind"`
	TraceID    string            `json:"trace_id"`
	SpanID     string            `json:"span_id"`
	ParentID   string            `json:"parent_span_id,omitempty"`
	Start      string            `json:"start"`
	DurationMS float64           `json:"duration_ms"`
	Status     string            `json:"status"`
	StatusMsg  string            `json:"status_message,omitempty"`
	Attributes map[string]string `json:"attributes,omitempty"`
	Links      []string          `json:"links,omitempty"`
}

func (e *consoleExporter) ExportSpans(_ context.Context, spans []sdktrace.ReadOnlySpan) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	enc := json.NewEncoder(e.w)
	for _, s := range spans {
		cs := consoleSpan{
			Name:       s.Name(),
			Kind:       s.SpanKind().String(),
			TraceID:    s.SpanContext().TraceID().String(),
			SpanID:     s.SpanContext().SpanID().String(),
			Start:      s.StartTime().UTC().Format("2006-01-02T15:04:05.000000Z07:00"),
			DurationMS: float64(s.EndTime().Sub(s.StartTime()).Microseconds()) / 1000,
			Status:     s.Status().Code.String(),
			StatusMsg:  s.Status().Description,
		}
		if s.Parent().IsValid() {
			cs.ParentID = s.Parent().SpanID().String()
		}
		if a := s.Attributes(); len(a) > 0 {
			cs.Attributes = make(map[string]string, len(a))
			for _, kv := range a {
				cs.Attributes[string(kv.Key)] = kv.Value.String()
			}
		}
		for _, l := range s.Links() {
			cs.Links = append(cs.Links, l.SpanContext.TraceID().String()+"/"+l.SpanContext.SpanID().String())
		}
		if err := enc.Encode(cs); err != nil {
			return err
		}
	}
	return nil
}

func (e *consoleExporter) Shutdown(context.Context) error { return nil }
