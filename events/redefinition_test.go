package events_test

import (
	"context"
	"testing"
	"time"

	"github.com/connector-go/connector/events"
	"github.com/connector-go/connector/internal/testenv"
)

// A listener given another model or event under its name, the way
// ConflictError advises (its old consumers deleted once no process runs
// them), is a new listener: it reads every event of its new definition
// still in the stream. The Redis marks of the old definition (the last
// stream sequence its partitions handled) say nothing about the events of
// the new one, and must not make it acknowledge them unhandled.
func TestRedefinedListenerDoesNotInheritTheOldMarks(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	got := newCounter()
	for _, r := range []string{"u1", "u2", "u3"} {
		e.publish(events.Event{Model: "res.users", Name: events.Write, RecordID: r})
	}
	for _, r := range []string{"p1", "p2", "p3"} {
		e.publish(events.Event{Model: "res.partner", Name: events.Write, RecordID: r})
	}
	l := e.listeners()
	must(t, l.On("exporter", "res.partner", "", got.handle, events.WithPartitions(1)))
	stop := e.runFor(l)
	testenv.Eventually(t, 10*time.Second, func() bool { return e.caughtUp("exporter", 1) && got.get("p3") == 1 }, "res.partner events handled")
	stop()

	must(t, e.js.DeleteConsumer(ctx, e.names.EventsStream(), events.ConsumerName("exporter", 0, 1)))
	l2 := e.listeners()
	must(t, l2.On("exporter", "res.users", "", got.handle, events.WithPartitions(1)))
	e.start(l2)
	testenv.Eventually(t, 10*time.Second, func() bool { return e.caughtUp("exporter", 1) }, "the new definition caught up")
	for _, r := range []string{"u1", "u2", "u3"} {
		if got.get(r) != 1 {
			t.Fatalf("res.users event of %s handled %d times, want once: %v", r, got.get(r), got.snapshot())
		}
	}
}
