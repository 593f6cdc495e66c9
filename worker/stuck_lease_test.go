package worker_test

import (
	"context"
	"testing"
	"time"

	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/job"
	"github.com/connector-go/connector/worker"
)

// Past the shutdown grace, a handler that ignores its cancelled context
// gets a last short wait (3 s) before its job is handed back: its job is
// still this worker's meanwhile, under heartbeat. The heartbeats stopped
// with the grace, though, so with a lease shorter than that wait the job
// was delivered again to another worker while its first run went on, and
// ran twice.
func TestStuckHandlerKeepsItsLeaseUntilHandedBack(t *testing.T) {
	e := newEnv(t)
	const ackWait = time.Second
	finished := make(chan struct{}) // the first run ended
	s := newSteps(func(ctx context.Context, j *job.Job[Step], run int) (string, error) {
		if run == 1 {
			<-ctx.Done() // the grace is over...
			// ... and the handler takes two leases more to wind down,
			// within the last wait.
			<-time.After(2 * ackWait)
			close(finished)
		}
		return "ok", nil
	})
	reg := s.registry()
	stop1 := e.start(reg, worker.WithAckWait(ackWait), worker.WithShutdownGrace(200*time.Millisecond))
	id, err := e.d.Enqueue(context.Background(), Step{Key: "k"})
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() bool { return s.count("k") == 1 }, "first run started")
	// Another worker of the fleet, idle.
	e.start(reg, worker.WithAckWait(ackWait))
	stop1()
	select {
	case <-finished:
	default:
		t.Fatal("worker 1 stopped before its handler ended")
	}
	e.waitState(id, job.StateDone, 10*time.Second)
	if n := s.count("k"); n != 1 {
		t.Fatalf("job ran %d times (%s): its lease ended during the shutdown's last wait, without heartbeats", n, s.seen())
	}
}
