package events_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/connector-go/connector/events"
	"github.com/connector-go/connector/internal/streams"
	"github.com/connector-go/connector/internal/testenv"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap/zaptest"
)

// A running listener whose events stream is deleted and provisioned again
// (sequences restart at 1) handles the new stream's events: the marks of
// the old stream, keyed by its creation time, do not apply to the new one
// (docs/events.md, "Delivery: at least once").
func TestRecreatedStreamDoesNotInheritMarks(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	got := newCounter()
	l := e.listeners()
	must(t, l.On("reborn", "res.partner", "", got.handle, events.WithPartitions(1)))
	e.start(l)
	for i := 0; i < 5; i++ {
		e.publish(events.Event{Model: "res.partner", Name: events.Write, RecordID: fmt.Sprint("old", i)})
	}
	testenv.Eventually(t, 10*time.Second, func() bool { return len(got.snapshot()) == 5 }, "old events handled")

	must(t, e.js.DeleteStream(ctx, e.names.EventsStream()))
	must(t, streams.Ensure(ctx, e.js, streams.Config{Names: e.names, Memory: true}))
	for i := 0; i < 3; i++ {
		e.publish(events.Event{Model: "res.partner", Name: events.Write, RecordID: fmt.Sprint("new", i)})
	}
	deadline := time.Now().Add(30 * time.Second)
	for !(got.get("new0") == 1 && got.get("new1") == 1 && got.get("new2") == 1) {
		if time.Now().After(deadline) {
			c, err := e.js.Consumer(ctx, e.names.EventsStream(), events.ConsumerName("reborn", 0, 1))
			if err != nil {
				t.Fatalf("new events not handled (%v); consumer: %v", got.snapshot(), err)
			}
			info, _ := c.Info(ctx)
			t.Fatalf("new events not handled (%v); consumer acked up to stream seq %d, %d pending, %d unacknowledged",
				got.snapshot(), info.AckFloor.Stream, info.NumPending, info.NumAckPending)
		}
		time.Sleep(50 * time.Millisecond)
	}
	e.drained("reborn")
	for r, c := range got.snapshot() {
		if c != 1 {
			t.Fatalf("record %s handled %d times", r, c)
		}
	}
}

// An event of a recreated events stream (sequences restart at 1) that its
// listener gives up on gets its own dead letter, beside the letter of the
// old stream's event at the same sequence: the letters' Nats-Msg-Id holds
// the time the stream stored the event, so the dead-letter stream does not
// drop the new letter as a duplicate of the old within its dedup window
// (the event would be terminated with no letter to replay).
func TestRecreatedStreamEventsGetTheirOwnDeadLetters(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	calls := newCounter()
	l := e.listeners()
	must(t, l.On("fragile", "res.partner", "", func(_ context.Context, ev events.Event) error {
		calls.inc(ev.RecordID)
		return errors.New("the shop is down")
	}, events.WithPartitions(1), events.WithMaxDeliver(1)))
	e.start(l)
	pub := e.publisher()

	e.publish(events.Event{Model: "res.partner", Name: events.Write, RecordID: "old"})
	testenv.Eventually(t, 10*time.Second, func() bool {
		dl, err := pub.DeadLetters(ctx, "fragile", 0)
		return err == nil && len(dl) == 1
	}, "the old stream's event dead-lettered")

	must(t, e.js.DeleteStream(ctx, e.names.EventsStream()))
	must(t, streams.Ensure(ctx, e.js, streams.Config{Names: e.names, Memory: true}))
	e.publish(events.Event{Model: "res.partner", Name: events.Write, RecordID: "new"})

	// The listener starts over on the new stream and gives up on the new
	// event (seq 1 again): handled once, then terminated.
	testenv.Eventually(t, 30*time.Second, func() bool { return calls.get("new") == 1 }, "the new event handled")
	testenv.Eventually(t, 10*time.Second, func() bool { return e.caughtUp("fragile", 1) }, "the new event terminated")

	// The letter is written before the event is terminated: it is there.
	letters, err := pub.DeadLetters(ctx, "fragile", 0)
	must(t, err)
	var seen []string
	for _, dl := range letters {
		seen = append(seen, fmt.Sprintf("seq %d of %s", dl.StreamSeq, dl.Subject))
	}
	if len(letters) != 2 || letters[0].StreamSeq != 1 || letters[1].StreamSeq != 1 {
		t.Fatalf("dead letters of listener fragile: %v; want one per dead event, both at events stream seq 1", seen)
	}
}

