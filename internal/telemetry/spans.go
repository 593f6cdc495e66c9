package telemetry

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
)

// MessagingSystem is the messaging.system value of every span: the
// semantic conventions register no value for NATS, "nats" is what other
// instrumentations use.
const MessagingSystem = "nats"

// LinkMode says how a consumer span relates to the producer's span.
type LinkMode int

const (
	// ParentMode (the default) makes the consumer span a child of the
	// producer's span: one trace from enqueue to execution. Good for jobs
	// executed once, soon after they are enqueued.
	ParentMode LinkMode = iota
	// LinkedMode starts a new trace whose root links to the producer's
	// span, as the messaging conventions recommend for batch or delayed
	// processing: retries and long waits do not stretch the producer's
	// trace.
	LinkedMode
)

func (m LinkMode) String() string {
	switch m {
	case ParentMode:
		return "parent"
	case LinkedMode:
		return "link"
	}
	return fmt.Sprintf("LinkMode(%d)", int(m))
}

var defaultPropagator = NewPropagator()

// propagator (used by Inject and Extract in carrier.go too) returns the
// globally installed propagator when main installed
// one (otel.SetTextMapPropagator), else W3C tracecontext + baggage. The
// global default is an empty composite that would propagate nothing.
func propagator() propagation.TextMapPropagator {
	p := otel.GetTextMapPropagator()
	if p == nil {
		return defaultPropagator
	}
	// Fields() allocates: remember the answer for the propagator seen last.
	if c := propCache.Load(); c != nil && c.p == p {
		return c.use
	}
	use := defaultPropagator
	if len(p.Fields()) > 0 {
		use = p
	}
	propCache.Store(&propChoice{p: p, use: use})
	return use
}

type propChoice struct{ p, use propagation.TextMapPropagator }

var propCache atomic.Pointer[propChoice]

func tracerOrNoop(tr trace.Tracer) trace.Tracer {
	if tr == nil {
		return tracenoop.NewTracerProvider().Tracer("")
	}
	return tr
}

// StartProducerSpan starts the span of a message publish, following the
// OpenTelemetry messaging conventions: name "send <destination>", kind
// PRODUCER, attributes messaging.system="nats",
// messaging.destination.name, messaging.operation.type="send",
// messaging.operation.name="send", messaging.message.id (when not empty)
// and extra. It then injects the span context into h (keys written as
// given: "traceparent", "tracestate", "baggage"), so h must not be nil.
//
// destination should be a low-cardinality name (the stream or the subject
// template, not a subject containing an id). End the span when the publish
// is acknowledged; RecordError it when the publish fails. A nil tr starts a
// non-recording span that still propagates ctx's span context.
func StartProducerSpan(ctx context.Context, tr trace.Tracer, destination, messageID string, h nats.Header, extra ...attribute.KeyValue) (context.Context, trace.Span) {
	fixed := fixedAttrs("send", destination)
	attrs := make([]attribute.KeyValue, 0, len(fixed.attrs)+1+len(extra))
	attrs = append(attrs, fixed.attrs...)
	if messageID != "" {
		attrs = append(attrs, semconv.MessagingMessageIDKey.String(messageID))
	}
	attrs = append(attrs, extra...)
	ctx, span := tracerOrNoop(tr).Start(ctx, fixed.name,
		trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(attrs...),
	)
	if h != nil {
		Inject(ctx, h)
	}
	return ctx, span
}

// StartConsumerSpan starts the span of a message's processing: name
// "process <destination>", kind CONSUMER, attributes
// messaging.system="nats", messaging.destination.name,
// messaging.operation.type="process", messaging.operation.name="process",
// messaging.consumer.group.name (the durable consumer; omitted when empty),
// messaging.message.id (when not empty) and extra.
//
// The producer's context is extracted from h. In ParentMode the span is its
// child (same trace id); in LinkedMode the span starts a new trace with a
// link to it. Baggage from h is in the returned context either way. When h
// carries no trace context the span is a child of ctx's span, if any.
func StartConsumerSpan(ctx context.Context, tr trace.Tracer, mode LinkMode, destination, consumerGroup, messageID string, h nats.Header, extra ...attribute.KeyValue) (context.Context, trace.Span) {
	fixed := fixedAttrs("process", destination)
	attrs := make([]attribute.KeyValue, 0, len(fixed.attrs)+2+len(extra))
	attrs = append(attrs, fixed.attrs...)
	if consumerGroup != "" {
		attrs = append(attrs, semconv.MessagingConsumerGroupNameKey.String(consumerGroup))
	}
	if messageID != "" {
		attrs = append(attrs, semconv.MessagingMessageIDKey.String(messageID))
	}
	attrs = append(attrs, extra...)
	opts := []trace.SpanStartOption{
		trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(attrs...),
	}

	pctx := Extract(ctx, h)
	if mode == LinkedMode {
		if psc := trace.SpanContextFromContext(pctx); psc.IsValid() && psc.IsRemote() {
			opts = append(opts, trace.WithNewRoot(), trace.WithLinks(trace.Link{SpanContext: psc}))
		}
	}
	return tracerOrNoop(tr).Start(pctx, fixed.name, opts...)
}

// fixed is what every span of one operation on one destination shares:
// built once, not per message.
type fixed struct {
	name  string
	attrs []attribute.KeyValue
}

type fixedKey struct{ op, destination string }

var (
	fixedMu    sync.RWMutex
	fixedCache = map[fixedKey]*fixed{}
)

func fixedAttrs(op, destination string) *fixed {
	key := fixedKey{op, destination}
	fixedMu.RLock()
	f := fixedCache[key]
	fixedMu.RUnlock()
	if f != nil {
		return f
	}
	opType := semconv.MessagingOperationTypeSend
	if op == "process" {
		opType = semconv.MessagingOperationTypeProcess
	}
	f = &fixed{name: op + " " + destination, attrs: []attribute.KeyValue{
		semconv.MessagingSystemKey.String(MessagingSystem),
		semconv.MessagingDestinationNameKey.String(destination),
		opType,
		semconv.MessagingOperationNameKey.String(op),
	}}
	fixedMu.Lock()
	if len(fixedCache) < 10000 { // destinations are few; never grow without bound
		fixedCache[key] = f
	}
	fixedMu.Unlock()
	return f
}

// RecordError records err on span as an "exception" event (exception.type,
// exception.message), sets error.type to err's Go type and the span status
// to Error. The message is passed through Redact first. A nil err does nothing.
func RecordError(span trace.Span, err error) {
	if err == nil || span == nil {
		return
	}
	typ := fmt.Sprintf("%T", err)
	msg := Redact(err.Error())
	// span.RecordError would store err.Error() verbatim; the exception event
	// is built by hand so the message is redacted.
	span.AddEvent(semconv.ExceptionEventName, trace.WithAttributes(
		semconv.ExceptionTypeKey.String(typ),
		semconv.ExceptionMessageKey.String(msg),
	))
	span.SetAttributes(semconv.ErrorTypeKey.String(typ))
	span.SetStatus(codes.Error, msg)
}
