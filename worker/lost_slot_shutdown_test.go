package worker

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/job"
	"github.com/redis/go-redis/v9"
)

// A runner's first slot attempt takes the slot in Redis but its answer is
// lost (Redis too slow to answer in time) while the worker stops: the job
// goes back unrun (block, stopping), and the slot taken under its token
// must go with it, as it does for the jobs of the blocked lists at
// shutdown (TestHandedBackBlockedJobLeavesNoSlotBehind). Otherwise the
// channel runs one job short of its capacity fleet-wide (here: none at
// all) until the lease (AckWait) ends.
func TestJobHandedBackAtShutdownLeavesNoSlotBehind(t *testing.T) {
	_, _, js := testenv.JetStream(t)
	rdb, prefix := testenv.Redis(t)

	taken := make(chan struct{}) // the attempt ran in Redis, its answer not back yet
	var once sync.Once
	rdb.AddHook(&scriptHook{after: func(ctx context.Context, cmd redis.Cmder) {
		keys, ok := scriptCall(cmd, acquireScript, "regFail")
		if !ok || !strings.Contains(strings.Join(keys, " "), ":waiting:root.lim:1") || cmd.Err() != nil {
			return
		}
		first := false
		once.Do(func() { first = true })
		if !first {
			return
		}
		close(taken)
		// The answer comes too late: the worker is stopping by then.
		select {
		case <-ctx.Done():
		case <-time.After(20 * time.Second):
		}
		cmd.SetErr(context.DeadlineExceeded)
	}})
	reg := NewRegistry()
	MustRegister(reg, func(ctx context.Context, j *job.Job[bandJob]) (string, error) {
		t.Errorf("job %d ran", j.Args.N)
		return "", nil
	})
	w, d, stop, wait := runLimited(t, js, rdb, prefix, reg)
	ctx := context.Background()
	if _, err := d.Enqueue(ctx, bandJob{N: 1}, job.WithChannel("root.lim"), job.WithPriority(10)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-taken:
	case <-time.After(10 * time.Second):
		t.Fatal("the job's slot attempt never came")
	}
	key := w.slots.slotsKey("root.lim")
	if n, _ := rdb.ZCard(ctx, key).Result(); n != 1 {
		t.Fatalf("slots taken: %d, want 1", n)
	}
	stop()
	if err := wait(); err != nil {
		t.Fatal(err)
	}
	if n, _ := rdb.ZCard(ctx, key).Result(); n != 0 {
		t.Fatalf("the worker stopped with the slot taken under its handed-back job's token still taken (%d): the channel has no free slot until the lease (%s) ends",
			n, w.cfg.ackWait)
	}
}
