package wire

// Fuzz tests of the decoders that face untrusted input. CI runs each for a
// short bounded time:
//
//	go test -run='^$' -fuzz='^FuzzDecodeEnvelope$' -fuzztime=15s ./internal/wire
//	go test -run='^$' -fuzz='^FuzzDecodeEvent$'    -fuzztime=15s ./internal/wire
//	go test -run='^$' -fuzz='^FuzzCheckDepth$'     -fuzztime=15s ./internal/wire
//	go test -run='^$' -fuzz='^FuzzModelToken$'     -fuzztime=10s ./internal/wire
//
// Inputs the fuzzer found worth keeping are in testdata/fuzz/<FuzzName>/;
// a plain `go test` replays them with the seeds below.

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

func fuzzMarshal(t testing.TB, v any) []byte {
	t.Helper()
	b, err := msgpack.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func seedEnvelopes(f *testing.F) {
	three, zero, prio := 3, 0, 5
	deep := any(1)
	for i := 0; i < DefaultMaxDepth; i++ {
		deep = []any{deep}
	}
	for _, e := range []*Envelope{
		{ID: "01J0000000000000000000000A", Name: "sale.import", Args: fuzzMarshal(f, map[string]any{})},
		{ID: NewID(), Name: "partner.export", Args: fuzzMarshal(f, map[string]any{"id": 42, "fields": []string{"name", "email"}}),
			Attempt: 2, MaxRetries: &three, Retry: map[int]int64{1: 1000, 5: 60000}, Channel: "root.magento",
			Priority: &prio, TimeoutMS: 30000, Description: "Export partner 42", Identity: "partner-42",
			EnqueuedAt: 1700000000000, ETA: 1700000060000,
			Trace: TraceContext{"traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "tracestate", "k=v"}},
		{ID: "x", Name: "n", Args: fuzzMarshal(f, deep), MaxRetries: &zero, Channel: "root"},
		{ID: "bin", Name: "blob", Args: fuzzMarshal(f, map[string]any{"b": []byte{0, 1, 2}, "f": 1.5, "t": time.Unix(1, 0)})},
	} {
		b, err := EncodeEnvelope(e)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	good := map[string]any{"v": 1, "id": "A1", "name": "n", "args": map[string]any{}}
	for k, v := range map[string]any{"v": 2, "extra": 1, "args": nil, "retry": map[int]int{0: 1}, "channel": "other",
		"trace": map[string]any{"traceparent": 1}} {
		m := map[string]any{}
		for gk, gv := range good {
			m[gk] = gv
		}
		m[k] = v
		f.Add(fuzzMarshal(f, m))
	}
	f.Add([]byte{})
	f.Add([]byte{0xc1})
	f.Add([]byte{0xdf, 0xff, 0xff, 0xff, 0xff})
}

// sameEnvelope compares two envelopes, treating an empty and an absent
// retry pattern alike (omitempty drops the empty one).
func sameEnvelope(a, b *Envelope) bool {
	ac, bc := *a, *b
	if len(ac.Retry) == 0 {
		ac.Retry = nil
	}
	if len(bc.Retry) == 0 {
		bc.Retry = nil
	}
	return reflect.DeepEqual(ac, bc)
}

// FuzzDecodeEnvelope: DecodeEnvelope never panics, every rejection is an
// ErrInvalid, and whatever it accepts re-encodes and decodes to the same
// envelope.
func FuzzDecodeEnvelope(f *testing.F) {
	seedEnvelopes(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := DecodeEnvelope(data, 0)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("rejection is not ErrInvalid: %v", err)
			}
			if e != nil {
				t.Fatal("non-nil envelope with an error")
			}
			return
		}
		again, err := EncodeEnvelope(cloneEnvelope(e))
		if err != nil {
			t.Fatalf("accepted envelope does not re-encode: %v\n%#v", err, e)
		}
		e2, err := DecodeEnvelope(again, 0)
		if err != nil {
			t.Fatalf("re-encoded envelope rejected: %v\n%#v", err, e)
		}
		if !sameEnvelope(e, e2) {
			t.Fatalf("round trip changed the envelope:\n%#v\n%#v", e, e2)
		}
		// A size limit below the message's size rejects it.
		if _, err := DecodeEnvelope(data, len(data)-1); len(data) > 1 && err == nil {
			t.Fatal("size limit ignored")
		}
		// The hand-written codec agrees with the msgpack library's: what
		// it accepts, the library decodes the same, and the library's
		// encoding decodes back to the same envelope.
		var lib Envelope
		if err := msgpack.Unmarshal(data, &lib); err != nil {
			t.Fatalf("accepted here, rejected by the msgpack library: %v", err)
		}
		if !sameEnvelope(e, &lib) {
			t.Fatalf("the msgpack library reads another envelope:\n%#v\n%#v", e, &lib)
		}
		viaLib, err := Marshal(cloneEnvelope(e))
		if err != nil {
			t.Fatal(err)
		}
		if e3, err := DecodeEnvelope(viaLib, 0); err != nil || !sameEnvelope(e, e3) {
			t.Fatalf("the msgpack library's encoding reads back as %#v, %v", e3, err)
		}
	})
}

func cloneEnvelope(e *Envelope) *Envelope {
	c := *e
	return &c
}

// FuzzDecodeEvent: DecodeEvent never panics, rejects with ErrInvalid, and
// what it accepts survives a round trip (up to msgpack's choice of integer
// widths for the free-form data).
func FuzzDecodeEvent(f *testing.F) {
	for _, e := range []*EventBody{
		{ID: "E1", Model: "res.partner", Event: "write", RecordID: "42", Time: 1700000000000},
		{ID: NewID(), Model: "sale.order", Event: "create", RecordID: "SO001", Fields: []string{"name", "state"},
			Origin: "shop-1", Time: 1, Data: map[string]any{"name": "Ada", "n": 3, "f": 2.5, "nested": map[string]any{"l": []any{1, "x", nil, true}}}},
	} {
		b, err := EncodeEvent(e)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add(fuzzMarshal(f, map[string]any{"v": 2, "id": "E1", "model": "m", "event": "e", "record_id": "1", "time": 1}))
	f.Add(fuzzMarshal(f, map[string]any{"v": 1, "id": "E1", "model": "m", "event": "e", "record_id": "1", "time": 1, "x": 1}))
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := DecodeEvent(data, 0)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("rejection is not ErrInvalid: %v", err)
			}
			return
		}
		c := *e
		again, err := EncodeEvent(&c)
		if err != nil {
			t.Fatalf("accepted event does not re-encode: %v\n%#v", err, e)
		}
		e2, err := DecodeEvent(again, 0)
		if err != nil {
			t.Fatalf("re-encoded event rejected: %v\n%#v", err, e)
		}
		if a, b := normEvent(e), normEvent(e2); a != b {
			t.Fatalf("round trip changed the event:\n%s\n%s", a, b)
		}
	})
}

