package telemetry

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/internal/wire"
	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

func newTestTracer(t *testing.T) (trace.Tracer, *tracetest.InMemoryExporter) {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	return tp.Tracer("test"), exp
}

func attrMap(kvs []attribute.KeyValue) map[string]string {
	m := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		m[string(kv.Key)] = kv.Value.String()
	}
	return m
}

func findSpan(t *testing.T, exp *tracetest.InMemoryExporter, name string) tracetest.SpanStub {
	t.Helper()
	for _, s := range exp.GetSpans() {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("span %q not found among %d spans", name, len(exp.GetSpans()))
	return tracetest.SpanStub{}
}

func wantAttrs(t *testing.T, got map[string]string, want map[string]string) {
	t.Helper()
	for k, v := range want {
		if got[k] != v {
			t.Errorf("attribute %s = %q, want %q (all: %v)", k, got[k], v, got)
		}
	}
}

func TestProducerSpanAttributesAndHeader(t *testing.T) {
	tr, exp := newTestTracer(t)
	h := nats.Header{}
	_, span := StartProducerSpan(context.Background(), tr, "CONNECTOR_JOBS", "job-1", h, AttrJobName.String("export_order"))
	span.End()

	s := findSpan(t, exp, "send CONNECTOR_JOBS")
	if s.SpanKind != trace.SpanKindProducer {
		t.Errorf("kind %v, want producer", s.SpanKind)
	}
	wantAttrs(t, attrMap(s.Attributes), map[string]string{
		"messaging.system":           "nats",
		"messaging.destination.name": "CONNECTOR_JOBS",
		"messaging.operation.type":   "send",
		"messaging.operation.name":   "send",
		"messaging.message.id":       "job-1",
		"job.name":                   "export_order",
	})
	// The header key is literally lower-case "traceparent" (nats.Header is
	// case-sensitive; other-language clients look it up that way).
	v, ok := h["traceparent"]
	if !ok || len(v) != 1 {
		t.Fatalf("no lower-case traceparent header: %v", h)
	}
	if _, bad := h["Traceparent"]; bad {
		t.Errorf("canonicalized Traceparent written: %v", h)
	}
	want := "00-" + s.SpanContext.TraceID().String() + "-" + s.SpanContext.SpanID().String() + "-01"
	if v[0] != want {
		t.Errorf("traceparent %q, want %q", v[0], want)
	}
}

// TestPropagationThroughNATS publishes a message with the producer's headers
// on an embedded server, receives it, and starts the consumer span from the
// received headers.
func TestPropagationThroughNATS(t *testing.T) {
	srv := testenv.StartNATS(t)
	nc := srv.Connect(t)
	subject := testenv.Prefix(t) + ".jobs"
	sub, err := nc.SubscribeSync(subject)
	if err != nil {
		t.Fatal(err)
	}

	for _, mode := range []LinkMode{ParentMode, LinkedMode} {
		t.Run(mode.String(), func(t *testing.T) {
			tr, exp := newTestTracer(t)
			bag, _ := baggage.Parse("tenant=acme")
			ctx := baggage.ContextWithBaggage(context.Background(), bag)

			msg := nats.NewMsg(subject)
			_, prod := StartProducerSpan(ctx, tr, subject, "m-1", msg.Header)
			if err := nc.PublishMsg(msg); err != nil {
				t.Fatal(err)
			}
			prod.End()

			got, err := sub.NextMsg(5 * time.Second)
			if err != nil {
				t.Fatal(err)
			}
			cctx, cons := StartConsumerSpan(context.Background(), tr, mode, subject, "workers", "m-1", got.Header)
			cons.End()

			if b := baggage.FromContext(cctx).Member("tenant").Value(); b != "acme" {
				t.Errorf("baggage tenant=%q, want acme", b)
			}
			p := findSpan(t, exp, "send "+subject)
			c := findSpan(t, exp, "process "+subject)
			if c.SpanKind != trace.SpanKindConsumer {
				t.Errorf("consumer kind %v", c.SpanKind)
			}
			wantAttrs(t, attrMap(c.Attributes), map[string]string{
				"messaging.system":              "nats",
				"messaging.destination.name":    subject,
				"messaging.operation.type":      "process",
				"messaging.operation.name":      "process",
				"messaging.consumer.group.name": "workers",
				"messaging.message.id":          "m-1",
			})
			switch mode {
			case ParentMode:
				if c.SpanContext.TraceID() != p.SpanContext.TraceID() {
					t.Errorf("trace id %s, want producer's %s", c.SpanContext.TraceID(), p.SpanContext.TraceID())
				}
				if c.Parent.SpanID() != p.SpanContext.SpanID() || !c.Parent.IsRemote() {
					t.Errorf("parent %v, want remote producer span %s", c.Parent, p.SpanContext.SpanID())
				}
				if len(c.Links) != 0 {
					t.Errorf("unexpected links %v", c.Links)
				}
			case LinkedMode:
				if c.SpanContext.TraceID() == p.SpanContext.TraceID() {
					t.Error("linked mode kept the producer's trace id")
				}
				if c.Parent.IsValid() {
					t.Errorf("linked mode span has parent %v", c.Parent)
				}
				if len(c.Links) != 1 || c.Links[0].SpanContext.SpanID() != p.SpanContext.SpanID() ||
					c.Links[0].SpanContext.TraceID() != p.SpanContext.TraceID() {
					t.Errorf("links %v, want one to the producer span", c.Links)
				}
			}
		})
	}
}

func TestConsumerSpanWithoutTraceHeaders(t *testing.T) {
	tr, exp := newTestTracer(t)
	_, span := StartConsumerSpan(context.Background(), tr, LinkedMode, "S", "", "", nats.Header{})
	span.End()
	_, span = StartConsumerSpan(context.Background(), tr, ParentMode, "S", "", "", nil)
	span.End()
	for _, s := range exp.GetSpans() {
		if s.Parent.IsValid() || len(s.Links) != 0 {
			t.Errorf("span %s: parent %v links %v, want a plain root", s.Name, s.Parent, s.Links)
		}
		if _, ok := attrMap(s.Attributes)["messaging.consumer.group.name"]; ok {
			t.Error("empty consumer group recorded")
		}
	}
}

func TestNilTracerStillPropagates(t *testing.T) {
	tr, exp := newTestTracer(t)
	ctx, parent := tr.Start(context.Background(), "enqueue")
	h := nats.Header{}
	_, span := StartProducerSpan(ctx, nil, "S", "", h)
	span.End()
	parent.End()
	if got := h.Get("traceparent"); !strings.Contains(got, parent.SpanContext().TraceID().String()) {
		t.Errorf("traceparent %q does not carry the caller's trace", got)
	}
	if n := len(exp.GetSpans()); n != 1 {
		t.Errorf("%d spans recorded, want only the caller's", n)
	}
}

func TestRecordError(t *testing.T) {
	tr, exp := newTestTracer(t)
	_, span := tr.Start(context.Background(), "op")
	RecordError(span, nil)
	RecordError(span, errors.New("dial redis://:hunter2@db:6379: refused"))
	span.End()
	s := findSpan(t, exp, "op")
	if s.Status.Code != codes.Error {
		t.Errorf("status %v", s.Status)
	}
	if strings.Contains(s.Status.Description, "hunter2") {
		t.Errorf("password in status: %q", s.Status.Description)
	}
	if len(s.Events) != 1 || s.Events[0].Name != "exception" {
		t.Fatalf("events %v", s.Events)
	}
	ev := attrMap(s.Events[0].Attributes)
	if strings.Contains(ev["exception.message"], "hunter2") || ev["exception.type"] != "*errors.errorString" {
		t.Errorf("exception event %v", ev)
	}
	if attrMap(s.Attributes)["error.type"] != "*errors.errorString" {
		t.Errorf("error.type missing: %v", s.Attributes)
	}
}

type uncomparableCtx struct {
	context.Context
	tags []string
}

func TestSameContext(t *testing.T) {
	a, cancel := context.WithCancel(context.Background())
	defer cancel()
	if !sameContext(a, a) || sameContext(a, context.Background()) {
		t.Fatal("pointer contexts")
	}
	u := uncomparableCtx{Context: a, tags: []string{"x"}}
	if sameContext(u, u) {
		t.Fatal("an uncomparable context is never the same")
	}
}

// A job's trace context: TraceOf writes the W3C fields (and baggage) into
// an envelope's trace, JobCarrier prefers it to the headers, and a
// consumer span started from it is the producer's child with its baggage.
func TestJobTraceContext(t *testing.T) {
	tr, exp := newTestTracer(t)
	if tc := TraceOf(context.Background()); tc != nil {
		t.Fatalf("no span context, trace %q", tc)
	}
	m, err := baggage.NewMember("tenant", "acme")
	if err != nil {
		t.Fatal(err)
	}
	bag, err := baggage.New(m)
	if err != nil {
		t.Fatal(err)
	}
	ctx, producer := tr.Start(baggage.ContextWithBaggage(context.Background(), bag), "producer")
	tc := TraceOf(ctx)
	producer.End()
	want := "00-" + producer.SpanContext().TraceID().String() + "-" + producer.SpanContext().SpanID().String() + "-01"
	if tc.Get("traceparent") != want || tc.Get("baggage") != "tenant=acme" {
		t.Fatalf("trace %q, want traceparent %s and the baggage", tc, want)
	}
	other := nats.Header{"traceparent": []string{"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}}
	env := &wire.Envelope{Trace: tc}
	if got := JobCarrier(env, other).Get("traceparent"); got != want {
		t.Fatalf("JobCarrier read %q, want the envelope's %s", got, want)
	}
	if got := JobCarrier(&wire.Envelope{}, other).Get("traceparent"); got != other["traceparent"][0] {
		t.Fatalf("JobCarrier without an envelope trace read %q, want the header's", got)
	}
	if got := ExtractFrom(context.Background(), JobCarrier(nil, nil)); got != context.Background() {
		t.Fatal("nothing to extract: want the context unchanged")
	}
	sctx, span := NewConsumerSpans(tr, ParentMode, "JOBS", "jobs").Start(context.Background(), "J1", JobCarrier(env, nil))
	span.End()
	s := findSpan(t, exp, "process JOBS")
	if s.Parent.SpanID() != producer.SpanContext().SpanID() || s.SpanContext.TraceID() != producer.SpanContext().TraceID() {
		t.Fatalf("consumer span parent %s in trace %s, want the producer's", s.Parent.SpanID(), s.SpanContext.TraceID())
	}
	if v := baggage.FromContext(sctx).Member("tenant").Value(); v != "acme" {
		t.Fatalf("baggage tenant %q", v)
	}
}
