package records

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/internal/wire"
	"github.com/connector-go/connector/job"
)

// An entry of a job whose map does not decode (another writer's bug: a
// truncated or corrupt side inside a well-framed entry) is skipped: the
// record reads as the sides before it said, best effort, not as if the
// workers had never written (a done job read back as enqueued).
func TestCorruptEntryKeepsTheSideBeforeIt(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	s := New(rdb, wire.MustNames(prefix), time.Minute, nil)
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	ctx := context.Background()
	id := wire.NewID()
	now := time.Now().UnixMilli()
	log := appendEntry(nil, id, true, (&blob{State: string(job.StateEnqueued), Name: "n", UpdatedAt: now}).appendTo(nil))
	log = appendEntry(log, id, false, (&blob{State: string(job.StateDone), Name: "n", Attempts: 1, Result: "ok", UpdatedAt: now + 1}).appendTo(nil))
	done := (&blob{State: string(job.StateDone), Name: "n", Attempts: 1, Result: "ok", UpdatedAt: now + 2}).appendTo(nil)
	for name, bad := range map[string][]byte{
		"truncated map": done[:len(done)-2],
		"not a map":     {0xc1},
		"empty":         {},
	} {
		key := s.locate(id, false).key
		if err := rdb.Set(ctx, key, append(append([]byte{}, log...), appendEntry(nil, id, false, bad)...), time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
		rec, err := s.Get(ctx, id)
		if err != nil || rec.State != job.StateDone || rec.Result != "ok" {
			t.Errorf("%s: %+v, %v; want the done record before the bad entry", name, rec, err)
		}
	}
	// A log cut inside an entry's frame is an error that says so.
	if err := rdb.Set(ctx, s.locate(id, false).key, log[:len(log)-3], time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, id); !errors.Is(err, errBadLog) {
		t.Errorf("a log cut inside an entry: %v; want errBadLog", err)
	}
}
