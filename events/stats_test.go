package events_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/connector-go/connector/events"
	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/internal/wire"
	"github.com/nats-io/nats.go/jetstream"
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

// Two live partitionings of one listener (processes with different
// partition counts started at once on a new listener: both create their
// set; the younger waits for the older) are not two backlogs: the younger
// set is not consumed, and takes over where the older stands, skipping
// what it handled. Stats and Lag count the set in charge (the oldest, as
// the runners decide) and name the other as standby, instead of adding
// every event of the stream to the listener's lag.
func TestStatsCountThePartitioningInCharge(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	got := newCounter()
	l := e.listeners()
	must(t, l.On("export", "res.partner", "", got.handle, events.WithPartitions(2)))
	stop := e.runFor(l)
	for _, r := range []string{"1", "2", "3"} {
		e.publish(events.Event{Model: "res.partner", Name: events.Write, RecordID: r})
	}
	testenv.Eventually(t, 10*time.Second, func() bool { return e.caughtUp("export", 2) }, "the 2 partitions caught up")
	stop()

	// The set of 4 of a process started beside it, as resolve creates it
	// for a listener it finds without consumers.
	for i := range 4 {
		var filters []string
		for b := i; b < wire.EventBuckets; b += 4 {
			filters = append(filters, e.names.EventFilter("res.partner", "", fmt.Sprintf("%02x", b)))
		}
		_, err := e.js.CreateConsumer(ctx, e.names.EventsStream(), jetstream.ConsumerConfig{
			Durable: events.ConsumerName("export", i, 4), FilterSubjects: filters,
			DeliverPolicy: jetstream.DeliverAllPolicy, AckPolicy: jetstream.AckExplicitPolicy,
			MaxAckPending: 1, MaxDeliver: -1,
			Metadata: map[string]string{"connector.listener": "export", "connector.partitions": "4"},
		})
		must(t, err)
	}
	pub := e.publisher()
	testenv.Eventually(t, 10*time.Second, func() bool {
		st, err := pub.Stats(ctx)
		must(t, err)
		var total uint64
		for _, ls := range st.Listeners {
			if ls.Listener == "export" {
				total = ls.Pending
			}
		}
		return total == 3 || total == 0
	}, "the new set's consumers counted by the server")
	st, err := pub.Stats(ctx)
	must(t, err)
	var ls events.ListenerStats
	for _, s := range st.Listeners {
		if s.Listener == "export" {
			ls = s
		}
	}
	if ls.Partitions != 2 || ls.Pending != 0 || ls.Taken != 0 || ls.Standby != 4 {
		t.Fatalf("export: %+v, want the set of 2 in charge (2 partitions, nothing pending) and 4 standby consumers", ls)
	}
	lag, err := pub.Lag(ctx)
	must(t, err)
	if lag["export"] != 0 {
		t.Fatalf("lag %d, want 0: the standby set's events are not the listener's backlog", lag["export"])
	}
}
