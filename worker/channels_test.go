package worker_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/job"
	"github.com/connector-go/connector/worker"
	"github.com/connector-go/connector/worker/internal/testjobs"
)

func (e *env) probeInt(key, what string) int {
	v, _ := e.rdb.Get(context.Background(), e.prefix+":probe:"+key+":"+what).Int()
	return v
}

func (e *env) probeList(key, what string) []string {
	v, _ := e.rdb.LRange(context.Background(), e.prefix+":probe:"+key+":"+what, 0, -1).Result()
	return v
}

// With three worker processes and root.magento:2, never more than two
// magento jobs run at once, fleet-wide; children count against parents and
// an unconfigured channel runs under its nearest configured ancestor.
func TestChannelCapacityIsFleetWide(t *testing.T) {
	e := newEnv(t)
	chans := "TW_CHANNELS=root:10,root.magento:2,root.magento.orders:5"
	for i := 0; i < 3; i++ {
		e.startProc(fmt.Sprintf("w%d", i), 5*time.Second, chans)
	}
	ctx := context.Background()
	const n = 18
	for i := 0; i < n; i++ {
		ch := []string{"root.magento", "root.magento.orders", "root.magento.unconfigured"}[i%3]
		if _, err := e.d.Enqueue(ctx, testjobs.Probe{Key: "magento", N: i, For: 150 * time.Millisecond}, job.WithChannel(ch)); err != nil {
			t.Fatal(err)
		}
	}
	testenv.Eventually(t, 60*time.Second, func() bool { return len(e.probeList("magento", "done")) == n }, "all probes done")
	if max := e.probeInt("magento", "max"); max != 2 {
		t.Fatalf("max concurrent magento jobs = %d, want 2 (capacity, reached)", max)
	}
}

// Without a limit, the same fleet runs them in parallel (the test above is
// not passing by accident).
func TestUnlimitedChannelRunsInParallel(t *testing.T) {
	e := newEnv(t)
	for i := 0; i < 2; i++ {
		e.startProc(fmt.Sprintf("w%d", i), 5*time.Second)
	}
	ctx := context.Background()
	for i := 0; i < 8; i++ {
		if _, err := e.d.Enqueue(ctx, testjobs.Probe{Key: "free", N: i, For: 500 * time.Millisecond}, job.WithChannel("root.free")); err != nil {
			t.Fatal(err)
		}
	}
	testenv.Eventually(t, 30*time.Second, func() bool { return len(e.probeList("free", "done")) == 8 }, "all probes done")
	if max := e.probeInt("free", "max"); max < 3 {
		t.Fatalf("max concurrent = %d, want parallelism", max)
	}
}

// A sequential channel runs one job at a time in enqueue order, across the
// fleet, and waits (does not skip) while its head job retries.
func TestSequentialChannelKeepsOrderAndWaitsForRetries(t *testing.T) {
	e := newEnv(t)
	chans := "TW_CHANNELS=root.seq:1:sequential"
	for i := 0; i < 2; i++ {
		e.startProc(fmt.Sprintf("w%d", i), 5*time.Second, chans)
	}
	ctx := context.Background()
	const n = 8
	for i := 0; i < n; i++ {
		fails := 0
		if i == 3 {
			fails = 2 // the head job retries twice: the others must wait
		}
		if _, err := e.d.Enqueue(ctx, testjobs.Probe{Key: "seq", N: i, For: 30 * time.Millisecond, Fails: fails},
			job.WithChannel("root.seq"), job.WithPriority(i%3*10)); err != nil {
			t.Fatal(err)
		}
	}
	testenv.Eventually(t, 60*time.Second, func() bool { return len(e.probeList("seq", "done")) == n }, "all done")
	if got := strings.Join(e.probeList("seq", "done"), ","); got != "0,1,2,3,4,5,6,7" {
		t.Fatalf("completion order %s", got)
	}
	var order []string
	for _, s := range e.probeList("seq", "starts") {
		order = append(order, strings.Split(s, "@")[0])
	}
	if got := strings.Join(order, ","); got != "0,1,2,3,3,3,4,5,6,7" {
		t.Fatalf("start order %s (job 3 runs three times, nothing overtakes it)", got)
	}
	if max := e.probeInt("seq", "max"); max != 1 {
		t.Fatalf("max concurrent = %d", max)
	}
}

// A job of better priority enqueued behind a backlog of worse ones starts
// among the next few.
func TestPriorityOvertakesBacklog(t *testing.T) {
	e := newEnv(t)
	reg := worker.NewRegistry()
	testjobs.RegisterProbe(reg, e.rdb, e.prefix)
	ctx := context.Background()
	const backlog = 1000
	items := make([]interface{ JobName() string }, 0)
	_ = items
	for i := 0; i < backlog; i++ {
		if _, err := e.d.Enqueue(ctx, testjobs.Probe{Key: "prio", N: i, For: 2 * time.Millisecond},
			job.WithChannel("root.bulk"), job.WithPriority(20)); err != nil {
			t.Fatal(err)
		}
	}
	e.start(reg, worker.WithChannels("root.bulk:2"))
	testenv.Eventually(t, 20*time.Second, func() bool { return len(e.probeList("prio", "starts")) >= 20 }, "backlog started")
	if _, err := e.d.Enqueue(ctx, testjobs.Probe{Key: "prio", N: -1, For: time.Millisecond},
		job.WithChannel("root.bulk"), job.WithPriority(0)); err != nil {
		t.Fatal(err)
	}
	before := len(e.probeList("prio", "starts"))
	testenv.Eventually(t, 20*time.Second, func() bool {
		for _, s := range e.probeList("prio", "starts") {
			if strings.HasPrefix(s, "-1@") {
				return true
			}
		}
		return false
	}, "priority job started")
	var at int
	for i, s := range e.probeList("prio", "starts") {
		if strings.HasPrefix(s, "-1@") {
			at = i
		}
	}
	if after := at - before; after > 10 {
		t.Fatalf("priority-0 job started %d starts after it was enqueued (backlog %d)", after, backlog)
	}
}

