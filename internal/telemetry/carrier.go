// Package telemetry holds the runtime's tracing, metrics, logging and health
// plumbing.
package telemetry

import (
	"context"
	"strings"

	"github.com/connector-go/connector/internal/wire"
	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// Inject writes ctx's span context and baggage into h (no-op when ctx
// carries neither).
func Inject(ctx context.Context, h nats.Header) {
	if !carries(ctx) {
		return
	}
	propagator().Inject(ctx, HeaderCarrier(h))
}

// TraceOf is ctx's trace context as a job envelope carries it (nil when
// ctx carries no span context and no baggage).
func TraceOf(ctx context.Context) wire.TraceContext {
	if !carries(ctx) {
		return nil
	}
	tc := make(wire.TraceContext, 0, 2)
	propagator().Inject(ctx, &tc)
	return tc
}

// carries reports whether ctx has something to propagate: a valid span
// context, or baggage (W3C baggage travels without a span context too:
// with tracing off, or outside any trace).
func carries(ctx context.Context) bool {
	return trace.SpanContextFromContext(ctx).IsValid() || baggage.FromContext(ctx).Len() > 0
}

// ExtractFrom returns ctx with the remote span context found in c, if any.
func ExtractFrom(ctx context.Context, c propagation.TextMapCarrier) context.Context {
	if fields(c) == 0 {
		return ctx
	}
	return propagator().Extract(ctx, c)
}

// JobCarrier is where a job message's trace context is: its envelope's
// trace, written by the Go dispatcher, else its headers, where publishers
// in other languages may put it (docs/protocol.md).
func JobCarrier(env *wire.Envelope, h nats.Header) propagation.TextMapCarrier {
	if env != nil && len(env.Trace) >= 2 {
		return &env.Trace
	}
	return HeaderCarrier(h)
}

// fields is how many fields c holds (-1: unknown).
func fields(c propagation.TextMapCarrier) int {
	switch c := c.(type) {
	case nil:
		return 0
	case HeaderCarrier:
		return len(c)
	case *wire.TraceContext:
		return len(*c) / 2
	}
	return -1
}

// HeaderCarrier adapts nats.Header to propagation.TextMapCarrier without
// canonicalizing keys: NATS headers are case-sensitive, and clients in other
// languages look for "traceparent" in lower case. (propagation.HeaderCarrier
// would write "Traceparent".)
type HeaderCarrier nats.Header

var _ propagation.TextMapCarrier = HeaderCarrier(nil)

// Get returns the first value of key (exact match first, then any case).
// The values of a repeated "tracestate" or "baggage" header are combined
// into one comma-separated list, as W3C Trace Context and Baggage say (the
// propagators then bound the whole list).
func (c HeaderCarrier) Get(key string) string {
	v := c[key]
	if len(v) == 0 {
		for k, kv := range c {
			if len(kv) > 0 && equalFold(k, key) {
				v = kv
				break
			}
		}
	}
	switch {
	case len(v) == 0:
		return ""
	case len(v) > 1 && (equalFold(key, "tracestate") || equalFold(key, "baggage")):
		return strings.Join(v, ",")
	}
	return v[0]
}

// Set stores key exactly as given.
func (c HeaderCarrier) Set(key, value string) { c[key] = []string{value} }

// Keys lists the keys present.
func (c HeaderCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

func equalFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}
