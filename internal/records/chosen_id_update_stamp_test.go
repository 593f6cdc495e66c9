package records

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/internal/wire"
	"github.com/connector-go/connector/job"
)

// keyScript reads the update time of the side a key holds from the start
// of its msgpack map, whatever the map header (fixmap, map16) and the
// integer encoding wire.AppendInt chose for it: a side more than lateBy
// older is refused, one within lateBy replaces it.
func TestChosenIDKeyReadsEveryUpdateTimeEncoding(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	s := New(rdb, wire.MustNames(prefix), time.Minute, nil)
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	ctx := context.Background()
	const late = 5 // ms
	one, two := 1, 2
	full := func(ua int64) blob { // 20 fields: a map16
		return blob{State: "done", Name: "n", Channel: "c", Priority: &one, Attempts: 1, MaxRetries: &two,
			Desc: "d", Result: "r", Error: "e", ErrorType: "et", Stack: "sk", Worker: "w", Identity: "i",
			Graph: "g", EnqueuedAt: 1, ETA: 2, StartedAt: 3, EndedAt: 4, UpdatedAt: ua, Seq: 9}
	}
	now := time.Now().UnixMilli()
	for _, ua := range []int64{late + 2, 0x7f, 0x80, 0xff, 0x100, 0xffff, 0x10000, 1<<32 - 1, 1 << 32, now} {
		for _, shape := range []string{"fixmap", "map16"} {
			held := blob{State: "done", UpdatedAt: ua}
			if shape == "map16" {
				held = full(ua)
			}
			data := held.appendTo(nil)
			if hdr := data[0]; (shape == "fixmap") != (hdr >= 0x80 && hdr <= 0x8f) || (shape == "map16") != (hdr == 0xde) {
				t.Fatalf("%s: header %#x", shape, hdr)
			}
			key := s.ownKey(fmt.Sprintf("chosen-%s-%d", shape, ua), false)
			for _, tc := range []struct {
				at   int64
				want int64
			}{{ua - late - 1, 0}, {ua - late, 1}} {
				if err := rdb.Set(ctx, key, data, time.Minute).Err(); err != nil {
					t.Fatal(err)
				}
				// (the end of a later attempt: only update times decide)
				side := blob{State: string(job.StateDone), Attempts: 2, UpdatedAt: tc.at}
				got, err := keyScript.Run(ctx, rdb, []string{key}, side.appendTo(nil), 60000, tc.at, late).Int64()
				if err != nil || got != tc.want {
					t.Errorf("%s ua=%d (%#x), side at %d: %d, %v; want %d", shape, ua, ua, tc.at, got, err, tc.want)
				}
			}
		}
	}
}
