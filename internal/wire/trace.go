package wire

import (
	"fmt"
	"strings"
)

// TraceContext is the trace context a job carries in its envelope (key
// "trace"): the fields an OpenTelemetry text-map propagator writes (W3C
// "traceparent", "tracestate", "baggage"), as key/value pairs in the order
// they were written. *TraceContext is a propagation.TextMapCarrier.
//
// It travels in the body rather than in NATS headers because a message
// without headers is much cheaper for nats-server: a header block is
// scanned for every JetStream header, and a sampled "traceparent" makes
// the server build a map of all headers of the message
// (docs/benchmarks.md).
type TraceContext []string

// Bounds of an envelope's trace context (W3C baggage is at most 8192 bytes).
const (
	maxTraceFields   = 16
	maxTraceKeyLen   = 256
	maxTraceValueLen = 8192
)

// Get returns the value of key (exact match first, then in any case).
func (t TraceContext) Get(key string) string {
	for i := 0; i+1 < len(t); i += 2 {
		if t[i] == key {
			return t[i+1]
		}
	}
	for i := 0; i+1 < len(t); i += 2 {
		if strings.EqualFold(t[i], key) {
			return t[i+1]
		}
	}
	return ""
}

// Set stores key as given, replacing its value if present.
func (t *TraceContext) Set(key, value string) {
	s := *t
	for i := 0; i+1 < len(s); i += 2 {
		if s[i] == key {
			s[i+1] = value
			return
		}
	}
	*t = append(s, key, value)
}

// Keys lists the keys present.
func (t TraceContext) Keys() []string {
	keys := make([]string, 0, len(t)/2)
	for i := 0; i+1 < len(t); i += 2 {
		keys = append(keys, t[i])
	}
	return keys
}

func appendTrace(b []byte, t TraceContext) []byte {
	b = AppendMapLen(AppendString(b, "trace"), len(t)/2)
	for i := 0; i+1 < len(t); i += 2 {
		b = AppendString(AppendString(b, t[i]), t[i+1])
	}
	return b
}

// readTrace reads the "trace" map: string keys and values, bounded.
func readTrace(r *Reader) (TraceContext, error) {
	n := r.MapLen()
	if r.err != nil {
		return nil, r.err
	}
	if n > maxTraceFields {
		return nil, fmt.Errorf("trace has %d fields (at most %d)", n, maxTraceFields)
	}
	if n <= 0 {
		return nil, nil
	}
	t := make(TraceContext, 0, 2*n)
	for j := 0; j < n; j++ {
		k := r.String()
		v := r.String()
		if r.err != nil {
			return nil, r.err
		}
		if err := checkTraceField(k, v); err != nil {
			return nil, err
		}
		t = append(t, k, v)
	}
	return t, nil
}

func checkTraceField(k, v string) error {
	if k == "" || len(k) > maxTraceKeyLen || len(v) > maxTraceValueLen {
		return fmt.Errorf("trace field %.40q: keys are 1-%d bytes, values at most %d", k, maxTraceKeyLen, maxTraceValueLen)
	}
	return nil
}
