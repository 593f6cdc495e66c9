package telemetry

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// BenchmarkConsumerSpan measures one job's CONSUMER span, started and
// ended, with the SDK set up as in production (batch span processor, here
// with a no-op exporter):
//
//   - worker: as the worker makes it, eight attributes set once the span
//     has started;
//   - 9-attributes: one attribute more. Past eight the SDK builds a hash
//     table per span when it ends (its attribute de-duplication);
//   - 8-as-start-options: the same eight attributes given as start
//     options, which the SDK copies twice (config, then span).
//
// docs/observability.md quotes the figures:
//
//	go test -run '^$' -bench ConsumerSpan -count 5 ./internal/telemetry
func BenchmarkConsumerSpan(b *testing.B) {
	job := []attribute.KeyValue{attribute.String("connector.job.name", "bench.noop"), attribute.Int("connector.job.attempt", 1)}
	const id = "0123456789abcdefghij"
	run := func(b *testing.B, start func(trace.Tracer, *ConsumerSpans) trace.Span) {
		tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(tracetest.NewNoopExporter()))
		defer func() { _ = tp.Shutdown(context.Background()) }()
		tr := tp.Tracer("bench")
		spans := NewConsumerSpans(tr, ParentMode, "CONNECTOR_JOBS", "jobs~root~0")
		b.ReportAllocs()
		for b.Loop() {
			start(tr, spans).End()
		}
	}
	carrier := HeaderCarrier(nats.Header{})
	ctx := context.Background()
	b.Run("worker", func(b *testing.B) {
		run(b, func(_ trace.Tracer, s *ConsumerSpans) trace.Span {
			_, span := s.Start(ctx, id, carrier, job...)
			return span
		})
	})
	b.Run("9-attributes", func(b *testing.B) {
		nine := append([]attribute.KeyValue{attribute.String("connector.job.channel", "root")}, job...)
		run(b, func(_ trace.Tracer, s *ConsumerSpans) trace.Span {
			_, span := s.Start(ctx, id, carrier, nine...)
			return span
		})
	})
	b.Run("8-as-start-options", func(b *testing.B) {
		attrs := append(append(append([]attribute.KeyValue(nil), fixedAttrs("process", "CONNECTOR_JOBS").attrs...),
			attribute.String("messaging.consumer.group.name", "jobs~root~0"), attribute.String("messaging.message.id", id)), job...)
		run(b, func(tr trace.Tracer, _ *ConsumerSpans) trace.Span {
			_, span := tr.Start(ctx, "process CONNECTOR_JOBS", trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(attrs...))
			return span
		})
	})
}
