package events_test

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/connector-go/connector/events"
	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/internal/wire"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"
)

// A process that waited for another partitioning and then cannot get its
// own set of consumers ready (a takeover that failed halfway, then a
// consumer that still cannot be created or updated) keeps trying: it does
// not consume a set it does not have (before, it started a term on no
// consumers at all and crashed with an index out of range). Once the
// consumer can be made, it takes the listener over as usual: the event the
// old partitioning handled is not handled again, the waiting ones are
// handled once.
func TestListenerWhoseSetCannotBeEnsuredKeepsTrying(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	const name = "ensure_fails"

	// The old partitioning (1) handles one event, then its process stops.
	old := newCounter()
	la := e.listeners()
	must(t, la.On(name, "res.partner", "", old.handle, events.WithPartitions(1)))
	actx, stopA := context.WithCancel(ctx)
	aDone := make(chan error, 1)
	go func() { aDone <- la.Run(actx) }()
	e.publish(events.Event{Model: "res.partner", Name: events.Write, RecordID: "before"})
	testenv.Eventually(t, 10*time.Second, func() bool { return old.get("before") == 1 }, "the old partitioning handled its event")
	stopA()
	if err := <-aDone; err != nil {
		t.Fatal(err)
	}

	// Records of each partition of 2, published while nothing runs.
	var waiting []string
	for i := 0; len(waiting) < 2; i++ {
		id := "r" + strconv.Itoa(i)
		if wire.EventBucket(id)%2 == len(waiting) {
			waiting = append(waiting, id)
			e.publish(events.Event{Model: "res.partner", Name: events.Write, RecordID: id})
		}
	}

	// Partition 1 of the new partitioning cannot be made ready: a consumer
	// of its name exists that cannot be updated (its ack policy cannot
	// change).
	poison := events.ConsumerName(name, 1, 2)
	if _, err := e.js.CreateConsumer(ctx, e.names.EventsStream(), jetstream.ConsumerConfig{
		Durable: poison, AckPolicy: jetstream.AckNonePolicy, FilterSubject: e.names.EventFilter("res.partner", "", "01"),
	}); err != nil {
		t.Fatal(err)
	}

	// Every resolve of the listener starts with a look for its set of 256.
	var discovers atomic.Int64
	nc := e.srv.Connect(t)
	sub, err := nc.Subscribe("$JS.API.CONSUMER.INFO."+e.names.EventsStream()+"."+events.ConsumerName(name, 0, 256),
		func(*nats.Msg) { discovers.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	core, logs := observer.New(zap.WarnLevel)
	log := zap.New(zapcore.NewTee(zaptest.NewLogger(t).Core(), core))
	got := newCounter()
	lb := e.listeners(events.WithLogger(log), events.WithIntervals(50*time.Millisecond, 200*time.Millisecond))
	must(t, lb.On(name, "res.partner", "", got.handle, events.WithPartitions(2)))
	e.start(lb)

	testenv.Eventually(t, 30*time.Second, func() bool {
		return logs.FilterMessage("events: listener cannot run").Len() > 0
	}, "the takeover fails on the consumer that cannot be updated")
	// Two more resolves: the first one finds its set live but not ready.
	from := discovers.Load()
	testenv.Eventually(t, 10*time.Second, func() bool { return discovers.Load() >= from+2 }, "the listener resolves again")
	if n := logs.FilterMessage("events: consuming").Len(); n != 0 {
		t.Fatalf("the listener consumes a set it could not make ready (%d terms)", n)
	}

	// The consumer removed, the listener takes over.
	if err := e.js.DeleteConsumer(ctx, e.names.EventsStream(), poison); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, func() bool {
		return got.get(waiting[0]) == 1 && got.get(waiting[1]) == 1
	}, "the waiting events handled by the new partitioning: %v", got.snapshot())
	testenv.Eventually(t, 10*time.Second, func() bool { return e.caughtUp(name, 2) }, "the new partitioning caught up")
	if s := got.snapshot(); s["before"] != 0 || s[waiting[0]] != 1 || s[waiting[1]] != 1 {
		t.Fatalf("handled by the new partitioning: %v; want each waiting event once, the old one not again", s)
	}
}
