package wire

import (
	"encoding/binary"
	"fmt"
	"math"
)

// A minimal msgpack writer and reader for the messages on the hot path of
// every job (the envelope, job records): appends to a byte slice and reads
// from one, without an Encoder or Decoder, reflection or intermediate
// buffers. Other messages go through github.com/vmihailenco/msgpack/v5;
// both produce and accept the same encoding.

// AppendMapLen appends a map header of n entries.
func AppendMapLen(b []byte, n int) []byte {
	switch {
	case n < 16:
		return append(b, 0x80|byte(n))
	case n <= math.MaxUint16:
		return append(b, 0xde, byte(n>>8), byte(n))
	}
	return append(b, 0xdf, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
}

// AppendString appends a string.
func AppendString(b []byte, s string) []byte {
	n := len(s)
	switch {
	case n < 32:
		b = append(b, 0xa0|byte(n))
	case n <= math.MaxUint8:
		b = append(b, 0xd9, byte(n))
	case n <= math.MaxUint16:
		b = append(b, 0xda, byte(n>>8), byte(n))
	default:
		b = append(b, 0xdb, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	return append(b, s...)
}

// AppendInt appends an integer in its most compact form.
func AppendInt(b []byte, v int64) []byte {
	switch {
	case v >= 0:
		return AppendUint(b, uint64(v))
	case v >= -32:
		return append(b, byte(int8(v)))
	case v >= math.MinInt8:
		return append(b, 0xd0, byte(int8(v)))
	case v >= math.MinInt16:
		return append(b, 0xd1, byte(v>>8), byte(v))
	case v >= math.MinInt32:
		return append(b, 0xd2, byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
	}
	return binary.BigEndian.AppendUint64(append(b, 0xd3), uint64(v))
}

// AppendUint appends an unsigned integer in its most compact form.
func AppendUint(b []byte, v uint64) []byte {
	switch {
	case v <= 0x7f:
		return append(b, byte(v))
	case v <= math.MaxUint8:
		return append(b, 0xcc, byte(v))
	case v <= math.MaxUint16:
		return append(b, 0xcd, byte(v>>8), byte(v))
	case v <= math.MaxUint32:
		return append(b, 0xce, byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
	}
	return binary.BigEndian.AppendUint64(append(b, 0xcf), v)
}

// AppendBool appends a boolean.
func AppendBool(b []byte, v bool) []byte {
	if v {
		return append(b, 0xc3)
	}
	return append(b, 0xc2)
}

// Reader reads msgpack values from a byte slice. Every read checks bounds
// and types; the first error sticks.
type Reader struct {
	b   []byte
	i   int
	err error
}

// NewReader reads b.
func NewReader(b []byte) *Reader { return &Reader{b: b} }

// Err is the first error met.
func (r *Reader) Err() error { return r.err }

// Done reports whether every byte was read.
func (r *Reader) Done() bool { return r.i == len(r.b) }

func (r *Reader) fail(format string, a ...any) {
	if r.err == nil {
		r.err = fmt.Errorf(format, a...)
	}
}

func (r *Reader) byte() byte {
	if r.err != nil {
		return 0
	}
	if r.i >= len(r.b) {
		r.fail("truncated msgpack at byte %d", r.i)
		return 0
	}
	c := r.b[r.i]
	r.i++
	return c
}

func (r *Reader) next(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || len(r.b)-r.i < n {
		r.fail("truncated msgpack at byte %d", r.i)
		return nil
	}
	p := r.b[r.i : r.i+n]
	r.i += n
	return p
}

func (r *Reader) uintN(n int) uint64 {
	p := r.next(n)
	var v uint64
	for _, c := range p {
		v = v<<8 | uint64(c)
	}
	return v
}

// MapLen reads a map header; nil reads as -1.
func (r *Reader) MapLen() int {
	c := r.byte()
	switch {
	case r.err != nil:
		return 0
	case c >= 0x80 && c <= 0x8f:
		return int(c & 0x0f)
	case c == 0xde:
		return int(r.uintN(2))
	case c == 0xdf:
		return int(r.uintN(4))
	case c == 0xc0:
		return -1
	}
	r.fail("msgpack: code %#x where a map was expected", c)
	return 0
}

// StringBytes reads a string (or binary, or nil: empty) without copying.
func (r *Reader) StringBytes() []byte {
	c := r.byte()
	var n int
	switch {
	case r.err != nil:
		return nil
	case c >= 0xa0 && c <= 0xbf:
		n = int(c & 0x1f)
	case c == 0xd9 || c == 0xc4:
		n = int(r.uintN(1))
	case c == 0xda || c == 0xc5:
		n = int(r.uintN(2))
	case c == 0xdb || c == 0xc6:
		n = int(r.uintN(4))
	case c == 0xc0:
		return nil
	default:
		r.fail("msgpack: code %#x where a string was expected", c)
		return nil
	}
	return r.next(n)
}

// String reads a string (a copy).
func (r *Reader) String() string { return string(r.StringBytes()) }

// Int reads an integer of any msgpack integer encoding (nil reads as 0).
func (r *Reader) Int() int64 {
	c := r.byte()
	switch {
	case r.err != nil:
		return 0
	case c <= 0x7f || c >= 0xe0:
		return int64(int8(c))
	case c == 0xcc:
		return int64(r.uintN(1))
	case c == 0xcd:
		return int64(r.uintN(2))
	case c == 0xce:
		return int64(r.uintN(4))
	case c == 0xcf:
		return int64(r.uintN(8))
	case c == 0xd0:
		return int64(int8(r.uintN(1)))
	case c == 0xd1:
		return int64(int16(r.uintN(2)))
	case c == 0xd2:
		return int64(int32(r.uintN(4)))
	case c == 0xd3:
		return int64(r.uintN(8))
	case c == 0xc0:
		return 0
	}
	r.fail("msgpack: code %#x where an integer was expected", c)
	return 0
}

// Bool reads a boolean (nil reads as false).
func (r *Reader) Bool() bool {
	switch c := r.byte(); {
	case r.err != nil:
		return false
	case c == 0xc3:
		return true
	case c == 0xc2 || c == 0xc0:
		return false
	default:
		r.fail("msgpack: code %#x where a boolean was expected", c)
		return false
	}
}

// Raw reads one whole value of any type and returns its bytes (not a copy).
func (r *Reader) Raw() []byte {
	if r.err != nil {
		return nil
	}
	start := r.i
	end, err := skipValue(r.b, r.i)
	if err != nil {
		r.err = err
		return nil
	}
	r.i = end
	return r.b[start:end]
}

// RawDepth is Raw for a value that must nest at most max levels deep.
func (r *Reader) RawDepth(max int) []byte {
	if r.err != nil {
		return nil
	}
	start := r.i
	end, err := skipValueDepth(r.b, r.i, max)
	if err != nil {
		r.err = err
		return nil
	}
	r.i = end
	return r.b[start:end]
}

// Skip reads past one value.
func (r *Reader) Skip() { r.Raw() }

// skipValue returns the index after the value at data[i] (children
// included); nesting is not bounded here (callers check depth first when it
// matters).
func skipValue(data []byte, i int) (int, error) {
	for pending := 1; pending > 0; pending-- {
		next, children, err := valueHead(data, i)
		if err != nil {
			return 0, err
		}
		i, pending = next, pending+children
	}
	return i, nil
}
