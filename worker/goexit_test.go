package worker_test

import (
	"context"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/connector-go/connector/internal/wire"
	"github.com/connector-go/connector/job"
	"github.com/connector-go/connector/worker"
)

// A handler that ends its goroutine with runtime.Goexit (t.FailNow called
// in a handler of a test does) neither takes its runner with it nor
// leaves its job held for ever: the job is dead-lettered as a panic, and
// the next job runs on a worker with a single runner.
func TestHandlerGoexitKeepsTheRunner(t *testing.T) {
	e := newEnv(t)
	reg := worker.NewRegistry()
	worker.MustRegister(reg, func(ctx context.Context, j *job.Job[ImportProduct]) (string, error) {
		if j.Args.ExternalID == "goexit" {
			runtime.Goexit()
		}
		return "ran " + j.Args.ExternalID, nil
	})
	e.start(reg, worker.WithConcurrency(1))
	ctx := context.Background()
	bad, err := e.d.Enqueue(ctx, ImportProduct{ExternalID: "goexit"})
	if err != nil {
		t.Fatal(err)
	}
	rec := e.waitState(bad, job.StateDead, 15*time.Second)
	if !strings.Contains(rec.Error, "Goexit") {
		t.Errorf("dead job's error %q does not say the handler called runtime.Goexit", rec.Error)
	}
	dls, err := e.d.DeadLetters(ctx, 0)
	if err != nil || len(dls) != 1 || dls[0].Reason != wire.ReasonPanic {
		t.Fatalf("dead letters %+v (%v), want one with reason %s", dls, err, wire.ReasonPanic)
	}
	good, err := e.d.Enqueue(ctx, ImportProduct{ExternalID: "next"})
	if err != nil {
		t.Fatal(err)
	}
	e.waitState(good, job.StateDone, 15*time.Second)
}
