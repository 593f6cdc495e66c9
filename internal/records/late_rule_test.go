package records

import (
	"context"
	"testing"
	"time"

	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/internal/wire"
	"github.com/connector-go/connector/job"
)

// The late-batch rule is one rule (docs/protocol.md, Job records): a side
// is refused when its "ua" is more than lateBy before the ua of the side
// it would replace. A log reader and the script of a caller-chosen id's
// key apply it alike, so the same writes, in the same order, read the
// same record whether the job's id is a ULID or the caller's.
func TestLateRuleIsTheSameForLogsAndChosenIDKeys(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	s := New(rdb, wire.MustNames(prefix), time.Minute, nil)
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	ctx := context.Background()
	late := lateBy.Milliseconds()
	base := time.Now().UnixMilli()
	// Workers' sides as processes whose clocks and flushes differ write
	// them, each within lateBy of the one before it, the last more than
	// lateBy before the first. (Attempts rise, so that the attempt and
	// state rule, tested in stale_side_test.go, refuses none of them.)
	writes := []blob{
		{State: string(job.StateDone), Name: "n", Attempts: 1, UpdatedAt: base},
		{State: string(job.StateWaiting), Name: "n", Attempts: 2, UpdatedAt: base - late*2/3},
		{State: string(job.StateStarted), Name: "n", Attempts: 3, UpdatedAt: base - late*4/3},
	}
	ulid, chosen := wire.NewID(), "chosen-late-rule"
	logKey, key := s.locate(ulid, false).key, s.ownKey(chosen, false)
	for _, b := range writes {
		data := b.appendTo(nil)
		if err := logScript.Run(ctx, rdb, []string{logKey}, appendEntry(nil, ulid, false, data), 60000).Err(); err != nil {
			t.Fatal(err)
		}
		if err := keyScript.Run(ctx, rdb, []string{key}, data, 60000, b.UpdatedAt, late).Err(); err != nil {
			t.Fatal(err)
		}
	}
	fromLog, err := s.Get(ctx, ulid)
	if err != nil {
		t.Fatal(err)
	}
	fromKey, err := s.Get(ctx, chosen)
	if err != nil {
		t.Fatal(err)
	}
	if fromLog.State != fromKey.State || !fromLog.UpdatedAt.Equal(fromKey.UpdatedAt) {
		t.Fatalf("the same writes read %s (ua %d) from a log, %s (ua %d) from a chosen id's key",
			fromLog.State, fromLog.UpdatedAt.UnixMilli()-base, fromKey.State, fromKey.UpdatedAt.UnixMilli()-base)
	}
}
