package worker_test

// Multi-process tests of the worker: periodic jobs across a restart,
// identity keys under concurrency from several producer processes, and
// priority across worker processes. Worker and producer processes are
// worker/internal/testworker (startProc).

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/connector-go/connector/dispatcher"
	"github.com/connector-go/connector/internal/wire"
	"github.com/connector-go/connector/job"
	"github.com/connector-go/connector/worker/internal/testjobs"
	"github.com/nats-io/nats.go/jetstream"
)

// waitUntil polls cond until it holds, failing the test after timeout
// with cond's last description of what it saw.
func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, seen := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s; last seen: %s", timeout, what, seen)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitExit waits for a process started by startProc to exit.
func waitExit(t *testing.T, cmd *exec.Cmd, timeout time.Duration) error {
	t.Helper()
	errc := make(chan error, 1)
	go func() { errc <- cmd.Wait() }()
	select {
	case err := <-errc:
		return err
	case <-time.After(timeout):
		t.Fatalf("process %d did not exit within %s", cmd.Process.Pid, timeout)
		return nil
	}
}

// A periodic schedule keeps firing while the only worker process is down;
// after a new process starts, every firing of the downtime runs, each
// exactly once, and so does every other firing: the distinct tick jobs
// equal the firings, none ran twice.
func TestPeriodicTicksDuringWorkerDowntimeRunOnceAfterRestart(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	names := e.names()
	before := e.startProc("before", 5*time.Second)
	if err := e.d.Schedule(ctx, "beat", "@every 1s", testjobs.Stamp{Key: "beat"}); err != nil {
		t.Fatal(err)
	}
	s, err := e.js.Stream(ctx, names.JobsStream())
	if err != nil {
		t.Fatal(err)
	}
	schedMsg, err := s.GetLastMsgForSubject(ctx, names.PeriodicSubject("beat"))
	if err != nil {
		t.Fatal(err)
	}
	s0 := schedMsg.Sequence
	target := schedMsg.Header.Get(wire.HeaderSchTarget)
	if target == "" {
		t.Fatalf("schedule without a target: %v", schedMsg.Header)
	}
	// Every message published to the stream after the schedule is one of
	// its firings (nothing else is enqueued here; Stamp never retries).
	lastSeq := func() uint64 {
		info, err := s.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.State.LastSeq
	}
	stamps := func() (ids map[string]int, by map[string]string, order []string) {
		ids, by = map[string]int{}, map[string]string{}
		for _, v := range e.list("stamp:beat") {
			id, w, _ := strings.Cut(v, "@")
			ids[id]++
			by[id] = w
			order = append(order, id)
		}
		return ids, by, order
	}
	// tickID is the job id a firing gets: "periodic-beat-t<unix time of
	// the next tick>" (the worker names a firing by its Nats-Schedule-Next).
	tickID := func(m *jetstream.RawStreamMsg) string {
		next, err := time.Parse(time.RFC3339Nano, m.Header.Get("Nats-Schedule-Next"))
		if err != nil {
			t.Fatalf("firing %d without a valid Nats-Schedule-Next: %v", m.Sequence, m.Header)
		}
		return "periodic-beat-t" + strconv.FormatInt(next.Unix(), 10)
	}
	// queued lists the firings waiting in the stream.
	queued := func() []*jetstream.RawStreamMsg {
		var out []*jetstream.RawStreamMsg
		last := lastSeq()
		for seq := s0 + 1; seq <= last; seq++ {
			m, err := s.GetMsg(ctx, seq)
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				continue // acknowledged: ran already
			}
			if err != nil {
				t.Fatal(err)
			}
			if m.Subject != target {
				t.Fatalf("message %d on %s in the jobs stream: the firing count below assumes only firings are published", seq, m.Subject)
			}
			out = append(out, m)
		}
		return out
	}

	waitUntil(t, 20*time.Second, "2 ticks run by the first worker", func() (bool, string) {
		ids, _, _ := stamps()
		return len(ids) >= 2, fmt.Sprint(ids)
	})
	if err := before.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := waitExit(t, before, 30*time.Second); err != nil {
		t.Fatalf("first worker exit: %v", err)
	}
	stoppedAt := time.Now()
	ranBefore, _, _ := stamps()

	// ~3 s of downtime: three firings after the exit, waiting in the stream.
	var down []*jetstream.RawStreamMsg
	waitUntil(t, 20*time.Second, "3 firings while no worker runs", func() (bool, string) {
		down = queued()
		n := 0
		for _, m := range down {
			if m.Time.After(stoppedAt) {
				n++
			}
		}
		return n >= 3, fmt.Sprintf("%d queued firings, %d since the exit", len(down), n)
	})
	downIDs := map[string]bool{}
	for _, m := range down {
		id := tickID(m)
		if downIDs[id] {
			t.Fatalf("two queued firings name the same tick %s", id)
		}
		if ranBefore[id] > 0 {
			t.Fatalf("queued firing %s ran already before the restart", id)
		}
		downIDs[id] = true
	}

	e.startProc("after", 5*time.Second)
	// Workers register their schedules at start-up: the same one again is
	// a no-op, not a new schedule.
	if err := e.d.Schedule(ctx, "beat", "@every 1s", testjobs.Stamp{Key: "beat"}); err != nil {
		t.Fatal(err)
	}
	if m, err := s.GetLastMsgForSubject(ctx, names.PeriodicSubject("beat")); err != nil || m.Sequence != s0 {
		t.Fatalf("schedule re-registered: %v, %v (was sequence %d)", m, err, s0)
	}
	waitUntil(t, 30*time.Second, "the downtime ticks and two later ones run after the restart", func() (bool, string) {
		ids, _, _ := stamps()
		missing, later := 0, 0
		for id := range downIDs {
			if ids[id] == 0 {
				missing++
			}
		}
		for id := range ids {
			if !downIDs[id] && ranBefore[id] == 0 {
				later++
			}
		}
		return missing == 0 && later >= 2, fmt.Sprintf("%d downtime ticks missing, %d later ticks; runs %v", missing, later, ids)
	})
	if err := e.d.Unschedule(ctx, "beat"); err != nil {
		t.Fatal(err)
	}
	// Quiet: no firing left in the stream (so none can be delivered again)
	// and a run for every firing.
	waitUntil(t, 20*time.Second, "every firing run and acknowledged", func() (bool, string) {
		info, err := s.Info(ctx, jetstream.WithSubjectFilter(target))
		if err != nil {
			return false, err.Error()
		}
		_, _, order := stamps()
		firings := info.State.LastSeq - s0
		return info.State.Subjects[target] == 0 && uint64(len(order)) >= firings,
			fmt.Sprintf("%d firings, %d runs, %d queued", firings, len(order), info.State.Subjects[target])
	})

	firings := int(lastSeq() - s0)
	ids, by, order := stamps()
	idForm := regexp.MustCompile(`^periodic-beat-t[0-9]+$`)
	dups := map[string]int{}
	for id, n := range ids {
		if n != 1 {
			dups[id] = n
		}
		if !idForm.MatchString(id) {
			t.Errorf("tick job id %q is not periodic-beat-t<unix tick>", id)
		}
	}
	if len(dups) > 0 {
		t.Errorf("ticks run more than once: %v (runs in order: %v)", dups, order)
	}
	if len(ids) != firings {
		t.Errorf("%d distinct tick jobs for %d firings (runs %v)", len(ids), firings, order)
	}
	for id := range downIDs {
		if ids[id] != 1 || by[id] != "after" {
			t.Errorf("downtime tick %s: %d runs, by %q", id, ids[id], by[id])
		}
	}
	t.Logf("%d firings: %d before the stop, %d queued over the downtime, %d runs in all", firings, len(ranBefore), len(downIDs), len(order))
}

