package wire

import (
	"bytes"
	"math"
	"reflect"
	"strconv"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

type canonicalArgs struct {
	Model  string            `msgpack:"model"`
	Fields map[string]string `msgpack:"fields"`
	Qty    map[string]int    `msgpack:"qty"`
	Lines  map[int][]string  `msgpack:"lines"`
	Extra  map[string]any    `msgpack:"extra"`
}

func newCanonicalArgs() canonicalArgs {
	a := canonicalArgs{Model: "res.partner", Fields: map[string]string{}, Qty: map[string]int{},
		Lines: map[int][]string{}, Extra: map[string]any{}}
	for i := range 24 {
		s := strconv.Itoa(i)
		a.Fields["f"+s] = s
		a.Qty["q"+s] = i
		a.Lines[i*i-100] = []string{s}
		a.Extra["e"+s] = map[string]int{"x" + s: i, "y": -i, "a": 0}
	}
	return a
}

// Equal arguments encode to equal bytes, whatever their maps (string keys
// or not, nested in any values), each map with its keys in order; they
// decode back to the same arguments.
func TestMarshalArgsIsCanonical(t *testing.T) {
	first, err := MarshalArgs(newCanonicalArgs())
	if err != nil {
		t.Fatal(err)
	}
	for range 20 {
		b, err := MarshalArgs(newCanonicalArgs())
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b, first) {
			t.Fatalf("equal arguments encode differently:\n%x\n%x", first, b)
		}
	}
	if _, sorted, err := checkSorted(first, 0); err != nil || !sorted {
		t.Fatalf("not in key order (%v)", err)
	}
	var back canonicalArgs
	if err := Unmarshal(first, &back); err != nil {
		t.Fatal(err)
	}
	want := newCanonicalArgs()
	want.Extra = nil
	gotExtra := back.Extra
	back.Extra = nil
	if !reflect.DeepEqual(back, want) || len(gotExtra) != 24 {
		t.Fatalf("round trip: %+v", back)
	}
	// Data in order already is returned as it is.
	if c, err := Canonical(first); err != nil || &c[0] != &first[0] {
		t.Fatalf("ordered data copied (%v)", err)
	}
}

// Keys are ordered as docs/protocol.md says: strings by their bytes (a
// shorter string is not first for its length), integers by value, signed
// or not.
func TestCanonicalKeyOrder(t *testing.T) {
	for _, tc := range []struct {
		name string
		m    any
		keys []any
	}{
		{"strings", map[string]int{"b": 1, "aa": 2, "a": 3, "": 4}, []any{"", "a", "aa", "b"}},
		{"integers", map[int64]int{-1 << 40: 1, -5: 2, -3: 3, 0: 4, 127: 5, 128: 6, 1 << 40: 7},
			[]any{int64(-1 << 40), int64(-5), int64(-3), int64(0), int64(127), int64(128), int64(1 << 40)}},
		{"unsigned", map[uint64]int{math.MaxUint64: 1, 3: 2, 1 << 63: 3}, []any{uint64(3), uint64(1 << 63), uint64(math.MaxUint64)}},
	} {
		b, err := MarshalArgs(tc.m)
		if err != nil {
			t.Fatal(err)
		}
		d := msgpack.NewDecoder(bytes.NewReader(b))
		n, err := d.DecodeMapLen()
		if err != nil || n != len(tc.keys) {
			t.Fatalf("%s: %d keys, %v", tc.name, n, err)
		}
		for i, want := range tc.keys {
			var k any
			switch want.(type) {
			case string:
				k, err = d.DecodeString()
			case int64:
				k, err = d.DecodeInt64()
			default:
				k, err = d.DecodeUint64()
			}
			if err != nil || k != want {
				t.Fatalf("%s: key %d is %v (%v), want %v", tc.name, i, k, err, want)
			}
			if err := d.Skip(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := Canonical([]byte{0x81, 0xa1}); err == nil {
		t.Fatal("truncated data accepted")
	}
	if _, err := Canonical([]byte{0x80, 0x80}); err == nil {
		t.Fatal("trailing data accepted")
	}
}

// An envelope encodes to the same bytes each time: its retry pattern in
// the order of its tries (Schedule compares a registration's bytes with
// the registered one's).
func TestEnvelopeEncodingIsStable(t *testing.T) {
	mk := func() *Envelope {
		r := map[int]int64{}
		for i := 1; i <= 20; i++ {
			r[i] = int64(i) * 1000
		}
		return &Envelope{V: EnvelopeVersion, ID: "A1", Name: "n", Args: []byte{0x80}, Retry: r}
	}
	first, err := EncodeEnvelope(mk())
	if err != nil {
		t.Fatal(err)
	}
	viaLib, err := Marshal(mk())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(viaLib, first) {
		t.Fatalf("the msgpack encoder's envelope differs:\n%x\n%x", first, viaLib)
	}
	for range 20 {
		b, err := EncodeEnvelope(mk())
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b, first) {
			t.Fatalf("the same envelope encodes differently:\n%x\n%x", first, b)
		}
	}
}