// throttle=N: at most one start per N seconds in the channel, fleet-wide.
func TestThrottle(t *testing.T) {
	e := newEnv(t)
	chans := "TW_CHANNELS=root.slow:5:throttle=0.4"
	for i := 0; i < 2; i++ {
		e.startProc(fmt.Sprintf("w%d", i), 5*time.Second, chans)
	}
	ctx := context.Background()
	for i := 0; i < 5; i++ {
		if _, err := e.d.Enqueue(ctx, testjobs.Probe{Key: "thr", N: i}, job.WithChannel("root.slow")); err != nil {
			t.Fatal(err)
		}
	}
	testenv.Eventually(t, 30*time.Second, func() bool { return len(e.probeList("thr", "done")) == 5 }, "done")
	var times []int64
	for _, s := range e.probeList("thr", "starts") {
		ms, _ := strconv.ParseInt(strings.Split(s, "@")[1], 10, 64)
		times = append(times, ms)
	}
	for i := 1; i < len(times); i++ {
		if gap := times[i] - times[i-1]; gap < 380 {
			t.Fatalf("starts %d ms apart, throttle is 400 ms: %v", gap, times)
		}
	}
}

// A worker killed while holding a channel's only slot does not block the
// channel: the slot's lease expires with the job's, and another worker runs
// the job and the ones behind it.
func TestKilledWorkerFreesItsChannelSlot(t *testing.T) {
	e := newEnv(t)
	chans := "TW_CHANNELS=root.one:1"
	victim := e.startProc("victim", 2*time.Second, chans)
	ctx := context.Background()
	first, _ := e.d.Enqueue(ctx, testjobs.Slow{Key: "one", For: 3 * time.Second}, job.WithChannel("root.one"))
	testenv.Eventually(t, 20*time.Second, func() bool { return len(e.list("started:one")) == 1 }, "started")
	second, _ := e.d.Enqueue(ctx, testjobs.Probe{Key: "after", N: 1}, job.WithChannel("root.one"))
	_ = victim.Process.Kill()
	_, _ = victim.Process.Wait()
	e.startProc("survivor", 2*time.Second, chans)
	e.waitState(first, job.StateDone, 30*time.Second)
	e.waitState(second, job.StateDone, 30*time.Second)
}

// A job that runs longer than the slot lease keeps its channel slot: the
// heartbeat renews the slots its jobs hold, while other jobs of the channel
// are received, tried and parked. Two workers in this process (so -race
// sees the heartbeat and the runners of both); capacity 1 must hold.
func TestLongJobKeepsItsChannelSlot(t *testing.T) {
	e := newEnv(t)
	for i := 0; i < 2; i++ {
		reg := worker.NewRegistry()
		testjobs.RegisterProbe(reg, e.rdb, e.prefix)
		e.start(reg, worker.WithAckWait(time.Second), worker.WithConcurrency(4), worker.WithChannels("root.lim:1"))
	}
	ctx := context.Background()
	const n = 4
	for i := 0; i < n; i++ {
		if _, err := e.d.Enqueue(ctx, testjobs.Probe{Key: "lim", N: i, For: 1600 * time.Millisecond}, job.WithChannel("root.lim")); err != nil {
			t.Fatal(err)
		}
	}
	testenv.Eventually(t, 60*time.Second, func() bool { return len(e.probeList("lim", "done")) == n }, "all probes done")
	if max := e.probeInt("lim", "max"); max != 1 {
		t.Fatalf("max concurrent jobs on a channel of capacity 1 = %d, want 1 (slot lease renewed)", max)
	}
}

// A running job's slot lease that expired (Redis unreachable for longer
// than the lease, and another process pruned it) is taken again at its
// next renewal: the channel counts every job that runs, and starts no
// other until it is back under its capacity.
func TestExpiredSlotLeaseIsTakenAgain(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	release := make(chan struct{})
	s := longSteps(release)
	e.start(s.registry(), worker.WithChannels("root.one:1"), worker.WithAckWait(3*time.Second))
	if _, err := e.d.Enqueue(ctx, Step{Key: "long"}, job.WithChannel("root.one")); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() bool { return s.count("long") == 1 }, "long job running")
	tag := "{" + e.prefix + ":channels}"
	slots := tag + ":slots:root.one"
	held, err := e.rdb.ZRange(ctx, slots, 0, -1).Result()
	if err != nil || len(held) != 1 {
		t.Fatalf("slots of root.one: %v, %v", held, err)
	}
	// What a process does with a lease it finds expired.
	if err := e.rdb.ZRem(ctx, slots, held[0]).Err(); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() bool {
		return e.rdb.ZScore(ctx, slots, held[0]).Err() == nil
	}, "the lost lease taken again at the next renewal")
	next, _ := e.d.Enqueue(ctx, Step{Key: "next"}, job.WithChannel("root.one"))
	testenv.Eventually(t, 10*time.Second, func() bool {
		return e.rdb.ZCard(ctx, tag+":waiting:root.one:1").Val() == 1
	}, "the next job refused a slot while the long one runs")
	if n := s.count("next"); n != 0 {
		t.Fatalf("a job started beside the long one on a channel of capacity 1 (%s)", s.seen())
	}
	close(release)
	e.waitState(next, job.StateDone, 10*time.Second)
}
