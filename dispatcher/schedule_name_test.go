package dispatcher_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/connector-go/connector/job"
)

// A schedule name is bounded so that its firings' ids ("periodic-<name>-
// t<tick>") are job ids: the longest allowed is registered, a longer one
// is refused as invalid before anything is sent.
func TestScheduleNameLeavesRoomForTheFiringsIDs(t *testing.T) {
	e := newGenv(t)
	ctx := context.Background()
	longest := strings.Repeat("n", 98)
	if err := e.d.Schedule(ctx, longest, "@every 1h", Bulk{N: 1}); err != nil {
		t.Fatalf("Schedule with a name of 98 bytes: %v", err)
	}
	if e.registered(longest) == nil {
		t.Fatal("the schedule of the longest name is not registered")
	}
	err := e.d.Schedule(ctx, longest+"n", "@every 1h", Bulk{N: 1})
	if !errors.Is(err, job.ErrInvalid) {
		t.Fatalf("Schedule with a name of 99 bytes: %v, want job.ErrInvalid", err)
	}
	if e.registered(longest+"n") != nil {
		t.Fatal("the refused schedule was registered")
	}
	if err := e.d.Schedule(ctx, "bad name", "@every 1h", Bulk{N: 1}); !errors.Is(err, job.ErrInvalid) {
		t.Fatalf("Schedule with a name that is no id: %v, want job.ErrInvalid", err)
	}
	if err := e.d.Unschedule(ctx, longest); err != nil {
		t.Fatal(err)
	}
}