// Three producer processes, 30 goroutines each, enqueue the same identity
// key at once while no worker runs: one job exists, every enqueue returns
// its id, and it runs once.
func TestIdentityKeyAcrossProducerProcesses(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	const procs, each = 3, 30
	var cmds []*exec.Cmd
	for i := 0; i < procs; i++ {
		cmds = append(cmds, e.startProc(fmt.Sprintf("p%d", i), 5*time.Second,
			"TW_MODE=produce", "TW_PRODUCE_N="+strconv.Itoa(each), "TW_IDENTITY=import-product-42"))
	}
	waitUntil(t, 30*time.Second, "producers ready", func() (bool, string) {
		n, _ := e.rdb.Get(ctx, e.prefix+":produce:ready").Int()
		return n == procs, fmt.Sprintf("%d ready", n)
	})
	// One go for each: BLPOP releases them together.
	gos := make([]any, procs)
	for i := range gos {
		gos[i] = "go"
	}
	if err := e.rdb.RPush(ctx, e.prefix+":produce:go", gos...).Err(); err != nil {
		t.Fatal(err)
	}
	for i, cmd := range cmds {
		if err := waitExit(t, cmd, 30*time.Second); err != nil {
			t.Fatalf("producer p%d: %v", i, err)
		}
	}
	got := e.list("produce:ids")
	if len(got) != procs*each {
		t.Fatalf("%d enqueues answered, want %d: %v", len(got), procs*each, got)
	}
	ids := map[string][]string{}
	for _, v := range got {
		who, id, _ := strings.Cut(v, "=")
		ids[id] = append(ids[id], who)
	}
	if len(ids) != 1 {
		t.Fatalf("%d distinct job ids for one identity key: %v", len(ids), ids)
	}
	var id string
	for k := range ids {
		id = k
	}
	s, err := e.js.Stream(ctx, e.names().JobsStream())
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 1 {
		t.Fatalf("jobs in stream = %d, want 1", info.State.Msgs)
	}
	if rec, err := e.d.Job(ctx, id); err != nil || rec.State != job.StateEnqueued {
		t.Fatalf("record of %s = %+v, %v", id, rec, err)
	}
	// It is that job, and it runs once.
	e.startProc("w", 5*time.Second)
	e.waitState(id, job.StateDone, 20*time.Second)
	if done := e.probeList("identity", "done"); len(done) != 1 {
		t.Fatalf("runs of the identity job: %v", done)
	}
	t.Logf("%d enqueues from %d processes: one job %s", procs*each, procs, id)
}

