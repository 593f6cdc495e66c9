package worker

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/connector-go/connector/internal/streams"
	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/internal/wire"
	"github.com/connector-go/connector/job"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
)

type adhocJob struct {
	N int `msgpack:"n"`
}

func (adhocJob) JobName() string { return "test.adhoc" }

// idleEnv runs workers whose unconfigured channels' consumers go idle
// after 1 s and are removed by the server 2 s later; adhocJob N's handler
// counts its runs, and waits for hold[N] if there is one.
type idleEnv struct {
	t     *testing.T
	srv   *testenv.NATSServer
	js    jetstream.JetStream
	names wire.Names
	reg   *Registry
	opts  []Option
	hold  map[int]chan struct{}
	mu    sync.Mutex
	runs  map[int]int
}

func newIdleEnv(t *testing.T, hold map[int]chan struct{}) *idleEnv {
	srv, _, js := testenv.JetStream(t)
	rdb, prefix := testenv.Redis(t)
	e := &idleEnv{t: t, srv: srv, js: js, names: wire.MustNames(prefix), reg: NewRegistry(), hold: hold, runs: map[int]int{}}
	if err := streams.Ensure(context.Background(), js, streams.Config{Names: e.names}); err != nil {
		t.Fatal(err)
	}
	MustRegister(e.reg, func(ctx context.Context, j *job.Job[adhocJob]) (string, error) {
		e.mu.Lock()
		e.runs[j.Args.N]++
		e.mu.Unlock()
		if h := e.hold[j.Args.N]; h != nil {
			<-h
		}
		return "", nil
	})
	e.opts = []Option{WithPrefix(prefix), WithRedis(rdb), WithLogger(zaptest.NewLogger(t, zaptest.Level(zap.ErrorLevel))),
		Option(func(c *config) { c.idleStop, c.idleRemove = time.Second, 2*time.Second })}
	return e
}

// start runs a worker on a connection of its own until the test ends.
func (e *idleEnv) start(opts ...Option) *Worker {
	w, _ := runOwn(e.t, e.srv, e.reg, append(append([]Option(nil), e.opts...), opts...)...)
	e.t.Cleanup(func() { // before the worker stops: its held jobs end
		for _, h := range e.hold {
			select {
			case <-h:
			default:
				close(h)
			}
		}
	})
	return w
}

func (e *idleEnv) ran(n int) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.runs[n]
}

// publish puts adhocJob n on channel's normal band.
func (e *idleEnv) publish(channel string, n int) {
	e.t.Helper()
	args, err := wire.Marshal(adhocJob{N: n})
	if err != nil {
		e.t.Fatal(err)
	}
	data, err := wire.EncodeEnvelope(&wire.Envelope{ID: wire.NewID(), Name: adhocJob{}.JobName(), Args: args, Channel: channel})
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.js.Publish(context.Background(), e.names.JobsSubject(channel, 1), data); err != nil {
		e.t.Fatal(err)
	}
}

// exists tells whether the consumer of channel's normal band exists.
func (e *idleEnv) exists(channel string) func() bool {
	consumer := e.names.JobsConsumer(channel, 1)
	return func() bool {
		_, err := e.js.Consumer(context.Background(), e.names.JobsStream(), consumer)
		if err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			e.t.Fatalf("consumer %s: %v", consumer, err)
		}
		return err == nil
	}
}

// An unconfigured channel's consumer does not outlive the channel's use:
// once its subject is empty, the processes stop pulling on it and the
// server removes it (every consumer of the jobs stream costs every ack);
// the channel's next job gets one again and runs once. Two workers, each
// on a connection of its own, pull on it: it goes only once both stop.
func TestIdleUnconfiguredChannelConsumerIsRemoved(t *testing.T) {
	e := newIdleEnv(t, nil)
	e.start()
	e.start()
	exists := e.exists("root.adhoc")
	gone := func() bool { return !exists() }

	e.publish("root.adhoc", 1)
	testenv.Eventually(t, 15*time.Second, func() bool { return e.ran(1) == 1 }, "job 1 of the unconfigured channel ran")
	if !exists() {
		t.Fatal("no consumer while its channel is in use")
	}
	testenv.Eventually(t, 30*time.Second, gone, "the idle channel's consumer removed")

	e.publish("root.adhoc", 2)
	testenv.Eventually(t, 15*time.Second, func() bool { return e.ran(2) == 1 }, "job 2 of the channel, after its consumer went, ran")
	if !exists() {
		t.Error("no consumer again while its channel is in use")
	}
	testenv.Eventually(t, 30*time.Second, gone, "the consumer removed again")
	if e.ran(1) != 1 || e.ran(2) != 1 {
		t.Errorf("runs %v, want each job once", e.runs)
	}
}

