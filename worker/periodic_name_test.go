package worker_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/connector-go/connector/job"
	"github.com/connector-go/connector/worker"
)

// A firing of the schedule with the longest name allowed has a valid job
// id: it runs, and its retry (whose envelope is encoded again, with the
// firing's id) is scheduled and runs too.
func TestPeriodicFiringOfTheLongestNameRetries(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	var mu sync.Mutex
	runs := map[string]int{}
	reg := worker.NewRegistry()
	worker.MustRegister(reg, func(ctx context.Context, j *job.Job[Tick]) (string, error) {
		mu.Lock()
		runs[j.ID]++
		n := runs[j.ID]
		mu.Unlock()
		if n == 1 {
			return "", job.RetryAfter(errors.New("backend busy"), 50*time.Millisecond)
		}
		return "ok", nil
	})
	e.start(reg)
	name := strings.Repeat("n", 98)
	if err := e.d.Schedule(ctx, name, "@every 1s", Tick{Tag: "long"}); err != nil {
		t.Fatal(err)
	}
	first := firstRun(t, &mu, runs)
	if err := e.d.Unschedule(ctx, name); err != nil {
		t.Fatal(err)
	}
	rec := e.waitState(first, job.StateDone, 10*time.Second)
	if rec.Attempts != 2 || !strings.HasPrefix(first, "periodic-"+name+"-t") {
		t.Fatalf("firing %s: %d attempts, %s", first, rec.Attempts, rec.State)
	}
}
