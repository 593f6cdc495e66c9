package wire

import (
	"encoding/binary"
	"fmt"
)

// CheckDepth walks msgpack data without decoding it and fails when arrays
// and maps nest deeper than max, when the data is truncated, or when it
// holds more than one top-level value. It allocates nothing for valid input
// except a small stack.
func CheckDepth(data []byte, max int) error {
	end, err := skipValueDepth(data, 0, max)
	if err != nil {
		return err
	}
	if end != len(data) {
		return fmt.Errorf("%w: %d trailing bytes after the msgpack value", ErrInvalid, len(data)-end)
	}
	return nil
}

// skipValueDepth returns the index after the value at data[i] (children
// included), failing as CheckDepth does when it nests deeper than max.
func skipValueDepth(data []byte, i, max int) (int, error) {
	// remaining[i] counts the values still expected at nesting level i.
	var stackArr [64]int
	stack := stackArr[:0]
	stack = append(stack, 1)
	for len(stack) > 0 {
		if stack[len(stack)-1] == 0 {
			stack = stack[:len(stack)-1]
			continue
		}
		stack[len(stack)-1]--
		next, children, err := valueHead(data, i)
		if err != nil {
			return 0, err
		}
		i = next
		if children > 0 {
			if len(stack) >= max {
				return 0, fmt.Errorf("%w: nesting deeper than %d levels", ErrInvalid, max)
			}
			stack = append(stack, children)
		}
	}
	return i, nil
}

// valueHead reads the head of the msgpack value at data[i]: where the next
// value starts (after this one's own bytes, before its children) and how
// many child values follow (array elements, map keys and values).
func valueHead(data []byte, i int) (next, children int, err error) {
	if i >= len(data) {
		return 0, 0, fmt.Errorf("%w: truncated msgpack", ErrInvalid)
	}
	c := data[i]
	i++
	var skip int
	lenOf := func(n int) int {
		var v int
		if v, err = readLen(data, i, n); err == nil {
			i += n
		}
		return v
	}
	switch {
	case c <= 0x7f, c >= 0xe0, c == 0xc0, c == 0xc2, c == 0xc3:
	case c >= 0x80 && c <= 0x8f:
		children = 2 * int(c&0x0f)
	case c >= 0x90 && c <= 0x9f:
		children = int(c & 0x0f)
	case c >= 0xa0 && c <= 0xbf:
		skip = int(c & 0x1f)
	case c == 0xcc, c == 0xd0:
		skip = 1
	case c == 0xcd, c == 0xd1, c == 0xd4:
		skip = 2
	case c == 0xd5:
		skip = 3
	case c == 0xca, c == 0xce, c == 0xd2:
		skip = 4
	case c == 0xd6:
		skip = 5
	case c == 0xcb, c == 0xcf, c == 0xd3:
		skip = 8
	case c == 0xd7:
		skip = 9
	case c == 0xd8:
		skip = 17
	case c == 0xc4, c == 0xd9:
		skip = lenOf(1)
	case c == 0xc5, c == 0xda:
		skip = lenOf(2)
	case c == 0xc6, c == 0xdb:
		skip = lenOf(4)
	case c == 0xc7:
		skip = lenOf(1) + 1 // ext: type byte
	case c == 0xc8:
		skip = lenOf(2) + 1
	case c == 0xc9:
		skip = lenOf(4) + 1
	case c == 0xdc:
		children = lenOf(2)
	case c == 0xdd:
		children = lenOf(4)
	case c == 0xde:
		children = 2 * lenOf(2)
	case c == 0xdf:
		children = 2 * lenOf(4)
	default: // 0xc1 is never used
		return 0, 0, fmt.Errorf("%w: bad msgpack byte 0x%02x", ErrInvalid, c)
	}
	if err != nil {
		return 0, 0, err
	}
	if skip > len(data)-i {
		return 0, 0, fmt.Errorf("%w: truncated msgpack", ErrInvalid)
	}
	i += skip
	if children > len(data)-i {
		// every child needs at least one byte
		return 0, 0, fmt.Errorf("%w: truncated msgpack", ErrInvalid)
	}
	return i, children, nil
}

func readLen(data []byte, i, n int) (int, error) {
	if i+n > len(data) {
		return 0, fmt.Errorf("%w: truncated msgpack", ErrInvalid)
	}
	switch n {
	case 1:
		return int(data[i]), nil
	case 2:
		return int(binary.BigEndian.Uint16(data[i:])), nil
	default:
		return int(binary.BigEndian.Uint32(data[i:])), nil
	}
}
