package worker_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/connector-go/connector/dispatcher"
	"github.com/connector-go/connector/internal/streams"
	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/internal/wire"
	"github.com/connector-go/connector/job"
	"github.com/connector-go/connector/worker"
	"github.com/connector-go/connector/worker/internal/testjobs"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
)

func probe(key string, n int, d time.Duration) dispatcher.Node {
	return dispatcher.Job(testjobs.Probe{Key: key, N: n, For: d})
}

func TestChainAndGroupOrder(t *testing.T) {
	e := newEnv(t)
	reg := worker.NewRegistry()
	testjobs.RegisterProbe(reg, e.rdb, e.prefix)
	e.start(reg)
	ctx := context.Background()
	// 1 -> (2 | 3) -> 4
	g := dispatcher.Chain(probe("g", 1, 50*time.Millisecond),
		dispatcher.Group(probe("g", 2, 400*time.Millisecond), probe("g", 3, 400*time.Millisecond)),
		probe("g", 4, 0))
	res, err := e.d.EnqueueGraph(ctx, g)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Jobs) != 4 {
		t.Fatalf("jobs %v", res.Jobs)
	}
	if rec, _ := e.d.Job(ctx, res.Jobs[3]); rec.State != job.StatePending {
		t.Fatalf("last job state %s, want pending", rec.State)
	}
	e.waitState(res.Jobs[3], job.StateDone, 20*time.Second)
	done := strings.Join(e.probeList("g", "done"), ",")
	if done != "1,2,3,4" && done != "1,3,2,4" {
		t.Fatalf("done order %s", done)
	}
	if max := e.probeInt("g", "max"); max != 2 {
		t.Fatalf("the group did not run concurrently: max %d", max)
	}
}

func TestDeadParentHoldsChildrenUntilRequeuedOrCancelled(t *testing.T) {
	e := newEnv(t)
	reg := worker.NewRegistry()
	var broken atomic.Bool
	broken.Store(true)
	worker.MustRegister(reg, func(ctx context.Context, j *job.Job[Flaky]) (string, error) {
		if broken.Load() && j.Args.Mode == "parent" {
			return "", errors.New("parent fails")
		}
		return "ran " + j.Args.Mode, nil
	})
	e.start(reg)
	ctx := context.Background()
	res, err := e.d.EnqueueGraph(ctx, dispatcher.Chain(
		dispatcher.Job(Flaky{Mode: "parent"}), dispatcher.Job(Flaky{Mode: "child"}), dispatcher.Job(Flaky{Mode: "grandchild"})))
	if err != nil {
		t.Fatal(err)
	}
	parent, child, grand := res.Jobs[0], res.Jobs[1], res.Jobs[2]
	e.waitState(parent, job.StateDead, 10*time.Second)
	// A marker job that runs after the parent died: the child had every
	// chance to run by then, and must not have.
	marker, _ := e.d.Enqueue(ctx, Flaky{Mode: "marker"})
	e.waitState(marker, job.StateDone, 10*time.Second)
	if rec, _ := e.d.Job(ctx, child); rec.State != job.StatePending {
		t.Fatalf("child of a dead parent is %s", rec.State)
	}
	broken.Store(false)
	if err := e.d.Requeue(ctx, parent); err != nil {
		t.Fatal(err)
	}
	e.waitState(grand, job.StateDone, 20*time.Second)

	// Cancelling a dead parent cancels its descendants.
	broken.Store(true)
	res2, err := e.d.EnqueueGraph(ctx, dispatcher.Chain(
		dispatcher.Job(Flaky{Mode: "parent"}), dispatcher.Group(dispatcher.Job(Flaky{Mode: "a"}), dispatcher.Job(Flaky{Mode: "b"}))))
	if err != nil {
		t.Fatal(err)
	}
	e.waitState(res2.Jobs[0], job.StateDead, 10*time.Second)
	if err := e.d.Cancel(ctx, res2.Jobs[0]); err != nil {
		t.Fatal(err)
	}
	for _, id := range res2.Jobs {
		if rec, _ := e.d.Job(ctx, id); rec.State != job.StateCancelled {
			t.Fatalf("%s is %s after cancelling the dead parent", id, rec.State)
		}
	}
	// Requeue is no longer possible: the letter is gone.
	if err := e.d.Requeue(ctx, res2.Jobs[0]); !errors.Is(err, job.ErrNotFound) {
		t.Fatalf("requeue cancelled = %v", err)
	}
	_ = testenv.Prefix
}

// A graph job that ends while Redis does not answer keeps its lease and
// releases its children once Redis is back: the job is done, not handed
// back into an attempt Redis could not count (on its last attempt that
// came back past its max retries and was dead-lettered as lost, its
// children never released). Redis here is paused (CLIENT PAUSE), not
// killed: it keeps the graph.
func TestGraphReleaseWaitsOutARedisOutage(t *testing.T) {
	start, addr := privateRedis(t)
	srv := start()
	t.Cleanup(func() { _ = srv.Process.Kill(); _, _ = srv.Process.Wait() })
	rdb := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: 1,
		DialTimeout: 200 * time.Millisecond, ReadTimeout: 300 * time.Millisecond})
	t.Cleanup(func() { _ = rdb.Close() })
	_, _, js := testenv.JetStream(t)
	prefix := testenv.Prefix(t)
	ctx := context.Background()
	if err := streams.Ensure(ctx, js, streams.Config{Names: wire.MustNames(prefix)}); err != nil {
		t.Fatal(err)
	}
	d, err := dispatcher.New(js, dispatcher.WithPrefix(prefix), dispatcher.WithRedis(rdb))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close(ctx)
	release := make(chan struct{})
	running := make(chan struct{}, 1)
	ran := make(chan string, 10)
	reg := worker.NewRegistry()
	worker.MustRegister(reg, func(ctx context.Context, j *job.Job[Flaky]) (string, error) {
		if j.Args.Mode == "parent" {
			running <- struct{}{}
			<-release
		}
		ran <- j.Args.Mode
		return "", nil
	})
	w, err := worker.New(js, reg, worker.WithPrefix(prefix), worker.WithRedis(rdb),
		worker.WithLogger(zaptest.NewLogger(t, zaptest.Level(zap.ErrorLevel+1))))
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(wctx) }()
	defer func() { cancel(); <-done }()

	res, err := d.EnqueueGraph(ctx, dispatcher.Chain(
		dispatcher.Job(Flaky{Mode: "parent"}, job.WithMaxRetries(1)),
		dispatcher.Job(Flaky{Mode: "child"})))
	if err != nil {
		t.Fatal(err)
	}
	<-running
	// Redis stops answering for 3 s, and the parent ends meanwhile.
	admin := redis.NewClient(&redis.Options{Addr: addr})
	defer admin.Close()
	if err := admin.Do(ctx, "CLIENT", "PAUSE", "3000", "ALL").Err(); err != nil {
		t.Fatal(err)
	}
	close(release)
	if m := <-ran; m != "parent" {
		t.Fatalf("%s ran, want the parent", m)
	}
	select {
	case m := <-ran:
		if m != "child" {
			t.Fatalf("%s ran again, want the child", m)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the child did not run after Redis came back")
	}
	for _, id := range res.Jobs {
		if rec := testenv.WaitJob(t, d, id, job.StateDone, 10*time.Second); rec.Attempts != 1 {
			t.Errorf("job %s done after %d attempts, want 1", id, rec.Attempts)
		}
	}
	if dls, err := d.DeadLetters(ctx, 0); err != nil || len(dls) != 0 {
		t.Errorf("dead letters %v (%v), want none", dls, err)
	}
}
