package events_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/connector-go/connector/events"
	"github.com/connector-go/connector/internal/testenv"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap/zaptest"
)

// notListening fails the test unless err says the listeners are not
// listening.
func notListening(t *testing.T, err error, when string) {
	t.Helper()
	if !errors.Is(err, events.ErrNotListening) {
		t.Fatalf("Ready %s: %v, want an error matching ErrNotListening", when, err)
	}
	t.Logf("Ready %s: %v", when, err)
}

// Ready answers whether Run listens: not before Run, not while Run is
// still creating the consumers (a readiness probe must not count the
// process ready then), then nil once they exist and events are handled;
// not while Run stops, waiting for a handler, nor after it has returned.
func TestReadyFollowsRun(t *testing.T) {
	e := newEnv(t)
	js, held, release := testenv.HeldAPI(t, e.srv, "CONSUMER.CREATE.")
	l, err := events.NewListeners(js, events.WithPrefix(e.names.Prefix), events.WithRedis(e.rdb),
		events.WithAckWait(3*time.Second), events.WithLogger(zaptest.NewLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	handling, unblock := make(chan string, 1), make(chan struct{})
	err = l.On("ready_probe", "res.partner", "", func(_ context.Context, ev events.Event) error {
		handling <- ev.RecordID
		<-unblock
		return nil
	}, events.WithPartitions(1))
	if err != nil {
		t.Fatal(err)
	}
	notListening(t, l.Ready(), "before Run")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	var api string
	select {
	case api = <-held:
	case err := <-done:
		t.Fatalf("Run returned before creating its consumers: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not come to create its consumers")
	}
	consumer := events.ConsumerName("ready_probe", 0, 1)
	if _, err := e.js.Consumer(context.Background(), e.names.EventsStream(), consumer); !errors.Is(err, jetstream.ErrConsumerNotFound) {
		t.Fatalf("consumer %s while Run's %s is held: %v, want not found", consumer, api, err)
	}
	notListening(t, l.Ready(), "while Run creates its consumers")
	release()
	testenv.Eventually(t, 20*time.Second, func() bool { return l.Ready() == nil }, "Ready nil once Run listens (last: %v)", l.Ready())
	if _, err := e.js.Consumer(context.Background(), e.names.EventsStream(), consumer); err != nil {
		t.Fatalf("Ready nil, consumer %s: %v", consumer, err)
	}

	// Listening, truly: an event reaches the handler, which then holds
	// Run's stop.
	e.publish(events.Event{Model: "res.partner", Name: events.Create, RecordID: "7"})
	select {
	case <-handling:
	case <-time.After(20 * time.Second):
		t.Fatal("the event was not handled")
	}
	cancel()
	testenv.Eventually(t, 20*time.Second, func() bool { return l.Ready() != nil }, "Ready an error once Run stops")
	select {
	case err := <-done:
		t.Fatalf("Run returned (%v) while its handler ran", err)
	default:
	}
	notListening(t, l.Ready(), "while Run stops")
	close(unblock)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return")
	}
	notListening(t, l.Ready(), "after Run returned")
}

// Listeners with none registered are ready once Run runs; a Run that
// fails at start (here: the events stream is missing) leaves them not
// ready.
func TestReadyWithoutListenersAndAfterAFailedStart(t *testing.T) {
	e := newEnv(t)
	l := e.listeners()
	notListening(t, l.Ready(), "before Run")
	e.start(l)
	testenv.Eventually(t, 20*time.Second, func() bool { return l.Ready() == nil }, "Ready nil with no listener (last: %v)", l.Ready())

	_, _, js := testenv.JetStream(t) // a server without the streams
	bare, err := events.NewListeners(js, events.WithPrefix(e.names.Prefix), events.WithLogger(zaptest.NewLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	if err := bare.Run(context.Background()); err == nil {
		t.Fatal("Run without the events stream: nil, want an error")
	}
	notListening(t, bare.Ready(), "after a failed start")
}
