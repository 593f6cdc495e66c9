package worker

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/connector-go/connector/dispatcher"
	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/job"
	"github.com/redis/go-redis/v9"
)

// A slow Redis must not stop the heartbeats: the renewal of the running
// jobs' channel slots (a Redis round trip, which may take seconds while
// Redis is slow or out of reach) went in the same loop, after the
// InProgress of every held job, so no job of the process was heartbeated
// until it returned. A job running meanwhile, in any channel, lost its
// lease and ran a second time elsewhere (here: in the same worker).
func TestSlowSlotRenewalKeepsTheLeases(t *testing.T) {
	_, _, js := testenv.JetStream(t)
	rdb, prefix := testenv.Redis(t)

	const ackWait = time.Second
	slow := make(chan struct{}) // the first renewal is held
	var once sync.Once
	rdb.AddHook(&scriptHook{onCmd: func(ctx context.Context, cmd redis.Cmder) {
		if _, ok := scriptCall(cmd, renewScript, "local xx = ARGV[2] == 'XX'"); !ok {
			return
		}
		first := false
		once.Do(func() { first = true })
		if !first {
			return
		}
		close(slow)
		// Redis answers late: three leases later, or when the caller
		// gives up.
		select {
		case <-ctx.Done():
		case <-time.After(3 * ackWait):
		}
	}})

	reg := NewRegistry()
	var mu sync.Mutex
	runs := map[int][]int{} // job -> attempts of its runs
	MustRegister(reg, func(ctx context.Context, j *job.Job[bandJob]) (string, error) {
		mu.Lock()
		runs[j.Args.N] = append(runs[j.Args.N], j.Attempt)
		mu.Unlock()
		select { // longer than the lease: it lives by its heartbeats
		case <-ctx.Done():
		case <-time.After(4 * ackWait):
		}
		return "", nil
	})
	w, err := New(js, reg, WithPrefix(prefix), WithRedis(rdb), WithChannels("root.lim:1"), WithMemoryStorage(),
		WithName("p1"), WithAckWait(ackWait))
	if err != nil {
		t.Fatal(err)
	}
	d, err := dispatcher.New(js, dispatcher.WithPrefix(prefix), dispatcher.WithRedis(rdb))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close(context.Background()) })
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = w.Run(ctx); close(done) }()
	t.Cleanup(func() { stop(); <-done })

	// Job 0 holds the slot of root.lim (its lease is renewed with the
	// heartbeats); job 1 runs in root, unlimited.
	if _, err := d.Enqueue(context.Background(), bandJob{N: 0}, job.WithChannel("root.lim")); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Enqueue(context.Background(), bandJob{N: 1}, job.WithChannel("root")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-slow:
	case <-time.After(10 * time.Second):
		t.Fatal("no slot renewal")
	}
	testenv.Eventually(t, 15*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(runs[0]) >= 1 && len(runs[1]) >= 1 && w.Running() == 0
	}, "both jobs ran and ended")
	mu.Lock()
	defer mu.Unlock()
	for n, attempts := range runs {
		if len(attempts) != 1 {
			t.Errorf("job %d ran %d times (attempts %v): its lease ended while the slot renewal waited for Redis, without heartbeats",
				n, len(attempts), attempts)
		}
	}
}