// flakyCreate is a JetStream whose CreateConsumer of one consumer fails
// once (a timeout, a process stopped in the middle).
type flakyCreate struct {
	jetstream.JetStream
	name   string
	failed atomic.Bool
}

func (f *flakyCreate) CreateConsumer(ctx context.Context, stream string, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	if cfg.Durable == f.name && f.failed.CompareAndSwap(false, true) {
		return nil, errors.New("injected: request timed out")
	}
	return f.JetStream.CreateConsumer(ctx, stream, cfg)
}

// A takeover interrupted after it created some of the new partitioning's
// consumers (here one CREATE fails; equally a process stopped or killed in
// the middle) is finished later without replaying what the old
// partitioning handled: the missing consumers get the handover floors too.
func TestInterruptedTakeoverDoesNotReplay(t *testing.T) {
	e := newEnv(t)
	r := e.repartition("halfway", 8)
	log := r.log

	stop := r.start(1)
	r.batch(0, 3)
	testenv.Eventually(t, 20*time.Second, func() bool { return log.handled() == len(r.ids) }, "first batch handled under 1 partition")
	stop()
	r.batch(3, 2) // waits for the takeover

	js := &flakyCreate{JetStream: e.newJS(), name: events.ConsumerName("halfway", 1, 2)}
	l, err := events.NewListeners(js, append([]events.Option{events.WithAckWait(3 * time.Second), events.WithRedis(e.rdb),
		events.WithPrefix(e.names.Prefix), events.WithLogger(zaptest.NewLogger(t))}, r.opts...)...)
	must(t, err)
	must(t, l.On("halfway", "res.partner", "", log.handler, events.WithPartitions(2)))
	stop = e.runFor(l)
	testenv.Eventually(t, 30*time.Second, func() bool { return log.handled() >= len(r.ids) && e.caughtUp("halfway", 2) },
		"second batch handled under 2 partitions")
	if !js.failed.Load() {
		t.Fatal("the takeover did not try to create the consumer that fails")
	}
	log.check(t, r.ids)
	stop()
}

// A takeover reads where the old partitioning stopped from its Redis marks
// too, not only from its consumers' ack floors: an event the old set
// handled whose acknowledgement was lost (its process stopped right after
// the handler returned) is not handled again by the new set
// (docs/events.md, "Changing the partitions", step 2).
func TestTakeoverReadsMarksAboveTheAckFloor(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	r := e.repartition("lostack", 4)
	log := r.log

	stop := r.start(1)
	r.batch(0, 2)
	testenv.Eventually(t, 20*time.Second, func() bool { return log.handled() == len(r.ids) }, "first batch handled under 1 partition")
	stop()

	stream, err := e.js.Stream(ctx, e.names.EventsStream())
	must(t, err)
	info, err := stream.Info(ctx)
	must(t, err)
	first := len(r.ids)
	r.batch(2, 2)
	// The first event of this batch was handled by the 1-partition set,
	// which wrote its mark, but the acknowledgement was lost.
	old := events.ConsumerName("lostack", 0, 1)
	testenv.Eventually(t, 5*time.Second, func() bool {
		c, err := e.js.Consumer(ctx, e.names.EventsStream(), old)
		return err == nil && c.CachedInfo().AckFloor.Stream == info.State.LastSeq
	}, "the old consumer's ack floor at the first batch")
	key := e.names.RedisKey("events", "seq", old, strconv.FormatInt(info.Created.UnixNano(), 10), "res.partner/*")
	must(t, e.rdb.Set(ctx, key, info.State.LastSeq+1, 0).Err())

	stop = r.start(2)
	handledBefore := r.ids[first]
	rest := slices.Delete(slices.Clone(r.ids), first, first+1)
	testenv.Eventually(t, 30*time.Second, func() bool { return log.handled() >= len(rest) && e.caughtUp("lostack", 2) },
		"second batch handled under 2 partitions")
	log.mu.Lock()
	again := log.count[handledBefore]
	log.mu.Unlock()
	if again != 0 {
		t.Fatalf("the event under the old set's mark was handled again by the new set (%d times)", again)
	}
	log.check(t, rest)
	stop()
}
