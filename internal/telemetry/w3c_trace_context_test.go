package telemetry

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/connector-go/connector/internal/wire"
	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

const (
	w3cTraceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	w3cSpanID  = "00f067aa0ba902b7"
)

func tracestateMembers(n int) string {
	m := make([]string, n)
	for i := range m {
		m[i] = fmt.Sprintf("v%d=x%d", i, i)
	}
	return strings.Join(m, ",")
}

func baggageMembers(n int, value string) string {
	m := make([]string, n)
	for i := range m {
		m[i] = fmt.Sprintf("k%d=%s", i, value)
	}
	return strings.Join(m, ",")
}

// A producer in another language puts W3C trace context in the headers (or
// an envelope's trace) with odd but valid, or invalid, values: each is
// extracted as the W3C Trace Context and Baggage specifications say, bounded,
// and an invalid traceparent starts a new trace rather than failing the job.
// Each case runs twice per carrier, so the one-slot extraction cache is hit too.
func TestW3CTraceContextFromOtherProducers(t *testing.T) {
	tp := "00-" + w3cTraceID + "-" + w3cSpanID + "-01"
	cases := []struct {
		name        string
		fields      map[string]string
		wantParent  bool
		wantState   int // tracestate members expected on the parent
		wantBaggage int // baggage members expected in the context
	}{
		{name: "valid", fields: map[string]string{"traceparent": tp}, wantParent: true},
		{name: "upper-case hex", fields: map[string]string{"traceparent": "00-" + strings.ToUpper(w3cTraceID) + "-" + w3cSpanID + "-01"}},
		{name: "upper-case span id", fields: map[string]string{"traceparent": "00-" + w3cTraceID + "-" + strings.ToUpper(w3cSpanID) + "-01"}},
		{name: "version ff", fields: map[string]string{"traceparent": "ff-" + w3cTraceID + "-" + w3cSpanID + "-01"}},
		{name: "version 00 with extra field", fields: map[string]string{"traceparent": tp + "-what"}},
		{name: "future version with extra fields", fields: map[string]string{"traceparent": "01-" + w3cTraceID + "-" + w3cSpanID + "-01-what-the-future-holds"}, wantParent: true},
		{name: "future version, flags not followed by a dash", fields: map[string]string{"traceparent": "01-" + w3cTraceID + "-" + w3cSpanID + "-01x"}},
		{name: "all-zero trace id", fields: map[string]string{"traceparent": "00-00000000000000000000000000000000-" + w3cSpanID + "-01"}},
		{name: "all-zero span id", fields: map[string]string{"traceparent": "00-" + w3cTraceID + "-0000000000000000-01"}},
		{name: "garbage", fields: map[string]string{"traceparent": strings.Repeat("z", 100000)}},
		{name: "tracestate of 32 members", fields: map[string]string{"traceparent": tp, "tracestate": tracestateMembers(32)}, wantParent: true, wantState: 32},
		{name: "tracestate of 33 members", fields: map[string]string{"traceparent": tp, "tracestate": tracestateMembers(33)}, wantParent: true},
		{name: "invalid traceparent, tracestate ignored", fields: map[string]string{"traceparent": "ff-" + w3cTraceID + "-" + w3cSpanID + "-01", "tracestate": "a=b"}},
		{name: "baggage", fields: map[string]string{"traceparent": tp, "baggage": "tenant=acme,user=u%201;prop"}, wantParent: true, wantBaggage: 2},
		{name: "oversized baggage", fields: map[string]string{"traceparent": tp, "baggage": "k=" + strings.Repeat("v", 9000)}, wantParent: true},
		{name: "too many baggage members", fields: map[string]string{"traceparent": tp, "baggage": baggageMembers(100, "v")}, wantParent: true, wantBaggage: 64},
		{name: "baggage without traceparent", fields: map[string]string{"baggage": "tenant=acme"}, wantBaggage: 1},
	}
	tr, exp := newTestTracer(t)
	spans := NewConsumerSpans(tr, ParentMode, "JOBS", "jobs")
	for _, c := range cases {
		carriers := map[string]func() propagation.TextMapCarrier{
			"headers": func() propagation.TextMapCarrier {
				h := nats.Header{"Nats-Msg-Id": []string{"J1"}}
				for k, v := range c.fields {
					h[k] = []string{v}
				}
				return JobCarrier(&wire.Envelope{}, h)
			},
			"envelope": func() propagation.TextMapCarrier {
				var tc wire.TraceContext
				for k, v := range c.fields {
					tc.Set(k, v)
				}
				if len(tc) < 4 { // JobCarrier wants at least one field
					tc.Set("x-other", "1")
				}
				return JobCarrier(&wire.Envelope{Trace: tc}, nil)
			},
		}
		for cname, carrier := range carriers {
			t.Run(c.name+"/"+cname, func(t *testing.T) {
				for run := 0; run < 2; run++ {
					exp.Reset()
					ctx, span := spans.Start(context.Background(), "J1", carrier())
					span.End()
					s := findSpan(t, exp, "process JOBS")
					parent := s.Parent
					if c.wantParent {
						if !parent.IsValid() || parent.TraceID().String() != w3cTraceID || parent.SpanID().String() != w3cSpanID || !parent.IsRemote() {
							t.Fatalf("run %d: parent %v, want the remote %s/%s", run, parent, w3cTraceID, w3cSpanID)
						}
						if n := parent.TraceState().Len(); n != c.wantState {
							t.Fatalf("run %d: tracestate of %d members, want %d", run, n, c.wantState)
						}
					} else {
						if parent.IsValid() {
							t.Fatalf("run %d: parent %v: an invalid traceparent must start a new trace", run, parent)
						}
						if !s.SpanContext.IsValid() || s.SpanContext.TraceID().String() == w3cTraceID {
							t.Fatalf("run %d: span context %v, want a new trace", run, s.SpanContext)
						}
					}
					if n := baggage.FromContext(ctx).Len(); n != c.wantBaggage {
						t.Fatalf("run %d: %d baggage members, want %d", run, n, c.wantBaggage)
					}
					if sc := trace.SpanContextFromContext(ctx); !sc.IsValid() {
						t.Fatalf("run %d: no span in the job's context", run)
					}
				}
			})
		}
	}
}

