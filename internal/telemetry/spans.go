package telemetry

import (
	"context"
	"fmt"
	"reflect"
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
func propagator() propagation.TextMapPropagator { return currentPropagator().use }

// currentPropagator is the choice for the propagator installed now; the
// same pointer while it stays installed (when its type is comparable: a
// composite propagator, a slice, gets a new choice each time).
func currentPropagator() *propChoice {
	p := otel.GetTextMapPropagator()
	if p == nil {
		return defaultChoice
	}
	// Fields() allocates: remember the answer for the propagator seen last.
	if c := propCache.Load(); c != nil && sameValue(c.p, p) {
		return c
	}
	use := defaultPropagator
	if len(p.Fields()) > 0 {
		use = p
	}
	c := &propChoice{p: p, use: use}
	propCache.Store(c)
	return c
}

type propChoice struct{ p, use propagation.TextMapPropagator }

var defaultChoice = &propChoice{use: defaultPropagator}

func sameValue(a, b any) bool {
	t := reflect.TypeOf(a)
	return t == reflect.TypeOf(b) && t != nil && t.Comparable() && a == b
}

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

// StartProducerBatchSpan starts the span of a batch publish of n messages:
// name "send <destination>", kind PRODUCER, the attributes of
// StartProducerSpan but the message id, and messaging.batch.message_count.
// The caller injects its context into every message of the batch.
func StartProducerBatchSpan(ctx context.Context, tr trace.Tracer, destination string, n int, extra ...attribute.KeyValue) (context.Context, trace.Span) {
	fixed := fixedAttrs("send", destination)
	attrs := make([]attribute.KeyValue, 0, len(fixed.attrs)+1+len(extra))
	attrs = append(attrs, fixed.attrs...)
	attrs = append(attrs, semconv.MessagingBatchMessageCount(n))
	attrs = append(attrs, extra...)
	return tracerOrNoop(tr).Start(ctx, fixed.name, trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(attrs...))
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
//
// The attributes are set once the span has started rather than given as
// start options (one copy instead of two): a sampler sees the span's name
// and kind, not its attributes.
func StartConsumerSpan(ctx context.Context, tr trace.Tracer, mode LinkMode, destination, consumerGroup, messageID string, h nats.Header, extra ...attribute.KeyValue) (context.Context, trace.Span) {
	return NewConsumerSpans(tr, mode, destination, consumerGroup).Start(ctx, messageID, HeaderCarrier(h), extra...)
}

// ConsumerSpans starts the CONSUMER spans of one destination and consumer
// group, with what they share built once (StartConsumerSpan for one-offs).
type ConsumerSpans struct {
	tr    trace.Tracer
	mode  LinkMode
	name  string
	attrs []attribute.KeyValue
}

// NewConsumerSpans prepares the spans of a consumer; see StartConsumerSpan.
func NewConsumerSpans(tr trace.Tracer, mode LinkMode, destination, consumerGroup string) *ConsumerSpans {
	fixed := fixedAttrs("process", destination)
	attrs := append([]attribute.KeyValue(nil), fixed.attrs...)
	if consumerGroup != "" {
		attrs = append(attrs, semconv.MessagingConsumerGroupNameKey.String(consumerGroup))
	}
	return &ConsumerSpans{tr: tracerOrNoop(tr), mode: mode, name: fixed.name, attrs: attrs}
}

// Start starts the span of one message, whose producer's context is in
// carrier (HeaderCarrier for headers; JobCarrier for a job); see
// StartConsumerSpan.
func (c *ConsumerSpans) Start(ctx context.Context, messageID string, carrier propagation.TextMapCarrier, extra ...attribute.KeyValue) (context.Context, trace.Span) {
	mode := c.mode
	// One span per message: the attribute and option slices are reused
	// (the SDK copies what it keeps before Start returns).
	b := spanBufs.Get().(*spanBuf)
	attrs := append(b.attrs[:0], c.attrs...)
	if messageID != "" {
		attrs = append(attrs, semconv.MessagingMessageIDKey.String(messageID))
	}
	attrs = append(attrs, extra...)
	opts := append(b.opts[:0], trace.WithSpanKind(trace.SpanKindConsumer))

	pctx := extractCached(ctx, carrier)
	if mode == LinkedMode {
		if psc := trace.SpanContextFromContext(pctx); psc.IsValid() && psc.IsRemote() {
			opts = append(opts, trace.WithNewRoot(), trace.WithLinks(trace.Link{SpanContext: psc}))
		}
	}
	sctx, span := c.tr.Start(pctx, c.name, opts...)
	// Set once the span is started, not as a start option: the SDK copies
	// start options' attributes into its config and then again into the
	// span, about 0.4 µs and 500 bytes per job more than one copy
	// (BenchmarkConsumerSpan). Samplers see the span's name ("process
	// <destination>") and kind, not these attributes.
	span.SetAttributes(attrs...)
	clear(attrs)
	clear(opts)
	b.attrs, b.opts = attrs[:0], opts[:0]
	spanBufs.Put(b)
	return sctx, span
}

type spanBuf struct {
	attrs []attribute.KeyValue
	opts  []trace.SpanStartOption
}

var spanBufs = sync.Pool{New: func() any {
	return &spanBuf{attrs: make([]attribute.KeyValue, 0, 12), opts: make([]trace.SpanStartOption, 0, 4)}
}}

// extractCached is ExtractFrom for consumers: the messages of one batch
// carry the same trace context, and a consumer starts every span from the
// same base context, so the last traceparent seen, its base and the
// context they gave are remembered (one slot; a miss just extracts).
func extractCached(ctx context.Context, c propagation.TextMapCarrier) context.Context {
	n := fields(c)
	if n == 0 {
		return ctx
	}
	tp := c.Get("traceparent")
	if tp == "" || n != 1 && (c.Get("tracestate") != "" || c.Get("baggage") != "") {
		return ExtractFrom(ctx, c)
	}
	prop := currentPropagator()
	if c := lastExtract.Load(); c != nil && c.traceparent == tp && c.prop == prop {
		if sameContext(c.base, ctx) {
			return c.out
		}
		return trace.ContextWithRemoteSpanContext(ctx, c.sc)
	}
	out := prop.use.Extract(ctx, c)
	sc := trace.SpanContextFromContext(out)
	if sc.IsValid() && sc.IsRemote() {
		lastExtract.Store(&extracted{traceparent: tp, sc: sc, prop: prop, base: ctx, out: out})
	}
	return out
}

// sameContext reports a == b; false for context types that cannot be
// compared (a struct holding a slice, say), where == panics.
func sameContext(a, b context.Context) (same bool) {
	defer func() {
		if recover() != nil {
			same = false
		}
	}()
	return a == b
}

type extracted struct {
	traceparent string
	sc          trace.SpanContext
	prop        *propChoice
	base, out   context.Context // out: base with sc as its remote parent
}

var lastExtract atomic.Pointer[extracted]

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