// With two worker processes of concurrency 2 and a backlog of 200
// priority-20 jobs on one channel, a priority-0 job enqueued afterwards
// starts among the next 2*concurrency*processes+4 starts: with a channel
// capacity (the fleet-wide "wants" mark) and without one (local order).
func TestPriorityOvertakesBacklogAcrossProcesses(t *testing.T) {
	for _, tc := range []struct{ name, chans string }{
		{"capacity", "root.bulk:2"},
		{"unlimited", "root.bulk"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			ctx := context.Background()
			const procs, conc, backlog = 2, 2, 200
			bound := 2*conc*procs + 4
			workers := []string{"w0", "w1"}
			for _, w := range workers {
				e.startProc(w, 5*time.Second, "TW_CHANNELS="+tc.chans, "TW_CONCURRENCY="+strconv.Itoa(conc))
			}
			starts := e.orderedStarts
			bulk := []job.Option{job.WithChannel("root.bulk"), job.WithPriority(20)}
			// Warm-up: both processes pull from the backlog's consumer (so
			// the backlog is shared between them).
			e.warmUp("warm", bulk...)
			items := make([]dispatcher.Item, backlog)
			for i := range items {
				items[i] = dispatcher.Item{Args: testjobs.Ordered{Key: "bulk", N: i, For: 30 * time.Millisecond}, Options: bulk}
			}
			if _, err := e.d.EnqueueMany(ctx, items); err != nil {
				t.Fatal(err)
			}
			waitUntil(t, 30*time.Second, "20 backlog jobs started", func() (bool, string) {
				ns, _ := starts("bulk")
				return len(ns) >= 20, fmt.Sprint(len(ns), " starts")
			})
			// Several priority-0 jobs, one after the other: each lands on
			// whichever process pulls it, so both cases (the process holding
			// the slots, the other one) get their chance.
			const trials = 3
			var ns []int
			var by []string
			for k := 0; k < trials; k++ {
				n := -1 - k
				if _, err := e.d.Enqueue(ctx, testjobs.Ordered{Key: "bulk", N: n, For: time.Millisecond},
					job.WithChannel("root.bulk"), job.WithPriority(0)); err != nil {
					t.Fatal(err)
				}
				ns, _ = starts("bulk")
				enqueuedAt := len(ns)
				waitUntil(t, 30*time.Second, "the priority-0 job started", func() (bool, string) {
					ns, by = starts("bulk")
					return slices.Contains(ns, n), fmt.Sprint(len(ns), " starts")
				})
				at := slices.Index(ns, n)
				if after := at - enqueuedAt; after > bound {
					t.Fatalf("priority-0 job %d started %d starts after it was enqueued, want <= %d (start %d of a backlog of %d, on %s)",
						k, after, bound, at, backlog, by[at])
				}
				// Not vacuous: most of the backlog was still waiting.
				if at > backlog/2 {
					t.Fatalf("the backlog was mostly gone (%d started) when priority-0 job %d started", at, k)
				}
				t.Logf("priority-0 job %d: enqueued after %d starts, started as start %d (+%d, bound %d) on %s",
					k, enqueuedAt, at, at-enqueuedAt, bound, by[at])
			}
			first := map[string]int{}
			for i, w := range by {
				if _, ok := first[w]; !ok {
					first[w] = i
				}
			}
			t.Logf("first backlog start per process: %v", first)
		})
	}
}

