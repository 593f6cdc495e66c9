package events_test

import (
	"context"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/connector-go/connector/events"
	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/internal/wire"
)

// A handler that ends its goroutine with runtime.Goexit (t.FailNow called
// in a handler of a test does) fails its event like a panic, and the
// listener goes on with the next events. Before, Goexit ended the
// goroutine delivering the partition's messages.
func TestHandlerGoexitFailsTheEventOnly(t *testing.T) {
	e := newEnv(t)
	calls := newCounter()
	l := e.listeners()
	must(t, l.On("exits", "sale.order", "", func(_ context.Context, ev events.Event) error {
		calls.inc(ev.RecordID)
		if ev.RecordID == "goexit" {
			runtime.Goexit()
		}
		return nil
	}, events.WithPartitions(1), events.WithMaxDeliver(2),
		events.WithRetryDelay(func(int) time.Duration { return 20 * time.Millisecond })))
	e.start(l)
	for _, r := range []string{"goexit", "after"} {
		e.publish(events.Event{Model: "sale.order", Name: events.Write, RecordID: r})
	}
	testenv.Eventually(t, 15*time.Second, func() bool { return calls.get("after") == 1 }, "the event after the Goexit handled")
	testenv.Eventually(t, 15*time.Second, func() bool { return len(e.deadLetters()) == 1 }, "the Goexit event dead-lettered")
	dl := e.deadLetters()[0]
	if dl.Reason != wire.ReasonPanic || !strings.Contains(dl.Error, "Goexit") || dl.Attempts != 2 {
		t.Fatalf("letter %+v: want reason panic, an error naming Goexit, 2 attempts", dl)
	}
	if c := calls.get("goexit"); c != 2 {
		t.Fatalf("goexit handled %d times, want 2", c)
	}
}
