package worker

import (
	"context"
	"testing"
	"time"

	"github.com/connector-go/connector/dispatcher"
	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/job"
)

// bandJob signals its start.
type bandJob struct {
	N int `msgpack:"n"`
}

func (bandJob) JobName() string { return "test.band_job" }

// bandFleet is one worker of a fleet, in this process, on a throttled
// channel; the test plays another process of the fleet through slots of
// its own (p2).
type bandFleet struct {
	w       *Worker
	d       *dispatcher.Dispatcher
	cs      *chanState
	p2      *slots
	started chan int
}

func newBandFleet(t *testing.T, spec, channel string) *bandFleet {
	t.Helper()
	_, _, js := testenv.JetStream(t)
	rdb, prefix := testenv.Redis(t)
	f := &bandFleet{started: make(chan int, 16)}
	reg := NewRegistry()
	MustRegister(reg, func(ctx context.Context, j *job.Job[bandJob]) (string, error) {
		f.started <- j.Args.N
		return "", nil
	})
	w, err := New(js, reg, WithPrefix(prefix), WithRedis(rdb), WithChannels(spec), WithMemoryStorage(), WithName("p1"))
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Setup(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("worker did not stop")
		}
	})
	d, err := dispatcher.New(js, dispatcher.WithPrefix(prefix), dispatcher.WithRedis(rdb))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close(context.Background()) })
	f.w, f.d = w, d
	f.cs = w.states[w.chans.Resolve(channel).Name]
	f.p2 = &slots{rdb: rdb, tag: w.slots.tag, lease: time.Minute, me: "p2"}
	return f
}

// watch plays p2's blocked band-1 job of cs, trying for a slot every few
// milliseconds as its blocked loop would, until the worker's band-0 job
// has taken its slot: a band-1 job must not start first, and the worker's
// "wants" mark, which keeps it from doing so, must be there all along.
func (f *bandFleet) watch(t *testing.T, within time.Duration) {
	t.Helper()
	ctx := context.Background()
	mark := f.p2.wantsKey(f.cs.ch.Name, 0)
	deadline := time.Now().Add(within)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		// Read the mark before the blocked list: the worker takes the job
		// off its list before it deletes the mark.
		n, err := f.p2.rdb.Exists(ctx, mark).Result()
		if err != nil {
			t.Fatal(err)
		}
		if !f.cs.hasBlocked(0) {
			break
		}
		if n == 0 {
			t.Fatal("the band-0 job still waits for a slot, but its \"wants\" mark is gone: a band-1 job of another process may start first")
		}
		ok, _, err := f.p2.acquire(ctx, f.cs, 1, "p2-band1", 0, place{})
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			t.Fatal("a band-1 job of another process started while the band-0 job waited")
		}
		if time.Now().After(deadline) {
			t.Fatal("the band-0 job never took a slot")
		}
		<-tick.C
	}
	select {
	case n := <-f.started:
		if n != 0 {
			t.Fatalf("job %d started first, want the band-0 job", n)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the band-0 job took its slot but did not start")
	}
}

// A band-0 job waiting out a throttle longer than its "wants" mark lasts
// (2 s) keeps the mark: when the throttle ends, a band-1 job of another
// process, woken at the same moment, must not take the start first.
func TestWantsMarkOutlastsTheThrottle(t *testing.T) {
	f := newBandFleet(t, "root.slow:0:throttle=6", "root.slow")
	ctx := context.Background()
	// Another process starts a job: the throttle holds the next start 6 s.
	if ok, _, err := f.p2.acquire(ctx, f.cs, 1, "p2-first", 0, place{}); err != nil || !ok {
		t.Fatalf("first start: %v, %v", ok, err)
	}
	if _, err := f.d.Enqueue(ctx, bandJob{N: 0}, job.WithChannel("root.slow"), job.WithPriority(0)); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() bool {
		n, _ := f.p2.rdb.Exists(ctx, f.p2.wantsKey("root.slow", 0)).Result()
		return f.cs.hasBlocked(0) && n == 1
	}, "the band-0 job waits, with its mark")
	if left, err := f.p2.rdb.PTTL(ctx, f.p2.throttleKey("root.slow")).Result(); err != nil || left < waitingTTL+time.Second {
		t.Fatalf("the throttle has %s left (%v): too little to outlast a mark of %s", left, err, waitingTTL)
	}
	f.watch(t, 20*time.Second)
}

// A band-0 job that joins the blocked jobs of a channel while its blocked
// loop sleeps (here out a throttle, for a band-1 job of this process)
// leaves its mark at once, not when the loop next wakes: until then a
// band-1 job of another process could take the next start.
func TestWantsMarkOfAJobBlockedWhileTheLoopSleeps(t *testing.T) {
	f := newBandFleet(t, "root.slow:0:throttle=3", "root.slow")
	ctx := context.Background()
	if ok, _, err := f.p2.acquire(ctx, f.cs, 1, "p2-first", 0, place{}); err != nil || !ok {
		t.Fatalf("first start: %v, %v", ok, err)
	}
	if _, err := f.d.Enqueue(ctx, bandJob{N: 1}, job.WithChannel("root.slow"), job.WithPriority(10)); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() bool { return f.cs.hasBlocked(1) }, "the band-1 job waits")
	if _, err := f.d.Enqueue(ctx, bandJob{N: 0}, job.WithChannel("root.slow"), job.WithPriority(0)); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() bool { return f.cs.hasBlocked(0) }, "the band-0 job waits")
	// The throttle has more than 1 s left (the jobs above took a few
	// milliseconds): the mark must be up well before it ends.
	testenv.Eventually(t, time.Second, func() bool {
		n, _ := f.p2.rdb.Exists(ctx, f.p2.wantsKey("root.slow", 0)).Result()
		return n == 1
	}, "the band-0 job's mark")
	f.watch(t, 15*time.Second)
}
