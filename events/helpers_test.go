package events_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/connector-go/connector/events"
	"github.com/connector-go/connector/internal/streams"
	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/internal/wire"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap/zaptest"
)

// env is one test's servers: an embedded JetStream server with the
// connector streams under a fresh prefix, and the real Redis.
type env struct {
	t     *testing.T
	srv   *testenv.NATSServer
	js    jetstream.JetStream
	rdb   *redis.Client
	names wire.Names
}

func newEnv(t *testing.T) *env {
	t.Helper()
	rdb, prefix := testenv.Redis(t)
	srv, _, js := testenv.JetStream(t)
	names := wire.MustNames(prefix)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := streams.Ensure(ctx, js, streams.Config{Names: names, Memory: true}); err != nil {
		t.Fatal(err)
	}
	return &env{t: t, srv: srv, js: js, rdb: rdb, names: names}
}

// newJS opens another connection, as another worker process would.
func (e *env) newJS() jetstream.JetStream {
	nc := e.srv.Connect(e.t)
	js, err := jetstream.New(nc)
	if err != nil {
		e.t.Fatal(err)
	}
	return js
}

// listeners builds a Listeners on its own connection; register, then start.
func (e *env) listeners(opts ...events.Option) *events.Listeners {
	e.t.Helper()
	opts = append([]events.Option{events.WithAckWait(3 * time.Second), events.WithRedis(e.rdb),
		events.WithPrefix(e.names.Prefix), events.WithLogger(zaptest.NewLogger(e.t))}, opts...)
	l, err := events.NewListeners(e.newJS(), opts...)
	if err != nil {
		e.t.Fatal(err)
	}
	return l
}

// publisher builds a Publisher of the test's prefix.
func (e *env) publisher(opts ...events.PublisherOption) *events.Publisher {
	e.t.Helper()
	p, err := events.NewPublisher(e.js, append([]events.PublisherOption{events.WithPrefix(e.names.Prefix)}, opts...)...)
	if err != nil {
		e.t.Fatal(err)
	}
	return p
}

// start runs l until the test ends.
func (e *env) start(l *events.Listeners) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	e.t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				e.t.Errorf("Run: %v", err)
			}
		case <-time.After(15 * time.Second):
			e.t.Errorf("Run did not return")
		}
	})
}

func (e *env) publish(ev events.Event) string {
	e.t.Helper()
	id, err := e.publisher().Publish(context.Background(), ev)
	if err != nil {
		e.t.Fatal(err)
	}
	return id
}

// deadLetters reads every dead letter of the events under the prefix.
func (e *env) deadLetters() []*wire.DeadLetter {
	e.t.Helper()
	ctx := context.Background()
	c, err := e.js.OrderedConsumer(ctx, e.names.DeadStream(), jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{e.names.DeadEventsWildcard()},
	})
	if err != nil {
		e.t.Fatal(err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	n := int(info.NumPending)
	var out []*wire.DeadLetter
	for len(out) < n {
		b, err := c.Fetch(n-len(out), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			e.t.Fatal(err)
		}
		for m := range b.Messages() {
			var dl wire.DeadLetter
			if err := wire.Unmarshal(m.Data(), &dl); err != nil {
				e.t.Fatal(err)
			}
			out = append(out, &dl)
		}
		if b.Error() != nil && !errors.Is(b.Error(), jetstream.ErrNoMessages) {
			e.t.Fatal(b.Error())
		}
	}
	return out
}

// counter counts calls per key, safely.
type counter struct {
	mu sync.Mutex
	m  map[string]int
}

func newCounter() *counter { return &counter{m: map[string]int{}} }

func (c *counter) inc(k string) {
	c.mu.Lock()
	c.m[k]++
	c.mu.Unlock()
}

// handle is a listener's handler that counts each event by record id.
func (c *counter) handle(_ context.Context, ev events.Event) error {
	c.inc(ev.RecordID)
	return nil
}

func (c *counter) get(k string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[k]
}

func (c *counter) snapshot() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int, len(c.m))
	for k, v := range c.m {
		out[k] = v
	}
	return out
}

// drained waits until listener's consumer (one partition) has handled
// everything in the stream.
func (e *env) drained(listener string) {
	e.t.Helper()
	testenv.Eventually(e.t, 10*time.Second, func() bool { return e.caughtUp(listener, 1) }, "listener %s drained", listener)
}

// caughtUp: the n partition consumers of listener have delivered and
// acknowledged every event of the stream they filter (testenv.CaughtUp).
func (e *env) caughtUp(listener string, n int) bool {
	ctx := context.Background()
	var names []string
	var filter string // the listener's events, all partitions
	for i := range n {
		names = append(names, events.ConsumerName(listener, i, n))
	}
	c, err := e.js.Consumer(ctx, e.names.EventsStream(), names[0])
	if err != nil {
		return false
	}
	cfg := c.CachedInfo().Config
	filter = cfg.FilterSubject
	if len(cfg.FilterSubjects) > 0 {
		filter = cfg.FilterSubjects[0]
	}
	filter = filter[:strings.LastIndexByte(filter, '.')] + ".*" // any bucket
	return testenv.CaughtUp(ctx, e.js, e.names.EventsStream(), filter, names...)
}

// largeEvent is an event of record id whose message is 256 bytes under the
// 1 MiB body limit, and so within 256 bytes of the test server's
// max_payload (1 MiB): the publisher accepts it and the stream stores it,
// but a copy with a few more fields does not fit in one message.
func largeEvent(t *testing.T, pub *events.Publisher, id string) events.Event {
	t.Helper()
	ev := events.Event{ID: "large-" + id, Model: "res.partner", Name: events.Write, RecordID: id, Time: time.Now(),
		Data: map[string]any{"blob": ""}}
	msg, err := pub.Message(ev)
	must(t, err)
	ev.Data["blob"] = string(make([]byte, (1<<20)-256-len(msg.Data)))
	return ev
}

// interruptedByShutdown runs listener name of res.partner in a process of
// its own, publishes an event, and shuts the process down while the
// handler runs: the grace period (100 ms) ends, and the handler returns
// what stopped(ctx) says once its context is cancelled. It returns once
// Run has.
func (e *env) interruptedByShutdown(name string, stopped func(ctx context.Context) error, opts ...events.ListenOption) {
	t := e.t
	t.Helper()
	started := make(chan struct{})
	l := e.listeners(events.WithShutdownGrace(100 * time.Millisecond))
	if err := l.On(name, "res.partner", "", func(ctx context.Context, ev events.Event) error {
		close(started)
		<-ctx.Done()
		return stopped(ctx)
	}, opts...); err != nil {
		t.Fatal(err)
	}
	e.stopWhileHandling(l, started)
}

// stopWhileHandling runs l, publishes a write of res.partner 1, waits until
// started is closed (a handler runs), stops l and waits for Run to return
// (15 s at most).
func (e *env) stopWhileHandling(l *events.Listeners, started <-chan struct{}) {
	t := e.t
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	e.publish(events.Event{Model: "res.partner", Name: events.Write, RecordID: "1"})
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("handler not started")
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return 15 s after the grace period")
	}
}
