package records

import (
	"errors"
	"testing"

	"github.com/connector-go/connector/internal/wire"
)

// A reader of a log never panics, whatever the log holds (truncated by a
// failed write, corrupted, written by another version): it finds the
// sides of the id, or errBadLog, and a side that does not decode is
// skipped.
func FuzzScanLog(f *testing.F) {
	id := "01JAAAAAAAAAAAAAAAAAAAAAAA"
	one := 1
	full := blob{State: "done", Name: "n", Priority: &one, Attempts: 2, Result: "r", UpdatedAt: 1 << 41, Seq: 7}
	good := appendEntry(nil, id, true, (&blob{State: "enqueued", UpdatedAt: 5}).appendTo(nil))
	good = appendEntry(good, id, false, full.appendTo(nil))
	good = appendEntry(good, wire.NewID(), false, []byte{0x80})
	f.Add(good, 1000)
	f.Add(good[:len(good)-3], 1000)
	f.Add(append([]byte{}, good[:1+ulidLen]...), 0)
	f.Add(appendEntry(nil, id, false, []byte{0xde, 0xff, 0xff, 0xa2, 'u', 'a', 0xcf}), 1)
	f.Add(appendEntry(nil, id, false, []byte{0xdf, 0xff, 0xff, 0xff, 0xff}), 1)
	f.Fuzz(func(t *testing.T, log []byte, late int) {
		w, q, err := scanLog(log, id)
		if err != nil && !errors.Is(err, errBadLog) {
			t.Fatalf("scanLog: %v", err)
		}
		var wb, qb blob
		if wb.decode(w) == nil && qb.decode(q) == nil {
			_ = merged(id, &wb, &qb)
		}
		var b blob
		_ = b.decode(log)
	})
}
