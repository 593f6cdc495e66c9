package worker

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/connector-go/connector/dispatcher"
	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/job"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
)

// scriptHook lets a test act on the slot scripts and pipelines a worker
// sends to the (real) Redis: onCmd runs before a command, after after it
// (and may change its answer), onPipe before a pipeline.
type scriptHook struct {
	onCmd  func(ctx context.Context, cmd redis.Cmder)
	after  func(ctx context.Context, cmd redis.Cmder)
	onPipe func(ctx context.Context, cmds []redis.Cmder)
}

func (h *scriptHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *scriptHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if h.onCmd != nil {
			h.onCmd(ctx, cmd)
		}
		err := next(ctx, cmd)
		if h.after != nil {
			h.after(ctx, cmd)
			err = cmd.Err()
		}
		return err
	}
}

func (h *scriptHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if h.onPipe != nil {
			h.onPipe(ctx, cmds)
		}
		return next(ctx, cmds)
	}
}

// scriptCall reports whether cmd runs script s (whose source contains
// marker), and its keys.
func scriptCall(cmd redis.Cmder, s *redis.Script, marker string) ([]string, bool) {
	args := cmd.Args()
	if len(args) < 3 {
		return nil, false
	}
	name, _ := args[0].(string)
	if !strings.EqualFold(name, "evalsha") && !strings.EqualFold(name, "eval") {
		return nil, false
	}
	if body, _ := args[1].(string); body != s.Hash() && !strings.Contains(body, marker) {
		return nil, false
	}
	var n int
	switch v := args[2].(type) {
	case int:
		n = v
	case int64:
		n = int(v)
	}
	var keys []string
	for i := 0; i < n && 3+i < len(args); i++ {
		k, _ := args[3+i].(string)
		keys = append(keys, k)
	}
	return keys, true
}

// A runner whose slot attempt is still in flight when the worker stops
// (Redis slow to answer) and is refused must hand its job back, like the
// other blocked jobs: the blocked lists were drained already, and a job
// put there now is never handed back. Its message stays taken until its
// lease ends, and its redelivery counts as an attempt.
func TestJobBlockedAfterShutdownDrainIsHandedBack(t *testing.T) {
	_, _, js := testenv.JetStream(t)
	rdb, prefix := testenv.Redis(t)

	held := make(chan struct{})    // the band-0 job's slot attempt is held
	drained := make(chan struct{}) // the blocked jobs were handed back
	var heldOnce, drainedOnce sync.Once
	hook := &scriptHook{
		onCmd: func(ctx context.Context, cmd redis.Cmder) {
			keys, ok := scriptCall(cmd, acquireScript, "regFail")
			if !ok || !strings.Contains(strings.Join(keys, " "), ":waiting:root.lim:0") {
				return
			}
			first := false
			heldOnce.Do(func() { first = true })
			if !first {
				return
			}
			close(held)
			select {
			case <-drained:
			case <-time.After(20 * time.Second):
			}
		},
		onPipe: func(ctx context.Context, cmds []redis.Cmder) {
			for _, c := range cmds {
				if a := c.Args(); len(a) > 1 && strings.EqualFold(a[0].(string), "incr") && strings.Contains(a[1].(string), ":handback:") {
					drainedOnce.Do(func() { close(drained) })
				}
			}
		},
	}
	rdb.AddHook(hook)

	reg := NewRegistry()
	ran := make(chan int, 4)
	MustRegister(reg, func(ctx context.Context, j *job.Job[bandJob]) (string, error) {
		ran <- j.Args.N
		return "", nil
	})
	// Another process holds the channel's only slot before p1 runs.
	w, d, stop, wait := runLimited(t, js, rdb, prefix, reg)
	cs := w.states["root.lim"]
	p2 := &slots{rdb: rdb, tag: w.slots.tag, lease: time.Minute, me: "p2"}
	ctx := context.Background()
	if ok, _, err := p2.acquire(ctx, cs, 1, "p2-slot", 0, place{}); err != nil || !ok {
		t.Fatalf("p2's slot: %v, %v", ok, err)
	}

	// A band-1 job waits for the slot in the blocked list.
	if _, err := d.Enqueue(ctx, bandJob{N: 1}, job.WithChannel("root.lim"), job.WithPriority(10)); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() bool { return cs.hasBlocked(1) }, "the band-1 job waits")
	// A band-0 job's runner tries for the slot; Redis answers late.
	if _, err := d.Enqueue(ctx, bandJob{N: 0}, job.WithChannel("root.lim"), job.WithPriority(0)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-held:
	case <-time.After(10 * time.Second):
		t.Fatal("the band-0 job's slot attempt never came")
	}
	// The worker stops meanwhile: it hands the blocked jobs back, then the
	// attempt is answered (refused).
	stop()
	if err := wait(); err != nil {
		t.Fatal(err)
	}
	select {
	case n := <-ran:
		t.Fatalf("job %d ran", n)
	default:
	}
	// Every job the worker held is back in its queue at once: another
	// worker gets it now, not after the lease.
	for band := 0; band <= 1; band++ {
		cons, err := js.Consumer(ctx, w.names.JobsStream(), w.names.JobsConsumer("root.lim", band))
		if err != nil {
			t.Fatal(err)
		}
		batch, err := cons.Fetch(1, jetstream.FetchMaxWait(3*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			_ = m.Ack()
		}
		if got != 1 {
			t.Errorf("band %d: the job is not back in its queue after the worker stopped: not handed back, it waits out its lease (%s) and its redelivery counts as an attempt",
				band, w.cfg.ackWait)
		}
	}
}

