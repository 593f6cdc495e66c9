package wire

import (
	"bytes"
	"errors"
	"testing"
)

// Arguments encoded in place give the same bytes as arguments encoded
// apart and copied in, and the envelope decodes back with them.
func TestEncodeEnvelopeArgsMatchesEncodeEnvelope(t *testing.T) {
	type args struct {
		BackendID string   `msgpack:"backend_id"`
		IDs       []int    `msgpack:"ids"`
		Tags      []string `msgpack:"tags"`
	}
	a := args{BackendID: "shop1", IDs: []int{1, 2, 300000}, Tags: []string{"x", "y"}}
	two, retry := 2, map[int]int64{1: 10_000, 5: 60_000}
	mk := func() *Envelope {
		return &Envelope{ID: NewID(), Name: "shop.import", Channel: "root.shop", MaxRetries: &two, Retry: retry,
			Priority: &two, TimeoutMS: 5000, Description: "d", Identity: "i", EnqueuedAt: 1, ETA: 2, Graph: "g",
			Trace: TraceContext{"traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}}
	}
	e1 := mk()
	in, err := EncodeEnvelopeArgs(e1, a)
	if err != nil {
		t.Fatal(err)
	}
	e2 := *e1
	if e2.Args, err = Marshal(a); err != nil {
		t.Fatal(err)
	}
	apart, err := EncodeEnvelope(&e2)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(in, apart) {
		t.Fatalf("in place %x\napart    %x", in, apart)
	}
	if !bytes.Equal(e1.Args, e2.Args) {
		t.Fatalf("args %x vs %x", e1.Args, e2.Args)
	}
	var back args
	if err := Unmarshal(e1.Args, &back); err != nil || back.BackendID != "shop1" || len(back.IDs) != 3 {
		t.Fatalf("%+v %v", back, err)
	}
	if _, err := EncodeEnvelopeArgs(&Envelope{ID: "bad id", Name: "n"}, a); err == nil {
		t.Fatal("invalid id accepted")
	}
}

// Arguments may nest DefaultMaxDepth levels (docs/protocol.md); deeper, the
// envelope is refused before anything decodes them (the msgpack library
// recurses), and the arguments it accepts decode within the same bound.
func TestEnvelopeArgsDepth(t *testing.T) {
	nested := func(levels int) []byte {
		v := any(1)
		for i := 0; i < levels; i++ {
			v = []any{v}
		}
		b, err := Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, tc := range []struct {
		levels int
		ok     bool
	}{{1, true}, {DefaultMaxDepth, true}, {DefaultMaxDepth + 1, false}, {1000, false}} {
		data, err := EncodeEnvelope(&Envelope{ID: NewID(), Name: "n", Channel: "root", Args: nested(tc.levels)})
		if err != nil {
			t.Fatal(err)
		}
		e, err := DecodeEnvelope(data, 0)
		if tc.ok != (err == nil) {
			t.Fatalf("%d levels: %v", tc.levels, err)
		}
		if tc.ok {
			var v any
			if err := UnmarshalChecked(e.Args, &v); err != nil {
				t.Fatalf("%d levels: args: %v", tc.levels, err)
			}
		} else if !errors.Is(err, ErrInvalid) {
			t.Fatalf("%d levels: %v", tc.levels, err)
		}
	}
}

// The trace context is a map of strings in the envelope, read back in
// order, bounded; a bad one makes the envelope malformed.
func TestEnvelopeTrace(t *testing.T) {
	tp := "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	var tc TraceContext
	tc.Set("traceparent", "x")
	tc.Set("tracestate", "k=v")
	tc.Set("traceparent", tp) // replaces
	if len(tc) != 4 || tc.Get("traceparent") != tp || tc.Get("TraceParent") != tp || tc.Get("baggage") != "" {
		t.Fatalf("carrier: %q", tc)
	}
	if k := tc.Keys(); len(k) != 2 || k[0] != "traceparent" || k[1] != "tracestate" {
		t.Fatalf("keys %q", k)
	}
	data, err := EncodeEnvelope(&Envelope{ID: "A1", Name: "n", Args: []byte{0x80}, Trace: tc})
	if err != nil {
		t.Fatal(err)
	}
	e, err := DecodeEnvelope(data, 0)
	if err != nil || len(e.Trace) != 4 || e.Trace.Get("traceparent") != tp || e.Trace.Get("tracestate") != "k=v" {
		t.Fatalf("%v %q", err, e.Trace)
	}
	// As other languages write it: a plain msgpack map.
	base := map[string]any{"v": 1, "id": "A1", "name": "n", "args": map[string]any{}}
	with := func(tr any) []byte {
		m := map[string]any{"trace": tr}
		for k, v := range base {
			m[k] = v
		}
		b, err := Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	if e, err := DecodeEnvelope(with(map[string]string{"traceparent": tp}), 0); err != nil || e.Trace.Get("traceparent") != tp {
		t.Fatalf("%v %+v", err, e)
	}
	if e, err := DecodeEnvelope(with(map[string]string{}), 0); err != nil || e.Trace != nil {
		t.Fatalf("empty trace: %v %+v", err, e)
	}
	many := map[string]string{}
	for i := 0; i <= maxTraceFields; i++ {
		many[string(rune('a'+i))] = "v"
	}
	for name, bad := range map[string]any{
		"not a map":       "traceparent",
		"not a string":    map[string]any{"traceparent": 1},
		"empty key":       map[string]string{"": "v"},
		"too many fields": many,
		"value too long":  map[string]string{"baggage": string(bytes.Repeat([]byte("x"), maxTraceValueLen+1))},
	} {
		if _, err := DecodeEnvelope(with(bad), 0); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
}
