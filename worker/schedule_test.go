package worker_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/job"
	"github.com/connector-go/connector/worker"
	"github.com/nats-io/nats.go/jetstream"
)

type Tick struct {
	Tag string `msgpack:"tag"`
}

func (Tick) JobName() string { return "test.tick" }

// runLog records which jobs ran and when.
type runLog struct {
	mu   sync.Mutex
	runs map[string][]time.Time // tag -> starts
	ids  map[string]int         // job id -> runs
}

func newRunLog() *runLog { return &runLog{runs: map[string][]time.Time{}, ids: map[string]int{}} }

func (l *runLog) handler(ctx context.Context, j *job.Job[Tick]) (string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.runs[j.Args.Tag] = append(l.runs[j.Args.Tag], time.Now())
	l.ids[j.ID]++
	return "", nil
}

func (l *runLog) count(tag string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.runs[tag])
}

func (l *runLog) first(tag string) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.runs[tag][0]
}

func TestETAStartsOnTimeAndNotBefore(t *testing.T) {
	e := newEnv(t)
	log := newRunLog()
	reg := worker.NewRegistry()
	worker.MustRegister(reg, log.handler)
	e.start(reg)
	ctx := context.Background()
	eta := time.Now().Add(1500 * time.Millisecond)
	id, err := e.d.Enqueue(ctx, Tick{Tag: "eta"}, job.WithETA(eta))
	if err != nil {
		t.Fatal(err)
	}
	if rec, err := e.d.Job(ctx, id); err != nil || rec.State != job.StateWaiting || !rec.ETA.Equal(eta.Truncate(time.Millisecond)) {
		t.Fatalf("record before ETA = %+v, %v", rec, err)
	}
	// Delay form, shorter: runs first.
	enqAt := time.Now()
	if _, err := e.d.Enqueue(ctx, Tick{Tag: "delay"}, job.WithDelay(500*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	e.waitState(id, job.StateDone, 10*time.Second)
	started := log.first("eta")
	if started.Before(eta) {
		t.Fatalf("started %s before its ETA", eta.Sub(started))
	}
	if late := started.Sub(eta); late > time.Second {
		t.Fatalf("started %s after its ETA", late)
	}
	if log.first("delay").After(started) {
		t.Fatalf("the shorter delay ran after the ETA job: eta due %s ran %s; delay ran %s (enqueued at %s)", eta, started, log.first("delay"), enqAt)
	}
}

func TestIdentityKeyUnderConcurrency(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	const n = 100
	ids := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			ids[i], errs[i] = e.d.Enqueue(ctx, Tick{Tag: "same"}, job.WithIdentityKey("import-product-42"))
		}(i)
	}
	wg.Wait()
	for i := range ids {
		if errs[i] != nil || ids[i] != ids[0] {
			t.Fatalf("enqueue %d = %q, %v (first %q)", i, ids[i], errs[i], ids[0])
		}
	}
	s, err := e.js.Stream(ctx, e.names().JobsStream())
	if err != nil {
		t.Fatal(err)
	}
	info, _ := s.Info(ctx)
	if info.State.Msgs != 1 {
		t.Fatalf("jobs in stream = %d, want 1", info.State.Msgs)
	}
	// Once the job started, the key is free again.
	log := newRunLog()
	reg := worker.NewRegistry()
	worker.MustRegister(reg, log.handler)
	e.start(reg)
	e.waitState(ids[0], job.StateDone, 10*time.Second)
	again, err := e.d.Enqueue(ctx, Tick{Tag: "same"}, job.WithIdentityKey("import-product-42"))
	if err != nil || again == ids[0] {
		t.Fatalf("after start: %q, %v", again, err)
	}
	e.waitState(again, job.StateDone, 10*time.Second)
}

func TestIdentityExactAndFreedWhenDeadOrCancelled(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	a1, _ := e.d.Enqueue(ctx, Tick{Tag: "a"}, job.WithIdentityExact(), job.WithDelay(time.Hour))
	a2, _ := e.d.Enqueue(ctx, Tick{Tag: "a"}, job.WithIdentityExact(), job.WithDelay(time.Hour))
	b, _ := e.d.Enqueue(ctx, Tick{Tag: "b"}, job.WithIdentityExact(), job.WithDelay(time.Hour))
	if a1 != a2 || a1 == b {
		t.Fatalf("identity exact: %s %s %s", a1, a2, b)
	}
	if err := e.d.Cancel(ctx, a1); err != nil {
		t.Fatal(err)
	}
	a3, _ := e.d.Enqueue(ctx, Tick{Tag: "a"}, job.WithIdentityExact(), job.WithDelay(time.Hour))
	if a3 == a1 {
		t.Fatal("cancelled job kept its identity key")
	}
	// Dead frees it too.
	reg := worker.NewRegistry()
	worker.MustRegister(reg, func(ctx context.Context, j *job.Job[Flaky]) (string, error) {
		return "", errors.New("no")
	})
	e.start(reg)
	d1, _ := e.d.Enqueue(ctx, Flaky{Mode: "x"}, job.WithIdentityKey("k-dead"))
	e.waitState(d1, job.StateDead, 10*time.Second)
	d2, _ := e.d.Enqueue(ctx, Flaky{Mode: "x"}, job.WithIdentityKey("k-dead"))
	if d2 == d1 {
		t.Fatal("dead job kept its identity key")
	}
}

