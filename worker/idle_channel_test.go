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

// An unconfigured channel's consumer does not outlive the channel's use:
// once its subject is empty, the processes stop pulling on it and the
// server removes it (every consumer of the jobs stream costs every ack);
// the channel's next job gets one again and runs once. Two workers, each
// on a connection of its own, pull on it: it goes only once both stop.
func TestIdleUnconfiguredChannelConsumerIsRemoved(t *testing.T) {
	srv, _, js := testenv.JetStream(t)
	rdb, prefix := testenv.Redis(t)
	names := wire.MustNames(prefix)
	ctx := context.Background()
	if err := streams.Ensure(ctx, js, streams.Config{Names: names}); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	runs := map[int]int{}
	reg := NewRegistry()
	MustRegister(reg, func(ctx context.Context, j *job.Job[adhocJob]) (string, error) {
		mu.Lock()
		runs[j.Args.N]++
		mu.Unlock()
		return "", nil
	})
	ran := func(n int) int {
		mu.Lock()
		defer mu.Unlock()
		return runs[n]
	}
	idle := Option(func(c *config) { c.idleStop, c.idleRemove = time.Second, 2*time.Second })
	for i := 0; i < 2; i++ {
		wjs, err := jetstream.New(srv.Connect(t))
		if err != nil {
			t.Fatal(err)
		}
		w, err := New(wjs, reg, WithPrefix(prefix), WithRedis(rdb), idle,
			WithLogger(zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))))
		if err != nil {
			t.Fatal(err)
		}
		wctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- w.Run(wctx) }()
		t.Cleanup(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("worker %d: %v", i, err)
			}
		})
	}
	publish := func(n int) {
		t.Helper()
		args, err := wire.Marshal(adhocJob{N: n})
		if err != nil {
			t.Fatal(err)
		}
		data, err := wire.EncodeEnvelope(&wire.Envelope{ID: wire.NewID(), Name: adhocJob{}.JobName(), Args: args, Channel: "root.adhoc"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := js.Publish(ctx, names.JobsSubject("root.adhoc", 1), data); err != nil {
			t.Fatal(err)
		}
	}
	consumer := names.JobsConsumer("root.adhoc", 1)
	exists := func() bool {
		_, err := js.Consumer(ctx, names.JobsStream(), consumer)
		if err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			t.Fatalf("consumer %s: %v", consumer, err)
		}
		return err == nil
	}

	publish(1)
	testenv.Eventually(t, 15*time.Second, func() bool { return ran(1) == 1 }, "job 1 of the unconfigured channel ran")
	if !exists() {
		t.Fatalf("no consumer %s while its channel is in use", consumer)
	}
	testenv.Eventually(t, 30*time.Second, func() bool { return !exists() }, "the idle channel's consumer removed")

	publish(2)
	testenv.Eventually(t, 15*time.Second, func() bool { return ran(2) == 1 }, "job 2 of the channel, after its consumer went, ran")
	if !exists() {
		t.Errorf("no consumer %s again while its channel is in use", consumer)
	}
	testenv.Eventually(t, 30*time.Second, func() bool { return !exists() }, "the consumer removed again")
	if ran(1) != 1 || ran(2) != 1 {
		t.Errorf("runs %v, want each job once", runs)
	}
}

// A puller that does not pull while its band waits for a slot (a limited
// ancestor's band has blocked jobs) sends no pull requests: the server
// removes its consumer after idleRemove although its subject holds a job
// (delivered to nobody, so no lease keeps the consumer). The sweeper must
// give the channel its consumer again once its pullers find it gone, or
// the job is never pulled by this process again.
func TestUnconfiguredChannelConsumerRemovedWhileBandBlocked(t *testing.T) {
	srv, _, js := testenv.JetStream(t)
	rdb, prefix := testenv.Redis(t)
	names := wire.MustNames(prefix)
	ctx := context.Background()
	if err := streams.Ensure(ctx, js, streams.Config{Names: names}); err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	var mu sync.Mutex
	runs := map[int]int{}
	reg := NewRegistry()
	MustRegister(reg, func(ctx context.Context, j *job.Job[adhocJob]) (string, error) {
		mu.Lock()
		runs[j.Args.N]++
		mu.Unlock()
		if j.Args.N == 0 {
			<-release // holds root.lim's only slot
		}
		return "", nil
	})
	ran := func(n int) int {
		mu.Lock()
		defer mu.Unlock()
		return runs[n]
	}
	idle := Option(func(c *config) { c.idleStop, c.idleRemove = time.Second, 2*time.Second })
	wjs, err := jetstream.New(srv.Connect(t))
	if err != nil {
		t.Fatal(err)
	}
	w, err := New(wjs, reg, WithPrefix(prefix), WithRedis(rdb), WithChannels("root.lim:1"), idle,
		WithLogger(zaptest.NewLogger(t, zaptest.Level(zap.ErrorLevel))))
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(wctx) }()
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	t.Cleanup(func() {
		unblock()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("worker: %v", err)
		}
	})
	publish := func(channel string, n int) {
		t.Helper()
		args, err := wire.Marshal(adhocJob{N: n})
		if err != nil {
			t.Fatal(err)
		}
		data, err := wire.EncodeEnvelope(&wire.Envelope{ID: wire.NewID(), Name: adhocJob{}.JobName(), Args: args, Channel: channel})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := js.Publish(ctx, names.JobsSubject(channel, 1), data); err != nil {
			t.Fatal(err)
		}
	}
	consumer := names.JobsConsumer("root.lim.eu", 1)
	exists := func() bool {
		_, err := js.Consumer(ctx, names.JobsStream(), consumer)
		if err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			t.Fatalf("consumer %s: %v", consumer, err)
		}
		return err == nil
	}

	// Job 0 holds root.lim's slot; job 1 waits for it: band 1 is blocked.
	testenv.Eventually(t, 15*time.Second, func() bool { return w.states["root.lim"] != nil }, "the worker set up")
	publish("root.lim", 0)
	testenv.Eventually(t, 15*time.Second, func() bool { return ran(0) == 1 }, "job 0 runs")
	publish("root.lim", 1)
	testenv.Eventually(t, 15*time.Second, func() bool { return w.states["root.lim"].hasBlocked(1) }, "job 1 waits for the slot")
	// A job of an unconfigured sub-channel, same band: its consumer is
	// made, its puller waits for band 1 to unblock, and the server removes
	// the consumer meanwhile.
	publish("root.lim.eu", 2)
	testenv.Eventually(t, 15*time.Second, exists, "the sub-channel's consumer made")
	testenv.Eventually(t, 15*time.Second, func() bool { return !exists() }, "the server removes the unpulled consumer")

	unblock()
	testenv.Eventually(t, 15*time.Second, func() bool { return ran(1) == 1 }, "job 1 runs once the slot is free")
	testenv.Eventually(t, 15*time.Second, func() bool { return ran(2) == 1 }, "job 2 of the sub-channel runs after its consumer was removed")
	if ran(0) != 1 || ran(1) != 1 || ran(2) != 1 {
		t.Errorf("runs %v, want each job once", runs)
	}
}
