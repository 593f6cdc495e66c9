package worker_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/job"
	"github.com/connector-go/connector/worker"
	"github.com/connector-go/connector/worker/internal/testjobs"
)

// startProc runs a worker process (worker/internal/testworker) on the
// test's NATS server and Redis.
func (e *env) startProc(name string, ackWait time.Duration, env ...string) *exec.Cmd {
	e.t.Helper()
	bin := testenv.GoBuild(e.t, "./worker/internal/testworker")
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "TW_NATS="+e.srv.URL, "TW_REDIS="+testenv.RedisURL(e.t),
		"TW_PREFIX="+e.prefix, "TW_NAME="+name, "TW_ACK_WAIT="+ackWait.String())
	cmd.Env = append(cmd.Env, env...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_, _ = cmd.Process.Wait()
	})
	return cmd
}

func (e *env) list(key string) []string {
	v, _ := e.rdb.LRange(context.Background(), e.prefix+":"+key, 0, -1).Result()
	return v
}

// A worker process killed with SIGKILL in the middle of a job loses
// nothing: the job comes back after its lease and completes on another
// worker, once.
func TestSIGKILLMidJobCompletesElsewhereOnce(t *testing.T) {
	e := newEnv(t)
	ackWait := 2 * time.Second
	victim := e.startProc("victim", ackWait)
	ctx := context.Background()
	id, err := e.d.Enqueue(ctx, testjobs.Slow{Key: "k", For: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 20*time.Second, func() bool { return len(e.list("started:k")) == 1 }, "job started on the victim")
	if got := e.list("started:k")[0]; got != "victim" {
		t.Fatalf("started on %s", got)
	}
	if err := victim.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_, _ = victim.Process.Wait()
	killedAt := time.Now()
	e.startProc("survivor", ackWait)

	rec := e.waitState(id, job.StateDone, 30*time.Second)
	if took := time.Since(killedAt); took > ackWait+3*time.Second+5*time.Second {
		t.Errorf("completed %s after the kill; lease is %s", took, ackWait)
	}
	completed := e.list("completed:k")
	if len(completed) != 1 || completed[0] != "survivor" {
		t.Fatalf("completions = %v", completed)
	}
	if n, _ := e.rdb.SCard(ctx, e.prefix+":done:k").Result(); n != 1 {
		t.Fatalf("effects = %d", n)
	}
	if rec.Attempts != 2 || rec.Worker != "survivor" {
		t.Fatalf("record = %+v", rec)
	}
}

// Several worker processes share the queue; every job runs exactly once
// when nobody dies.
func TestFleetOfProcessesRunsEachJobOnce(t *testing.T) {
	e := newEnv(t)
	for i := 0; i < 3; i++ {
		e.startProc(fmt.Sprintf("w%d", i), 5*time.Second)
	}
	ctx := context.Background()
	// All three pull before the jobs exist: one that started late would
	// find them taken.
	testenv.Eventually(t, 60*time.Second, func() bool {
		n, _ := e.rdb.Exists(ctx, e.prefix+":up:w0", e.prefix+":up:w1", e.prefix+":up:w2").Result()
		return n == 3
	}, "three workers up")
	const n = 60
	for i := 0; i < n; i++ {
		if _, err := e.d.Enqueue(ctx, testjobs.Slow{Key: fmt.Sprint(i), For: 20 * time.Millisecond}); err != nil {
			t.Fatal(err)
		}
	}
	testenv.Eventually(t, 60*time.Second, func() bool {
		for i := 0; i < n; i++ {
			if len(e.list(fmt.Sprintf("completed:%d", i))) == 0 {
				return false
			}
		}
		return true
	}, "all jobs completed")
	workers := map[string]int{}
	for i := 0; i < n; i++ {
		c := e.list(fmt.Sprintf("completed:%d", i))
		if len(c) != 1 {
			t.Fatalf("job %d completed %d times", i, len(c))
		}
		workers[c[0]]++
	}
	if len(workers) < 2 {
		t.Errorf("work not shared: %v", workers)
	}
}

// SIGTERM: stop pulling, let running jobs finish within the grace period.
func TestGracefulShutdownFinishesInFlight(t *testing.T) {
	e := newEnv(t)
	proc := e.startProc("graceful", 5*time.Second)
	ctx := context.Background()
	// The job outlasts the worker's own stop (its pullers end their open
	// requests: up to about 2 s), so it finishes within the grace period
	// only if the grace is granted.
	id, _ := e.d.Enqueue(ctx, testjobs.Slow{Key: "g", For: 4 * time.Second})
	testenv.Eventually(t, 20*time.Second, func() bool { return len(e.list("started:g")) == 1 }, "job started")
	if err := proc.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() bool {
		return e.rdb.Exists(ctx, e.prefix+":stopping:graceful").Val() == 1
	}, "worker saw SIGTERM")
	// Jobs enqueued after SIGTERM are not taken by the stopping worker.
	later, _ := e.d.Enqueue(ctx, testjobs.Slow{Key: "later", For: 0})
	errc := make(chan error, 1)
	go func() { errc <- proc.Wait() }()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("worker exit: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("worker did not exit")
	}
	if c := e.list("completed:g"); len(c) != 1 {
		t.Fatalf("in-flight job completions = %v", c)
	}
	e.waitState(id, job.StateDone, 5*time.Second)
	if c := e.list("started:later"); len(c) != 0 {
		t.Fatalf("stopping worker took a new job: %v", c)
	}
	// A fresh worker picks up what was left.
	e.startProc("next", 5*time.Second)
	e.waitState(later, job.StateDone, 20*time.Second)
}

// Past the grace period, running jobs are handed back (not lost, not run
// twice by this worker) and finish elsewhere.
func TestShutdownGraceOverHandsJobsBack(t *testing.T) {
	e := newEnv(t)
	reg := worker.NewRegistry()
	testjobs.Register(reg, e.rdb, e.prefix, "inproc")
	stop := e.start(reg, worker.WithShutdownGrace(300*time.Millisecond))
	ctx := context.Background()
	id, _ := e.d.Enqueue(ctx, testjobs.Slow{Key: "h", For: 5 * time.Second})
	testenv.Eventually(t, 10*time.Second, func() bool { return len(e.list("started:h")) == 1 }, "job started")
	stop()
	if c := e.list("completed:h"); len(c) != 0 {
		t.Fatalf("interrupted job completed: %v", c)
	}
	e.startProc("taker", 5*time.Second)
	e.waitState(id, job.StateDone, 30*time.Second)
	if c := e.list("completed:h"); len(c) != 1 || c[0] != "taker" {
		t.Fatalf("completions %v", c)
	}
}

// A job longer than its lease keeps it through heartbeats: it runs once.
func TestLongJobKeepsLeaseWithHeartbeats(t *testing.T) {
	e := newEnv(t)
	reg := worker.NewRegistry()
	testjobs.Register(reg, e.rdb, e.prefix, "a")
	e.start(reg, worker.WithAckWait(time.Second))
	reg2 := worker.NewRegistry()
	testjobs.Register(reg2, e.rdb, e.prefix, "b")
	e.start(reg2, worker.WithAckWait(time.Second))
	id, _ := e.d.Enqueue(context.Background(), testjobs.Slow{Key: "long", For: 3500 * time.Millisecond})
	rec := e.waitState(id, job.StateDone, 20*time.Second)
	if s := e.list("started:long"); len(s) != 1 || rec.Attempts != 1 {
		t.Fatalf("starts %v record %+v", s, rec)
	}
}
