package worker_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/connector-go/connector/dispatcher"
	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/job"
	"github.com/connector-go/connector/worker"
	"github.com/connector-go/connector/worker/internal/testjobs"
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