func TestCancelledJobsNeverStart(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	// Queued while no worker runs, and waiting for an ETA.
	queued, _ := e.d.Enqueue(ctx, Tick{Tag: "queued"})
	waiting, _ := e.d.Enqueue(ctx, Tick{Tag: "waiting"}, job.WithDelay(800*time.Millisecond))
	for _, id := range []string{queued, waiting} {
		if err := e.d.Cancel(ctx, id); err != nil {
			t.Fatalf("cancel %s: %v", id, err)
		}
		if rec, _ := e.d.Job(ctx, id); rec.State != job.StateCancelled {
			t.Fatalf("state %s", rec.State)
		}
	}
	log := newRunLog()
	reg := worker.NewRegistry()
	worker.MustRegister(reg, log.handler)
	e.start(reg)
	// A marker due after the cancelled ETA: once it ran, the cancelled
	// jobs had every chance to.
	marker, _ := e.d.Enqueue(ctx, Tick{Tag: "marker"}, job.WithDelay(1500*time.Millisecond))
	e.waitState(marker, job.StateDone, 10*time.Second)
	if log.count("queued")+log.count("waiting") != 0 {
		t.Fatalf("cancelled jobs ran: %v", log.runs)
	}
	done, _ := e.d.Enqueue(ctx, Tick{Tag: "x"})
	e.waitState(done, job.StateDone, 10*time.Second)
	if err := e.d.Cancel(ctx, done); !errors.Is(err, job.ErrStarted) {
		t.Fatalf("cancel after done = %v", err)
	}
}

// A periodic schedule fires once per tick for the whole fleet: two workers,
// registered twice, still one job per tick, each a distinct job.
func TestPeriodicJobOncePerTickAcrossWorkers(t *testing.T) {
	e := newEnv(t)
	log := newRunLog()
	for i := 0; i < 2; i++ {
		reg := worker.NewRegistry()
		worker.MustRegister(reg, log.handler)
		e.start(reg)
	}
	ctx := context.Background()
	var wg sync.WaitGroup
	for i := 0; i < 3; i++ { // every worker registers it at start-up
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := e.d.Schedule(ctx, "tick", "@every 1s", Tick{Tag: "tick"}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	s, err := e.js.Stream(ctx, e.names().JobsStream())
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(e.names().PeriodicSubject("tick")))
	if err != nil || info.State.Subjects[e.names().PeriodicSubject("tick")] != 1 {
		t.Fatalf("schedule messages: %v, %v", info.State.Subjects, err)
	}
	testenv.Eventually(t, 15*time.Second, func() bool { return log.count("tick") >= 4 }, "4 ticks")
	if err := e.d.Unschedule(ctx, "tick"); err != nil {
		t.Fatal(err)
	}
	log.mu.Lock()
	defer log.mu.Unlock()
	starts := log.runs["tick"]
	// Ticks fall on whole seconds, so the first gap may be short; a
	// schedule registered twice would fire in pairs a few ms apart.
	for i := 1; i < len(starts); i++ {
		if gap := starts[i].Sub(starts[i-1]); gap < 150*time.Millisecond {
			t.Fatalf("two runs %s apart: the tick fired twice (%v) ids %v", gap, fmt.Sprint(starts), log.ids)
		}
	}
	for id, n := range log.ids {
		if n != 1 {
			t.Fatalf("job %s ran %d times", id, n)
		}
	}
}

// A periodic firing handed back unrun keeps its attempts, as any job: a
// no-count retry in place (a sequential channel) of a firing with
// MaxRetries(1) runs again as attempt 1, not as a lost attempt 2.
func TestPeriodicFiringHandBacksDoNotCount(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	var mu sync.Mutex
	runs := map[string][]int{} // job id -> attempts of its runs
	reg := worker.NewRegistry()
	worker.MustRegister(reg, func(ctx context.Context, j *job.Job[Tick]) (string, error) {
		mu.Lock()
		runs[j.ID] = append(runs[j.ID], j.Attempt)
		n := len(runs[j.ID])
		mu.Unlock()
		if n == 1 {
			return "", job.RetryNoCount(errors.New("backend busy"), 50*time.Millisecond)
		}
		return "ok", nil
	})
	e.start(reg, worker.WithChannels("root.seq:1:sequential"))
	if err := e.d.Schedule(ctx, "tick", "@every 1s", Tick{Tag: "tick"}, job.WithChannel("root.seq"), job.WithMaxRetries(1)); err != nil {
		t.Fatal(err)
	}
	first := firstRun(t, &mu, runs)
	if err := e.d.Unschedule(ctx, "tick"); err != nil {
		t.Fatal(err)
	}
	rec := e.waitState(first, job.StateDone, 10*time.Second)
	mu.Lock()
	defer mu.Unlock()
	if got := fmt.Sprint(runs[first]); got != "[1 1]" || rec.Attempts != 1 {
		t.Fatalf("firing %s ran at attempts %s (record: %d attempts, %s)", first, got, rec.Attempts, rec.State)
	}
}

// firstRun waits for a job of runs (job id -> its runs, under mu) and
// returns its id.
func firstRun[V any](t *testing.T, mu *sync.Mutex, runs map[string]V) string {
	t.Helper()
	var first string
	testenv.Eventually(t, 10*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		for id := range runs {
			first = id
			return true
		}
		return false
	}, "a firing ran")
	return first
}
