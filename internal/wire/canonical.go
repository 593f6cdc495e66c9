package wire

import (
	"bytes"
	"cmp"
	"fmt"
	"slices"
)

// MarshalArgs encodes job arguments in canonical form: as Marshal does,
// with the keys of every map (a struct's fields included) in ascending
// order, at every level (Canonical). Equal arguments encode to equal
// bytes, whatever the order Go iterates their maps in: identity keys
// (job.IdentityExact) hash them, and Schedule compares them with the
// registered schedule's.
func MarshalArgs(v any) ([]byte, error) {
	b, err := Marshal(v)
	if err != nil {
		return nil, err
	}
	return Canonical(b)
}

// Canonical returns msgpack data with the keys of every map in ascending
// order, at every level (docs/protocol.md, "Identity keys"): string keys
// by their bytes, integer keys by value, any other key (or keys of two
// kinds) by its msgpack bytes. Values are kept as they are encoded. Data
// already in that order is returned as is (not copied); otherwise the
// result is new. It fails on data that is not one whole msgpack value.
func Canonical(data []byte) ([]byte, error) {
	end, sorted, err := checkSorted(data, 0)
	if err != nil {
		return nil, err
	}
	if end != len(data) {
		return nil, fmt.Errorf("%w: %d trailing bytes after the msgpack value", ErrInvalid, len(data)-end)
	}
	if sorted {
		return data, nil
	}
	out, _, err := appendCanonical(make([]byte, 0, len(data)), data, 0)
	return out, err
}

// checkSorted walks the value at data[i] and reports where it ends and
// whether every map in it has its keys in canonical order.
func checkSorted(data []byte, i int) (end int, sorted bool, err error) {
	next, children, err := valueHead(data, i)
	if err != nil {
		return 0, false, err
	}
	sorted = true
	isMap := isMapCode(data[i])
	var prev []byte
	for c := 0; c < children; c++ {
		start := next
		var ok bool
		if next, ok, err = checkSorted(data, next); err != nil {
			return 0, false, err
		}
		sorted = sorted && ok
		if isMap && c%2 == 0 {
			key := data[start:next]
			if prev != nil && compareKeys(prev, key) > 0 {
				sorted = false
			}
			prev = key
		}
	}
	return next, sorted, nil
}

// appendCanonical appends the canonical form of the value at data[i].
func appendCanonical(dst, data []byte, i int) ([]byte, int, error) {
	next, children, err := valueHead(data, i)
	if err != nil {
		return nil, 0, err
	}
	dst = append(dst, data[i:next]...) // the head (and a scalar's bytes)
	if !isMapCode(data[i]) {
		for c := 0; c < children; c++ {
			if dst, next, err = appendCanonical(dst, data, next); err != nil {
				return nil, 0, err
			}
		}
		return dst, next, nil
	}
	// Each entry in canonical form in buf (its key start, value start and
	// end), then appended in key order.
	var buf []byte
	spans := make([][3]int, children/2)
	for e := range spans {
		s := len(buf)
		if buf, next, err = appendCanonical(buf, data, next); err != nil {
			return nil, 0, err
		}
		m := len(buf)
		if buf, next, err = appendCanonical(buf, data, next); err != nil {
			return nil, 0, err
		}
		spans[e] = [3]int{s, m, len(buf)}
	}
	slices.SortStableFunc(spans, func(a, b [3]int) int { return compareKeys(buf[a[0]:a[1]], buf[b[0]:b[1]]) })
	for _, sp := range spans {
		dst = append(dst, buf[sp[0]:sp[2]]...)
	}
	return dst, next, nil
}

func isMapCode(c byte) bool { return c >= 0x80 && c <= 0x8f || c == 0xde || c == 0xdf }

// compareKeys orders two encoded map keys: strings by their bytes,
// integers by value, anything else by its encoding.
func compareKeys(a, b []byte) int {
	if as, ok := strOf(a); ok {
		if bs, ok := strOf(b); ok {
			return bytes.Compare(as, bs)
		}
	}
	if an, ai, ok := intOf(a); ok {
		if bn, bi, ok := intOf(b); ok {
			switch {
			case an && !bn:
				return -1
			case bn && !an:
				return 1
			}
			return cmp.Compare(ai, bi)
		}
	}
	return bytes.Compare(a, b)
}

// strOf reads an encoded msgpack string.
func strOf(b []byte) ([]byte, bool) {
	if len(b) == 0 {
		return nil, false
	}
	switch c := b[0]; {
	case c >= 0xa0 && c <= 0xbf:
		return b[1:], true
	case c == 0xd9:
		return b[min(2, len(b)):], true
	case c == 0xda:
		return b[min(3, len(b)):], true
	case c == 0xdb:
		return b[min(5, len(b)):], true
	}
	return nil, false
}

// intOf reads an encoded msgpack integer as a sign and a value: for a
// negative number, v is its two's complement (uint64(n)), which orders
// negative numbers as their values do.
func intOf(b []byte) (neg bool, v uint64, ok bool) {
	r := NewReader(b)
	c := b[0]
	switch {
	case c <= 0x7f, c == 0xcc, c == 0xcd, c == 0xce:
		v = uint64(r.Int())
	case c == 0xcf:
		r.i = 1
		v = r.uintN(8)
	case c >= 0xe0, c >= 0xd0 && c <= 0xd3:
		n := r.Int()
		neg, v = n < 0, uint64(n)
	default:
		return false, 0, false
	}
	return neg, v, r.err == nil
}