// lostAnswer is one worker on root.lim:1 whose slot attempts for band-1
// jobs run in Redis but whose answers are lost (a Redis too slow to answer
// in time), and a band-1 job id that waits in its blocked list while a
// slot under its token is taken. slots counts the channel's slots taken.
type lostAnswer struct {
	w     *Worker
	d     *dispatcher.Dispatcher
	id    string
	stop  context.CancelFunc
	wait  func() error
	slots func() int64
}

func newLostAnswer(t *testing.T) *lostAnswer {
	t.Helper()
	_, _, js := testenv.JetStream(t)
	rdb, prefix := testenv.Redis(t)
	rdb.AddHook(&scriptHook{after: func(ctx context.Context, cmd redis.Cmder) {
		keys, ok := scriptCall(cmd, acquireScript, "regFail")
		if ok && strings.Contains(strings.Join(keys, " "), ":waiting:root.lim:1") && cmd.Err() == nil {
			cmd.SetErr(context.DeadlineExceeded)
		}
	}})
	reg := NewRegistry()
	MustRegister(reg, func(ctx context.Context, j *job.Job[bandJob]) (string, error) {
		t.Errorf("job %d ran", j.Args.N)
		return "", nil
	})
	f := &lostAnswer{}
	f.w, f.d, f.stop, f.wait = runLimited(t, js, rdb, prefix, reg)
	ctx := context.Background()
	key := f.w.slots.slotsKey("root.lim")
	f.slots = func() int64 { n, _ := rdb.ZCard(ctx, key).Result(); return n }
	var err error
	if f.id, err = f.d.Enqueue(ctx, bandJob{N: 1}, job.WithChannel("root.lim"), job.WithPriority(10)); err != nil {
		t.Fatal(err)
	}
	cs := f.w.states["root.lim"]
	testenv.Eventually(t, 10*time.Second, func() bool { return cs.hasBlocked(1) && f.slots() == 1 },
		"the job waits, a slot taken under its token")
	return f
}

// A job whose slot attempt took a slot in Redis but lost its answer holds
// that slot without knowing it. When it leaves its blocked list without
// starting (cancelled), the slot must go with it: otherwise the channel
// runs one job short of its capacity (here: none at all) until the lease
// ends.
func TestCancelledBlockedJobLeavesNoSlotBehind(t *testing.T) {
	f := newLostAnswer(t)
	_ = f.d.Cancel(context.Background(), f.id)
	cs := f.w.states["root.lim"]
	testenv.Eventually(t, 10*time.Second, func() bool { return !cs.hasBlocked(1) }, "the cancelled job leaves its blocked list")
	testenv.Eventually(t, 5*time.Second, func() bool { return f.slots() == 0 },
		"the slot taken under the cancelled job's token is free again (lease: %s)", f.w.cfg.ackWait)
}

// The same at shutdown: the blocked jobs are handed back, and the slots
// taken under their tokens go too.
func TestHandedBackBlockedJobLeavesNoSlotBehind(t *testing.T) {
	f := newLostAnswer(t)
	f.stop()
	_ = f.wait()
	testenv.Eventually(t, 5*time.Second, func() bool { return f.slots() == 0 },
		"the slot taken under the handed-back job's token is free again (lease: %s)", f.w.cfg.ackWait)
}

// runLimited runs worker p1 on channel root.lim:1 (memory storage) with
// reg, and makes a dispatcher. stop stops the worker; wait waits for its
// Run to return (30 s at most) and gives its error.
func runLimited(t *testing.T, js jetstream.JetStream, rdb *redis.Client, prefix string, reg *Registry) (w *Worker, d *dispatcher.Dispatcher, stop context.CancelFunc, wait func() error) {
	t.Helper()
	w, err := New(js, reg, WithPrefix(prefix), WithRedis(rdb), WithChannels("root.lim:1"), WithMemoryStorage(), WithName("p1"))
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Setup(context.Background()); err != nil {
		t.Fatal(err)
	}
	if d, err = dispatcher.New(js, dispatcher.WithPrefix(prefix), dispatcher.WithRedis(rdb)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close(context.Background()) })
	rctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	var runErr error
	go func() { runErr = w.Run(rctx); close(done) }()
	wait = func() error {
		t.Helper()
		select {
		case <-done:
			return runErr
		case <-time.After(30 * time.Second):
			t.Fatal("worker did not stop")
			return nil
		}
	}
	t.Cleanup(func() { stop(); <-done })
	return w, d, stop, wait
}
