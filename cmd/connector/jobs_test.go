package main

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/connector-go/connector/dispatcher"
	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/job"
	"github.com/connector-go/connector/worker"
)

type fragileJob struct {
	N int `msgpack:"n"`
}

func (fragileJob) JobName() string { return "test.fragile" }

// The operator commands against a real deployment (embedded NATS, the
// real Redis, a running worker): `jobs dead` lists the dead jobs, `jobs
// show` shows one; `jobs requeue ID` puts one back and it runs again (its
// letter gone), `jobs requeue --all` the others; then nothing is dead.
func TestJobsCommandsRequeueDeadJobs(t *testing.T) {
	srv, _, js := testenv.JetStream(t)
	rdb, prefix := testenv.Redis(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	var broken atomic.Bool
	broken.Store(true)
	var mu sync.Mutex
	runs := map[string]int{}
	reg := worker.NewRegistry()
	worker.MustRegister(reg, func(ctx context.Context, j *job.Job[fragileJob]) (string, error) {
		mu.Lock()
		runs[j.ID]++
		mu.Unlock()
		if broken.Load() {
			return "", errors.New("the backend refused the record")
		}
		return "fixed", nil
	})
	w, err := worker.New(js, reg, worker.WithPrefix(prefix), worker.WithRedis(rdb), worker.WithMemoryStorage())
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() { cancel(); <-done }()
	d, err := dispatcher.New(js, dispatcher.WithPrefix(prefix), dispatcher.WithRedis(rdb))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = d.Close(context.Background()) }()

	var ids []string
	for i := range 3 {
		id, err := d.Enqueue(ctx, fragileJob{N: i})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	state := func(id string) job.State {
		rec, err := d.Job(ctx, id)
		if err != nil {
			return ""
		}
		return rec.State
	}
	waitState := func(st job.State, ids ...string) {
		t.Helper()
		for _, id := range ids {
			testenv.Eventually(t, 20*time.Second, func() bool { return state(id) == st }, "job %s %s", id, st)
		}
	}
	waitState(job.StateDead, ids...)

	env := func(k string) string {
		return map[string]string{"CONNECTOR_NATS_URL": srv.URL, "CONNECTOR_REDIS_URL": testenv.RedisURL(t), "CONNECTOR_PREFIX": prefix}[k]
	}
	cli := func(args ...string) string {
		t.Helper()
		stdout, stderr, err := runCmd(t, env, args...)
		if err != nil {
			t.Fatalf("connector %s: %v\n%s", strings.Join(args, " "), err, stderr)
		}
		return stdout
	}
	dead := func() []string {
		t.Helper()
		var letters []dispatcher.DeadLetter
		if err := json.Unmarshal([]byte(cli("jobs", "dead", "--json")), &letters); err != nil {
			t.Fatalf("jobs dead --json: %v", err)
		}
		var out []string
		for _, l := range letters {
			out = append(out, l.JobID)
		}
		slices.Sort(out)
		return out
	}

	// jobs dead, in text and JSON.
	text := cli("jobs", "dead")
	for _, id := range ids {
		if !strings.Contains(text, id) {
			t.Errorf("jobs dead does not list %s:\n%s", id, text)
		}
	}
	if !strings.Contains(text, "the backend refused the record") || !strings.Contains(text, "test.fragile") {
		t.Errorf("jobs dead does not show the name and error:\n%s", text)
	}
	if got, want := dead(), slices.Sorted(slices.Values(ids)); !slices.Equal(got, want) {
		t.Fatalf("jobs dead --json: %v, want %v", got, want)
	}

	// jobs show, in text and JSON.
	text = cli("jobs", "show", ids[0])
	for _, want := range []string{ids[0], "test.fragile", "dead", "the backend refused the record"} {
		if !strings.Contains(text, want) {
			t.Errorf("jobs show does not show %q:\n%s", want, text)
		}
	}
	var rec job.Record
	if err := json.Unmarshal([]byte(cli("jobs", "show", ids[0], "--json")), &rec); err != nil {
		t.Fatal(err)
	}
	if rec.ID != ids[0] || rec.State != job.StateDead || rec.Attempts != 1 {
		t.Errorf("jobs show --json: id %s, state %s, attempts %d; want %s, dead, 1", rec.ID, rec.State, rec.Attempts, ids[0])
	}

	// The cause is fixed: requeue one, by id.
	broken.Store(false)
	if out := cli("jobs", "requeue", ids[0]); !strings.Contains(out, "requeued "+ids[0]) {
		t.Errorf("jobs requeue: %q", out)
	}
	waitState(job.StateDone, ids[0])
	mu.Lock()
	if runs[ids[0]] != 2 {
		t.Errorf("job %s ran %d times, want twice (dead, then requeued)", ids[0], runs[ids[0]])
	}
	mu.Unlock()
	if text := cli("jobs", "show", ids[0]); !strings.Contains(text, "done") || !strings.Contains(text, "fixed") {
		t.Errorf("jobs show after the requeue:\n%s", text)
	}
	if got, want := dead(), slices.Sorted(slices.Values(ids[1:])); !slices.Equal(got, want) {
		t.Errorf("jobs dead after one requeue: %v, want %v", got, want)
	}

	// The others, all at once.
	if out := cli("jobs", "requeue", "--all"); !strings.Contains(out, "requeued 2 job(s)") {
		t.Errorf("jobs requeue --all: %q", out)
	}
	waitState(job.StateDone, ids[1:]...)
	mu.Lock()
	for _, id := range ids[1:] {
		if runs[id] != 2 {
			t.Errorf("job %s ran %d times, want twice", id, runs[id])
		}
	}
	mu.Unlock()
	if text := cli("jobs", "dead"); !strings.Contains(text, "no dead jobs") {
		t.Errorf("jobs dead after requeue --all:\n%s", text)
	}
	if out := cli("jobs", "requeue", "--all"); !strings.Contains(out, "requeued 0 job(s)") {
		t.Errorf("jobs requeue --all with nothing dead: %q", out)
	}

	// A job that is not dead cannot be requeued.
	if _, _, err := runCmd(t, env, "jobs", "requeue", ids[0]); !errors.Is(err, job.ErrNotFound) {
		t.Errorf("jobs requeue of a done job: %v, want job.ErrNotFound", err)
	}
}
