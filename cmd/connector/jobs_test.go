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
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
)

// operatorCLI runs the connector command against a deployment (NATS at
// url, the test Redis, prefix): env is its environment, cli runs it and
// returns its output, failing the test on an error.
func operatorCLI(t *testing.T, url, prefix string) (env func(string) string, cli func(args ...string) string) {
	env = func(k string) string {
		return map[string]string{"CONNECTOR_NATS_URL": url, "CONNECTOR_REDIS_URL": testenv.RedisURL(t), "CONNECTOR_PREFIX": prefix}[k]
	}
	cli = func(args ...string) string {
		t.Helper()
		stdout, stderr, err := runCmd(t, env, args...)
		if err != nil {
			t.Fatalf("connector %s: %v\n%s", strings.Join(args, " "), err, stderr)
		}
		return stdout
	}
	return env, cli
}

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
	d := runWorker(t, js, rdb, prefix, reg)

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

	env, cli := operatorCLI(t, srv.URL, prefix)
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
	// Its keys are snake_case, as jobs show's and the wire format's; the
	// raw message stays in the stream.
	var raw []map[string]any
	if err := json.Unmarshal([]byte(cli("jobs", "dead", "--json")), &raw); err != nil || len(raw) == 0 {
		t.Fatalf("jobs dead --json: %v", err)
	}
	for _, k := range []string{"seq", "dead_subject", "subject", "job_id", "job_name", "reason", "error", "attempts", "died_at"} {
		if _, ok := raw[0][k]; !ok {
			t.Errorf("jobs dead --json: no key %q in %v", k, raw[0])
		}
	}
	if _, ok := raw[0]["data"]; ok {
		t.Errorf("jobs dead --json carries the raw message: %v", raw[0])
	}
	if !strings.Contains(raw[0]["dead_subject"].(string), ".dead.jobs.") || !strings.Contains(raw[0]["subject"].(string), ".jobs.") {
		t.Errorf("jobs dead --json: dead_subject %v, subject %v", raw[0]["dead_subject"], raw[0]["subject"])
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

	// By name: another name's are none of these.
	if text := cli("jobs", "dead", "--name", "test.other"); !strings.Contains(text, "no dead jobs") {
		t.Errorf("jobs dead --name test.other:\n%s", text)
	}
	if text := cli("jobs", "dead", "--name", "test.fragile", "--limit", "1"); strings.Count(text, "test.fragile") != 1 {
		t.Errorf("jobs dead --name test.fragile --limit 1:\n%s", text)
	}
	if out := cli("jobs", "requeue", "--all", "--name", "test.other"); !strings.Contains(out, "requeued 0 job(s)") {
		t.Errorf("jobs requeue --all --name test.other: %q", out)
	}

	// The others, all at once (by their name).
	if out := cli("jobs", "requeue", "--all", "--name", "test.fragile"); !strings.Contains(out, "requeued 2 job(s)") {
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

// `jobs stats` and `jobs cancel` against a real deployment. Before any
// worker runs, queued jobs show in a queue no consumer serves, a job with
// an ETA as delayed; cancelling takes each out of the figures. A worker
// then takes the queued jobs (taken, not waiting) and a taken job can no
// longer be cancelled; a failing job shows as dead.
func TestJobsStatsAndCancel(t *testing.T) {
	srv, _, js := testenv.JetStream(t)
	rdb, prefix := testenv.Redis(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	env, cli := operatorCLI(t, srv.URL, prefix)
	stats := func() dispatcher.Stats {
		t.Helper()
		var st dispatcher.Stats
		if err := json.Unmarshal([]byte(cli("jobs", "stats", "--json")), &st); err != nil {
			t.Fatalf("jobs stats --json: %v", err)
		}
		return st
	}
	// root is the one queue with jobs (default channel and priority).
	root := func(st dispatcher.Stats) dispatcher.Queue {
		var q dispatcher.Queue
		for _, x := range st.Queues {
			if x.Waiting+uint64(x.Taken) > 0 {
				if q.Channel != "" {
					t.Fatalf("two queues with jobs: %+v", st.Queues)
				}
				q = x
			}
		}
		return q
	}
	cli("streams", "provision")
	d, err := dispatcher.New(js, dispatcher.WithPrefix(prefix), dispatcher.WithRedis(rdb))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = d.Close(context.Background()) }()
	state := func(id string) job.State {
		rec, err := d.Job(ctx, id)
		if err != nil {
			return ""
		}
		return rec.State
	}

	later, err := d.Enqueue(ctx, fragileJob{N: 1}, job.WithDelay(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	var queued []string
	for i := range 3 {
		id, err := d.Enqueue(ctx, fragileJob{N: 10 + i})
		if err != nil {
			t.Fatal(err)
		}
		queued = append(queued, id)
	}
	st := stats()
	if q := root(st); q.Channel != job.DefaultChannel || q.Consumer != "" || q.Waiting != 3 || q.Taken != 0 || st.Delayed != 1 || st.Dead != 0 {
		t.Fatalf("before any worker: %+v, delayed %d, dead %d; want 3 waiting in root with no consumer, 1 delayed", q, st.Delayed, st.Dead)
	}
	if text := cli("jobs", "stats"); !strings.Contains(text, "no worker serves") || !strings.Contains(text, "delayed (ETA, retry delay, periodic): 1") {
		t.Errorf("jobs stats:\n%s", text)
	}

	// Cancel the delayed job and one queued job: both leave the figures.
	// (The CLI is another process: it finds their records even if d has
	// not flushed them yet.)
	out := cli("jobs", "cancel", later, queued[0])
	for _, id := range []string{later, queued[0]} {
		if !strings.Contains(out, "cancelled "+id) {
			t.Errorf("jobs cancel: %q does not say %s is cancelled", out, id)
		}
		if s := state(id); s != job.StateCancelled {
			t.Errorf("job %s is %s after jobs cancel, want cancelled", id, s)
		}
	}
	st = stats()
	if q := root(st); q.Waiting != 2 || st.Delayed != 0 {
		t.Fatalf("after cancelling: %+v, delayed %d; want 2 waiting, none delayed", q, st.Delayed)
	}

	// A worker takes the two left and holds them (their runs block).
	release := make(chan struct{})
	var runs sync.Map
	reg := worker.NewRegistry()
	worker.MustRegister(reg, func(ctx context.Context, j *job.Job[fragileJob]) (string, error) {
		runs.Store(j.ID, true)
		if j.Args.N < 0 {
			return "", errors.New("the backend refused the record")
		}
		select {
		case <-release:
			return "ok", nil
		case <-ctx.Done():
			return "", ctx.Err()
		}
	})
	w, err := worker.New(js, reg, worker.WithPrefix(prefix), worker.WithRedis(rdb))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() { cancel(); <-done }()
	var last dispatcher.Stats
	testenv.Eventually(t, 20*time.Second, func() bool {
		last = stats()
		q := root(last)
		_, r1 := runs.Load(queued[1])
		_, r2 := runs.Load(queued[2])
		return r1 && r2 && q.Consumer != "" && q.Waiting == 0 && q.Taken == 2 && q.Pulls > 0
	}, "both jobs taken, running, the queue served (last %+v)", &last)
	if _, _, err := runCmd(t, env, "jobs", "cancel", queued[1]); !errors.Is(err, job.ErrStarted) {
		t.Errorf("jobs cancel of a running job: %v, want job.ErrStarted", err)
	}
	if _, _, err := runCmd(t, env, "jobs", "cancel", "NOSUCHJOB"); !errors.Is(err, job.ErrNotFound) {
		t.Errorf("jobs cancel of an unknown job: %v, want job.ErrNotFound", err)
	}
	close(release)
	for _, id := range queued[1:] {
		testenv.Eventually(t, 20*time.Second, func() bool { return state(id) == job.StateDone }, "job %s done", id)
	}
	if _, ok := runs.Load(queued[0]); ok {
		t.Errorf("the cancelled job %s ran", queued[0])
	}

	// A failing job is dead.
	if _, err := d.Enqueue(ctx, fragileJob{N: -1}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 20*time.Second, func() bool {
		last = stats()
		q := root(last)
		return last.Dead == 1 && q.Channel == ""
	}, "one dead job, nothing queued (last %+v)", &last)

	// The figures and the dead letters are in JetStream alone: they are
	// shown while Redis is down (a job's record is not).
	noRedis := func(k string) string {
		if k == "CONNECTOR_REDIS_URL" {
			return "redis://127.0.0.1:1/0"
		}
		return env(k)
	}
	if _, _, err := runCmd(t, noRedis, "jobs", "show", queued[1]); err == nil {
		t.Fatal("jobs show worked with Redis down: the test proves nothing")
	}
	last = dispatcher.Stats{}
	stdout, stderr, err := runCmd(t, noRedis, "jobs", "stats", "--json")
	if err != nil || json.Unmarshal([]byte(stdout), &last) != nil || last.Dead != 1 {
		t.Errorf("jobs stats with Redis down: %+v, %v\n%s", last, err, stderr)
	}
	stdout, stderr, err = runCmd(t, noRedis, "jobs", "dead", "--json")
	var letters []dispatcher.DeadLetter
	if err != nil || json.Unmarshal([]byte(stdout), &letters) != nil || len(letters) != 1 {
		t.Errorf("jobs dead with Redis down: %d letters, %v\n%s", len(letters), err, stderr)
	}
}

// runWorker runs a worker of reg (memory storage) until the test ends and
// returns a dispatcher of the same prefix, closed then too.
func runWorker(t *testing.T, js jetstream.JetStream, rdb redis.UniversalClient, prefix string, reg *worker.Registry) *dispatcher.Dispatcher {
	t.Helper()
	w, err := worker.New(js, reg, worker.WithPrefix(prefix), worker.WithRedis(rdb), worker.WithMemoryStorage())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	d, err := dispatcher.New(js, dispatcher.WithPrefix(prefix), dispatcher.WithRedis(rdb))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close(context.Background()); cancel(); <-done })
	return d
}

// The operator commands log only errors (their output is for people and
// scripts) unless the operator asks for a level: --log-level, or
// CONNECTOR_LOG_LEVEL, is not ignored, and the lines go to the command's
// standard error.
func TestJobsCommandsHonourTheLogLevelAsked(t *testing.T) {
	srv := testenv.StartNATS(t)
	_, prefix := testenv.Redis(t)
	env, cli := operatorCLI(t, srv.URL, prefix)
	cli("streams", "provision")
	logs := func(getenv func(string) string, args ...string) string {
		t.Helper()
		_, stderr, err := runCmd(t, getenv, args...)
		if !errors.Is(err, job.ErrNotFound) {
			t.Fatalf("connector %s: %v, want not found\n%s", strings.Join(args, " "), err, stderr)
		}
		return stderr
	}
	if got := logs(env, "jobs", "show", "no-such-job"); got != "" {
		t.Errorf("jobs show logged without being asked:\n%s", got)
	}
	if got := logs(env, "jobs", "show", "no-such-job", "--log-level", "info", "--log-format", "json"); !strings.Contains(got, `"msg":"connected"`) {
		t.Errorf("jobs show --log-level info --log-format json logged no connected line:\n%s", got)
	}
	withLevel := func(k string) string {
		if k == "CONNECTOR_LOG_LEVEL" {
			return "info"
		}
		return env(k)
	}
	if got := logs(withLevel, "jobs", "show", "no-such-job"); !strings.Contains(got, "connected") {
		t.Errorf("jobs show with CONNECTOR_LOG_LEVEL=info logged no connected line:\n%s", got)
	}
}
