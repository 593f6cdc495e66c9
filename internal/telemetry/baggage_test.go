package telemetry

import (
	"context"
	"testing"
	"time"

	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/internal/wire"
	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/baggage"
)

// Baggage travels on its own: W3C baggage does not need a span context,
// and with tracing off (the "none" exporter, a noop tracer) or outside any
// trace, a context's baggage still reaches the consumer, through a job's
// envelope trace and through NATS headers. It used to be dropped whenever
// the context carried no valid span context.
func TestBaggageWithoutSpanContextPropagates(t *testing.T) {
	bag, err := baggage.Parse("tenant=acme")
	if err != nil {
		t.Fatal(err)
	}
	ctx := baggage.ContextWithBaggage(context.Background(), bag)

	// A job's envelope.
	tc := TraceOf(ctx)
	if tc.Get("baggage") != "tenant=acme" {
		t.Fatalf("envelope trace %q: want the baggage", tc)
	}
	env := &wire.Envelope{Trace: tc}
	cctx, span := NewConsumerSpans(nil, ParentMode, "JOBS", "jobs").Start(context.Background(), "J1", JobCarrier(env, nil))
	span.End()
	if v := baggage.FromContext(cctx).Member("tenant").Value(); v != "acme" {
		t.Fatalf("job run's baggage tenant %q, want acme", v)
	}

	// An event's headers, through a real server, with no tracer (tracing off).
	srv := testenv.StartNATS(t)
	nc := srv.Connect(t)
	subject := testenv.Prefix(t) + ".events"
	sub, err := nc.SubscribeSync(subject)
	if err != nil {
		t.Fatal(err)
	}
	msg := nats.NewMsg(subject)
	_, prod := StartProducerSpan(ctx, nil, subject, "e-1", msg.Header)
	prod.End()
	if err := nc.PublishMsg(msg); err != nil {
		t.Fatal(err)
	}
	got, err := sub.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if v := got.Header.Get("baggage"); v != "tenant=acme" {
		t.Fatalf("baggage header %q, want tenant=acme (headers %v)", v, got.Header)
	}
	ectx, cons := StartConsumerSpan(context.Background(), nil, LinkedMode, subject, "l", "e-1", got.Header)
	cons.End()
	if v := baggage.FromContext(ectx).Member("tenant").Value(); v != "acme" {
		t.Fatalf("event handler's baggage tenant %q, want acme", v)
	}

	// Nothing to carry: still nothing written.
	if tc := TraceOf(context.Background()); tc != nil {
		t.Fatalf("empty context: trace %q", tc)
	}
	h := nats.Header{}
	Inject(context.Background(), h)
	if len(h) != 0 {
		t.Fatalf("empty context: headers %v", h)
	}
}