// The extraction cache is keyed by traceparent: a message with the same
// traceparent but a tracestate (or baggage) must not reuse, nor leave behind,
// another message's state.
func TestW3CTraceContextCacheKeepsStateApart(t *testing.T) {
	tr, exp := newTestTracer(t)
	spans := NewConsumerSpans(tr, ParentMode, "JOBS", "jobs")
	tp := "00-" + w3cTraceID + "-" + w3cSpanID + "-01"
	seq := []struct {
		h         nats.Header
		wantState string
		wantBag   int
	}{
		{nats.Header{"traceparent": {tp}}, "", 0},
		{nats.Header{"traceparent": {tp}, "tracestate": {"a=1"}}, "a=1", 0},
		{nats.Header{"traceparent": {tp}}, "", 0},
		{nats.Header{"traceparent": {tp}, "baggage": {"t=1"}}, "", 1},
		{nats.Header{"traceparent": {tp}}, "", 0},
		{nats.Header{"traceparent": {tp}, "Nats-Msg-Id": {"x"}}, "", 0},
	}
	for i, m := range seq {
		exp.Reset()
		ctx, span := spans.Start(context.Background(), "J", HeaderCarrier(m.h))
		span.End()
		s := findSpan(t, exp, "process JOBS")
		if got := s.Parent.TraceState().String(); got != m.wantState || s.Parent.SpanID().String() != w3cSpanID {
			t.Fatalf("message %d: parent %s tracestate %q, want %q", i, s.Parent.SpanID(), got, m.wantState)
		}
		if n := baggage.FromContext(ctx).Len(); n != m.wantBag {
			t.Fatalf("message %d: %d baggage members, want %d", i, n, m.wantBag)
		}
	}
}

// NATS headers, like HTTP ones, may repeat a key (nats.Header.Add; jnats and
// other clients do it). W3C Trace Context and Baggage say repeated tracestate
// and baggage headers are combined as one comma-separated list (RFC 9110
// field lines), within the usual bounds.
func TestW3CRepeatedListHeadersCombine(t *testing.T) {
	tr, exp := newTestTracer(t)
	tp := "00-" + w3cTraceID + "-" + w3cSpanID + "-01"
	h := nats.Header{}
	h.Add("traceparent", tp)
	h.Add("tracestate", "a=1,b=2")
	h.Add("tracestate", "c=3")
	h.Add("baggage", "tenant=acme")
	h.Add("baggage", "user=u1")
	ctx, span := StartConsumerSpan(context.Background(), tr, ParentMode, "EVENTS", "l", "e1", h)
	span.End()
	s := findSpan(t, exp, "process EVENTS")
	if got := s.Parent.TraceState().String(); got != "a=1,b=2,c=3" {
		t.Errorf("tracestate %q, want the headers combined: a=1,b=2,c=3", got)
	}
	bag := baggage.FromContext(ctx)
	if bag.Member("tenant").Value() != "acme" || bag.Member("user").Value() != "u1" {
		t.Errorf("baggage %q, want both headers' members", bag.String())
	}

	// Combined, the members are still bounded: 20+20 tracestate members
	// exceed 32 (the tracestate is dropped, the parent kept), and baggage
	// over 8192 bytes in all is dropped.
	exp.Reset()
	h = nats.Header{}
	h.Add("traceparent", tp)
	h.Add("tracestate", tracestateMembers(20))
	h.Add("tracestate", strings.ReplaceAll(tracestateMembers(20), "v", "w"))
	h.Add("baggage", "a="+strings.Repeat("x", 5000))
	h.Add("baggage", "b="+strings.Repeat("x", 5000))
	ctx, span = StartConsumerSpan(context.Background(), tr, ParentMode, "EVENTS", "l", "e2", h)
	span.End()
	s = findSpan(t, exp, "process EVENTS")
	if s.Parent.SpanID().String() != w3cSpanID || s.Parent.TraceState().Len() != 0 {
		t.Errorf("parent %s tracestate %q: want the parent, without the 40-member tracestate", s.Parent.SpanID(), s.Parent.TraceState())
	}
	if n := baggage.FromContext(ctx).Len(); n != 0 {
		t.Errorf("%d baggage members from 10 kB of baggage headers, want none", n)
	}
}