// On a limited channel shared by several worker processes, jobs of one
// band start in stream order fleet-wide: the process whose job frees a slot
// does not take it for a younger job while another process holds an older
// one waiting (it did: each process retried its own blocked jobs at once
// while the others polled, so one process took most of the starts). Every
// start is at most a few places from its place in the order, and both
// processes start some.
func TestLimitedChannelStartsInOrderAcrossProcesses(t *testing.T) {
	e := newEnv(t)
	for _, w := range []string{"w0", "w1"} {
		e.startProc(w, 5*time.Second, "TW_CHANNELS=root.fair:1", "TW_CONCURRENCY=4")
	}
	opts := []job.Option{job.WithChannel("root.fair")}
	e.warmUp("warm", opts...) // both processes hold a pull on the channel's consumer
	e.startInOrder("fair", func(int) []job.Option { return opts })
}

// Sibling channels sharing their parent's capacity (root.shop.a and
// root.shop.b under root.shop:1) take the parent's slot in stream order
// across both channels and both processes, as the seed's parent channel
// runs its children's jobs from one queue. (Before, each channel's
// waiting jobs raced the other's: whichever process and channel tried
// first after a release won.)
func TestSiblingChannelsStartInOrderUnderSharedCapacity(t *testing.T) {
	e := newEnv(t)
	for _, w := range []string{"w0", "w1"} {
		e.startProc(w, 5*time.Second, "TW_CHANNELS=root.shop:1,root.shop.a,root.shop.b", "TW_CONCURRENCY=4")
	}
	a := []job.Option{job.WithChannel("root.shop.a")}
	b := []job.Option{job.WithChannel("root.shop.b")}
	e.warmUp("warm-a", a...)
	e.warmUp("warm-b", b...)
	e.startInOrder("shop", func(i int) []job.Option {
		if i%2 == 0 {
			return a
		}
		return b
	})
}

