package records

import (
	"context"
	"testing"
	"time"

	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/internal/wire"
	"github.com/connector-go/connector/job"
)

// A retention under a millisecond (WithRecordTTL, --record-ttl 500us) is
// kept a millisecond, not zero: Redis refuses "SET ... PX 0", and one
// refused script failed the whole flush, retried every 20 ms for ever.
func TestSubMillisecondRetentionStillFlushes(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	s := New(rdb, wire.MustNames(prefix), 500*time.Microsecond, nil)
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	s.once.Do(func() { close(s.done) }) // (the test flushes, not the loop)
	<-s.closed
	s.Record(&Update{ID: "chosen-short-ttl", State: job.StateDone})
	s.Record(&Update{ID: wire.NewID(), State: job.StateDone})
	if err := s.Flush(context.Background()); err != nil {
		t.Fatalf("flush: %v", err)
	}
}