func normEvent(e *EventBody) string {
	c := *e
	data := c.Data
	c.Data = nil
	if len(c.Fields) == 0 {
		c.Fields = nil
	}
	var v any
	if len(data) > 0 {
		v = data
	}
	return fmt.Sprintf("%#v data=%s", c, norm(v))
}

// norm renders a decoded msgpack value canonically: integers by value
// whatever their width, floats by bits, maps with sorted keys.
func norm(v any) string {
	if v == nil {
		return "nil"
	}
	if t, ok := v.(time.Time); ok {
		return "time(" + t.UTC().Format(time.RFC3339Nano) + ")"
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return fmt.Sprintf("i%d", rv.Int())
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		if u := rv.Uint(); u <= math.MaxInt64 {
			return fmt.Sprintf("i%d", u)
		}
		return fmt.Sprintf("u%d", rv.Uint())
	case reflect.Float32:
		return fmt.Sprintf("f32:%x", math.Float32bits(float32(rv.Float())))
	case reflect.Float64:
		return fmt.Sprintf("f64:%x", math.Float64bits(rv.Float()))
	case reflect.String:
		return fmt.Sprintf("%q", rv.String())
	case reflect.Bool:
		return fmt.Sprint(rv.Bool())
	case reflect.Slice, reflect.Array:
		if b, ok := v.([]byte); ok {
			return fmt.Sprintf("bin%x", b)
		}
		parts := make([]string, rv.Len())
		for i := range parts {
			parts[i] = norm(rv.Index(i).Interface())
		}
		return "[" + strings.Join(parts, ",") + "]"
	case reflect.Map:
		parts := make([]string, 0, rv.Len())
		it := rv.MapRange()
		for it.Next() {
			parts = append(parts, norm(it.Key().Interface())+":"+norm(it.Value().Interface()))
		}
		sort.Strings(parts)
		return "{" + strings.Join(parts, ",") + "}"
	case reflect.Pointer, reflect.Interface:
		if rv.IsNil() {
			return "nil"
		}
		return norm(rv.Elem().Interface())
	}
	return fmt.Sprintf("%T(%v)", v, v)
}

