package events_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/connector-go/connector/events"
	"github.com/connector-go/connector/internal/testenv"
)

// Stats shows, per listener (and the subject guard), its partitions, its
// lag while no process runs it, and its dead letters.
func TestStatsPerListener(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	l := e.listeners()
	must(t, l.On("export", "res.partner", "", func(context.Context, events.Event) error {
		return errors.New("the shop is down")
	}, events.WithPartitions(1), events.WithMaxDeliver(1)))
	must(t, l.On("audit", "res.partner", "", func(context.Context, events.Event) error { return nil }, events.WithPartitions(2)))
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- l.Run(rctx) }()

	pub := e.publisher()
	e.publish(events.Event{Model: "res.partner", Name: events.Write, RecordID: "1"})
	testenv.Eventually(t, 10*time.Second, func() bool {
		st, err := pub.Stats(ctx)
		return err == nil && st.Dead == 1
	}, "the export listener's dead letter")
	e.drained("export")
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	// Nothing runs the listeners now: new events wait.
	for _, r := range []string{"2", "3", "4"} {
		e.publish(events.Event{Model: "res.partner", Name: events.Write, RecordID: r})
	}
	// A consumer counts a new message a moment after the stream has
	// acknowledged its publish (the server signals its consumers on a
	// goroutine of its own): wait for the three, then check the rest.
	var st events.Stats
	got := map[string]events.ListenerStats{}
	testenv.Eventually(t, 10*time.Second, func() bool {
		var err error
		if st, err = pub.Stats(ctx); err != nil {
			t.Fatal(err)
		}
		clear(got)
		for _, ls := range st.Listeners {
			got[ls.Listener] = ls
		}
		return got["export"].Pending == 3 && got["audit"].Pending == 3 && got[events.GuardName].Pending == 3
	}, "the three new events pending for each listener and the guard: %+v", got)
	if len(got) != 3 {
		t.Fatalf("listeners %+v, want export, audit and the guard", st.Listeners)
	}
	if ls := got["export"]; ls.Partitions != 1 || ls.Pending != 3 || ls.Dead != 1 || ls.Taken != 0 {
		t.Errorf("export: %+v, want 1 partition, 3 pending, 1 dead", ls)
	}
	if ls := got["audit"]; ls.Partitions != 2 || ls.Pending != 3 || ls.Dead != 0 {
		t.Errorf("audit: %+v, want 2 partitions, 3 pending (over both), 0 dead", ls)
	}
	if ls := got[events.GuardName]; ls.Pending != 3 {
		t.Errorf("guard: %+v, want 3 pending", ls)
	}
	if st.Dead != 1 {
		t.Errorf("dead %d, want 1", st.Dead)
	}
}
