package main

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/job"
	"github.com/connector-go/connector/worker"
)

type twiceJob struct{}

func (twiceJob) JobName() string { return "test.twice" }

// A job dead after its last allowed attempt: `jobs show` and `jobs dead`
// give the attempts the handler really ran, the same in both, in text and
// JSON, and the times in UTC with their zone.
func TestDeadJobAttemptsMatchTheRuns(t *testing.T) {
	srv, _, js := testenv.JetStream(t)
	rdb, prefix := testenv.Redis(t)
	ctx := context.Background()
	var runs atomic.Int32
	reg := worker.NewRegistry()
	worker.MustRegister(reg, func(ctx context.Context, j *job.Job[twiceJob]) (string, error) {
		runs.Add(1)
		return "", job.Retry(errors.New("no"))
	})
	d := runWorker(t, js, rdb, prefix, reg)
	id, err := d.Enqueue(ctx, twiceJob{}, job.WithMaxRetries(2), job.WithRetryPattern(job.RetryPattern{1: 10 * time.Millisecond}))
	if err != nil {
		t.Fatal(err)
	}
	testenv.WaitJob(t, d, id, job.StateDead, 30*time.Second)
	_, cli := operatorCLI(t, srv.URL, prefix)
	var rec job.Record
	if err := json.Unmarshal([]byte(cli("jobs", "show", id, "--json")), &rec); err != nil {
		t.Fatal(err)
	}
	var letters []struct {
		JobID    string `json:"job_id"`
		Attempts int    `json:"attempts"`
	}
	if err := json.Unmarshal([]byte(cli("jobs", "dead", "--json")), &letters); err != nil {
		t.Fatal(err)
	}
	n := int(runs.Load())
	if rec.Attempts != n || len(letters) != 1 || letters[0].Attempts != n {
		t.Errorf("handler ran %d times; jobs show says %d attempts, jobs dead %+v", n, rec.Attempts, letters)
	}
	show := cli("jobs", "show", id)
	if !strings.Contains(show, "attempts") || !strings.Contains(show, "Z\n") {
		t.Errorf("jobs show:\n%s", show)
	}
	t.Logf("runs %d\n%s\n%s", n, show, cli("jobs", "dead"))
}