// FuzzCheckDepth: CheckDepth never panics, rejects with ErrInvalid, is
// monotonic in its limit, and agrees with a full msgpack decode on the
// nesting depth of what both accept.
func FuzzCheckDepth(f *testing.F) {
	deep := any("x")
	for i := 0; i < 40; i++ {
		deep = map[string]any{"k": deep}
	}
	for _, v := range []any{
		1, "s", nil, []any{}, map[string]any{}, []any{[]any{}}, []any{1, []any{2, []any{3}}},
		map[string]any{"a": []any{map[string]any{"b": 1}}}, deep, []byte("bin"), 1.5, time.Unix(5, 0),
	} {
		f.Add(fuzzMarshal(f, v), 4)
	}
	f.Add([]byte{0x91}, 3)                         // truncated array
	f.Add([]byte{0x01, 0x02}, 3)                   // trailing bytes
	f.Add([]byte{0xdd, 0xff, 0xff, 0xff, 0xff}, 3) // huge announced array
	f.Fuzz(func(t *testing.T, data []byte, max int) {
		if max < 0 || max > 200 {
			max = max % 200
			if max < 0 {
				max = -max
			}
		}
		err := CheckDepth(data, max)
		if err != nil && !errors.Is(err, ErrInvalid) {
			t.Fatalf("rejection is not ErrInvalid: %v", err)
		}
		if err == nil && CheckDepth(data, max+1) != nil {
			t.Fatalf("accepted at %d but rejected at %d", max, max+1)
		}
		if err != nil {
			return
		}
		d, ok := decodedDepth(data)
		if !ok {
			return
		}
		if CheckDepth(data, d+1) != nil {
			t.Fatalf("value of depth %d rejected with limit %d", d, d+1)
		}
		if d > 0 && CheckDepth(data, d) == nil {
			t.Fatalf("value of depth %d accepted with limit %d", d, d)
		}
	})
}

// decodedDepth decodes data fully with msgpack and measures the nesting of
// non-empty arrays and maps; ok is false when msgpack cannot decode it as
// exactly one value (unknown extensions, container map keys...).
func decodedDepth(data []byte) (d int, ok bool) {
	defer func() {
		if recover() != nil {
			ok = false
		}
	}()
	r := bytes.NewReader(data)
	dec := msgpack.NewDecoder(r)
	// Maps as lists of pairs: a Go map would keep one value of a key seen
	// twice, and with it lose the depth of the other.
	dec.SetMapDecoder(func(d *msgpack.Decoder) (any, error) {
		n, err := d.DecodeMapLen()
		if err != nil || n < 0 {
			return nil, err
		}
		pairs := make(mapPairs, 0, n)
		for i := 0; i < n; i++ {
			k, err := d.DecodeInterface()
			if err != nil {
				return nil, err
			}
			v, err := d.DecodeInterface()
			if err != nil {
				return nil, err
			}
			pairs = append(pairs, [2]any{k, v})
		}
		return pairs, nil
	})
	var v any
	if err := dec.Decode(&v); err != nil || r.Len() != 0 {
		return 0, false
	}
	return depthOf(v), true
}

type mapPairs [][2]any

func depthOf(v any) int {
	if pairs, ok := v.(mapPairs); ok {
		if len(pairs) == 0 {
			return 0
		}
		m := 0
		for _, kv := range pairs {
			m = max(m, depthOf(kv[0]), depthOf(kv[1]))
		}
		return m + 1
	}
	rv := reflect.ValueOf(v)
	if !rv.IsValid() {
		return 0
	}
	switch rv.Kind() {
	case reflect.Slice, reflect.Array:
		if _, isBin := v.([]byte); isBin || rv.Len() == 0 {
			return 0
		}
		m := 0
		for i := 0; i < rv.Len(); i++ {
			m = max(m, depthOf(rv.Index(i).Interface()))
		}
		return m + 1
	case reflect.Map:
		if rv.Len() == 0 {
			return 0
		}
		m := 0
		it := rv.MapRange()
		for it.Next() {
			m = max(m, depthOf(it.Key().Interface()), depthOf(it.Value().Interface()))
		}
		return m + 1
	}
	return 0
}

// FuzzModelToken: EncodeModel/DecodeModel are inverse on valid models, and
// DecodeModel accepts only what EncodeModel produces.
func FuzzModelToken(f *testing.F) {
	for _, s := range []string{"res.partner", "a:b", "x%41", "sale.order.line", "ü", "%2E", "a b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if ValidModel(s) == nil {
			tok := EncodeModel(s)
			back, err := DecodeModel(tok)
			if err != nil || back != s {
				t.Fatalf("model %q -> token %q -> %q, %v", s, tok, back, err)
			}
			if strings.ContainsAny(tok, ".*> \t") {
				t.Fatalf("token %q of %q is not one subject token", tok, s)
			}
		}
		if m, err := DecodeModel(s); err == nil && EncodeModel(m) != s {
			t.Fatalf("token %q decodes to %q which encodes to %q", s, m, EncodeModel(m))
		}
	})
}
