package main

import (
	"context"
	"time"

	"github.com/connector-go/connector/dispatcher"
	"github.com/connector-go/connector/internal/app"
	"github.com/connector-go/connector/internal/telemetry"
	"github.com/connector-go/connector/worker"
	"github.com/nats-io/nats.go/jetstream"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

func jetstreamNew(c *app.Conns) (jetstream.JetStream, error) { return jetstream.New(c.NC) }

// benchTelemetry turns tracing (a real SDK provider that samples fraction
// of the traces, everything at 1, with the batch span processor of a
// production set-up and a no-op exporter) and metrics (Prometheus) on for
// the bench.
func benchTelemetry(ctx context.Context, fraction float64) ([]worker.Option, []dispatcher.Option, func(), error) {
	p, err := telemetry.Setup(ctx, telemetry.Config{ServiceName: "connector-bench", Prometheus: true, TracesExporter: telemetry.ExporterNone})
	if err != nil {
		return nil, nil, nil, err
	}
	sampler := sdktrace.AlwaysSample()
	if fraction < 1 {
		sampler = sdktrace.ParentBased(sdktrace.TraceIDRatioBased(fraction))
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sampler), sdktrace.WithBatcher(tracetest.NewNoopExporter()))
	shutdown := func() {
		c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = tp.Shutdown(c)
		_ = p.Shutdown(c)
	}
	return []worker.Option{worker.WithTracerProvider(tp), worker.WithMeterProvider(p.MeterProvider)},
		[]dispatcher.Option{dispatcher.WithTracerProvider(tp), dispatcher.WithMeterProvider(p.MeterProvider)},
		shutdown, nil
}