// A puller that does not pull while its band waits for a slot (a limited
// ancestor's band has blocked jobs) sends no pull requests: the server
// removes its consumer after idleRemove although its subject holds a job
// (delivered to nobody, so no lease keeps the consumer). The sweeper must
// give the channel its consumer again once its pullers find it gone, or
// the job is never pulled by this process again.
func TestUnconfiguredChannelConsumerRemovedWhileBandBlocked(t *testing.T) {
	release := make(chan struct{})
	e := newIdleEnv(t, map[int]chan struct{}{0: release}) // job 0 holds root.lim's only slot
	w := e.start(WithChannels("root.lim:1"))
	exists := e.exists("root.lim.eu")

	// Job 0 holds root.lim's slot; job 1 waits for it: band 1 is blocked.
	testenv.Eventually(t, 15*time.Second, func() bool { return w.states["root.lim"] != nil }, "the worker set up")
	e.publish("root.lim", 0)
	testenv.Eventually(t, 15*time.Second, func() bool { return e.ran(0) == 1 }, "job 0 runs")
	e.publish("root.lim", 1)
	testenv.Eventually(t, 15*time.Second, func() bool { return w.states["root.lim"].hasBlocked(1) }, "job 1 waits for the slot")
	// A job of an unconfigured sub-channel, same band: its consumer is
	// made, its puller waits for band 1 to unblock, and the server removes
	// the consumer meanwhile.
	e.publish("root.lim.eu", 2)
	testenv.Eventually(t, 15*time.Second, exists, "the sub-channel's consumer made")
	testenv.Eventually(t, 15*time.Second, func() bool { return !exists() }, "the server removes the unpulled consumer")

	close(release)
	testenv.Eventually(t, 15*time.Second, func() bool { return e.ran(1) == 1 }, "job 1 runs once the slot is free")
	testenv.Eventually(t, 15*time.Second, func() bool { return e.ran(2) == 1 }, "job 2 of the sub-channel runs after its consumer was removed")
	if e.ran(0) != 1 || e.ran(1) != 1 || e.ran(2) != 1 {
		t.Errorf("runs %v, want each job once", e.runs)
	}
}

// The consumers of unconfigured channels an earlier version made, without
// InactiveThreshold, are given it when a worker starts: idle, they go too.
// Configured channels' consumers are left as they are.
func TestEarlierUnconfiguredChannelConsumersAreAdopted(t *testing.T) {
	e := newIdleEnv(t, nil)
	ctx := context.Background()
	old := jetstream.ConsumerConfig{
		Durable:       e.names.JobsConsumer("root.old", 1),
		Description:   unconfiguredDescription + "root.old (runs under root)",
		FilterSubject: e.names.JobsSubject("root.old", 1),
		AckPolicy:     jetstream.AckExplicitPolicy,
	}
	if _, err := e.js.CreateConsumer(ctx, e.names.JobsStream(), old); err != nil {
		t.Fatal(err)
	}
	e.start()
	testenv.Eventually(t, 30*time.Second, func() bool { return !e.exists("root.old")() }, "the earlier version's idle consumer removed")
	c, err := e.js.Consumer(ctx, e.names.JobsStream(), e.names.JobsConsumer("root", 1))
	if err != nil {
		t.Fatalf("root's consumer: %v", err)
	}
	if th := c.CachedInfo().Config.InactiveThreshold; th != 0 {
		t.Errorf("root's consumer was given InactiveThreshold %v", th)
	}
}