// startInOrder enqueues 40 Ordered jobs of key in one batch, job i with
// opts(i), on channels whose chain allows one job at a time, and checks
// that they start in enqueue order across the worker processes w0 and w1
// (within the slack of jobs not pulled yet), both processes taking part.
func (e *env) startInOrder(key string, opts func(i int) []job.Option) {
	t := e.t
	t.Helper()
	const n = 40
	items := make([]dispatcher.Item, n)
	for i := range items {
		items[i] = dispatcher.Item{Args: testjobs.Ordered{Key: key, N: i, For: 40 * time.Millisecond}, Options: opts(i)}
	}
	began := time.Now()
	if _, err := e.d.EnqueueMany(context.Background(), items); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 60*time.Second, "all jobs started", func() (bool, string) {
		ns, _ := e.orderedStarts(key)
		return len(ns) == n, fmt.Sprint(len(ns), " starts")
	})
	t.Logf("%d jobs of %s, one at a time, all started after %s", n, items[0].Args.(testjobs.Ordered).For, time.Since(began))
	ns, by := e.orderedStarts(key)
	t.Logf("starts: %v", ns)
	t.Logf("by: %v", by)
	// A job not yet pulled by either process may be overtaken by those
	// already held: each process holds at most capacity+1 jobs of a
	// channel (a process pulls again only once its waiting job started), so
	// a start is at most a few places late, and few are out of order. Out
	// of order counts the jobs that must move for the starts to be in
	// order (n less the longest run of starts in order, not necessarily
	// adjacent): one job that went ahead of seven is one out of order,
	// not seven; starts in a random order would have some 28 of 40.
	const bound, lateBound = 4, 6
	most := 0
	for i, x := range ns {
		most = max(most, i-x)
	}
	late := len(ns) - longestIncreasing(ns)
	t.Logf("%d jobs out of order; the latest %d places after its turn", late, most)
	for i, x := range ns {
		if l := i - x; l > bound {
			t.Fatalf("job %d started %d places after its turn (start %d, on %s), want <= %d: %v", x, l, i, by[i], bound, ns)
		}
	}
	if late > lateBound {
		t.Fatalf("%d jobs out of order, want <= %d: %v", late, lateBound, ns)
	}
	share := map[string]int{}
	for _, w := range by {
		share[w]++
	}
	// Both take part: each process's waiting jobs get slots. How many
	// jobs each holds depends on whose pulls the server fills first (on a
	// loaded machine one process can pull most of them), not on the slot
	// order checked above.
	if share["w0"] < n/20 || share["w1"] < n/20 {
		t.Fatalf("starts per process %v, want each at least %d", share, n/20)
	}
}

// longestIncreasing is the length of the longest increasing subsequence
// of xs (patience sorting).
func longestIncreasing(xs []int) int {
	var tails []int // tails[k]: the least last value of a run of k+1
	for _, x := range xs {
		k, _ := slices.BinarySearch(tails, x)
		if k == len(tails) {
			tails = append(tails, x)
		} else {
			tails[k] = x
		}
	}
	return len(tails)
}

// orderedStarts reads the starts recorded by testjobs.Ordered jobs of key:
// their N, and the worker that started each, in start order.
func (e *env) orderedStarts(key string) (ns []int, by []string) {
	for _, v := range e.list("ordered:" + key + ":starts") {
		n, w, _ := strings.Cut(v, "@")
		i, _ := strconv.Atoi(n)
		ns, by = append(ns, i), append(by, w)
	}
	return ns, by
}

// warmUp enqueues Ordered jobs of key with opts, one at a time, until both
// worker processes w0 and w1 have started one (both pull from the
// consumer).
func (e *env) warmUp(key string, opts ...job.Option) {
	e.t.Helper()
	ctx := context.Background()
	for i := 0; ; i++ {
		_, by := e.orderedStarts(key)
		if slices.Contains(by, "w0") && slices.Contains(by, "w1") {
			return
		}
		if i == 30 {
			e.t.Fatalf("warm-up jobs all ran on %v", by)
		}
		if _, err := e.d.Enqueue(ctx, testjobs.Ordered{Key: key, N: i}, opts...); err != nil {
			e.t.Fatal(err)
		}
		waitUntil(e.t, 20*time.Second, "warm-up job started", func() (bool, string) {
			ns, by := e.orderedStarts(key)
			return len(ns) == i+1, fmt.Sprint(ns, by)
		})
	}
}
