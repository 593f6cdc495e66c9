package main

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/connector-go/connector/dispatcher"
	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/job"
	"github.com/connector-go/connector/worker"
)

// `jobs dead --limit 0` lists every dead job (0: no limit, as the
// dispatcher reads it); with --name, the same limit keeps the same meaning
// instead of listing none.
func TestJobsDeadLimitZeroWithName(t *testing.T) {
	url, prefix, _, ids := twoDeadJobs(t)
	_, cli := operatorCLI(t, url, prefix)
	for _, args := range [][]string{
		{"jobs", "dead", "--limit", "0"},
		{"jobs", "dead", "--limit", "0", "--name", "test.fragile"},
	} {
		text := cli(args...)
		for _, id := range ids {
			if !strings.Contains(text, id) {
				t.Errorf("connector %s does not list %s:\n%s", strings.Join(args, " "), id, text)
			}
		}
	}
}

// `jobs requeue ID --all` (an id and --all together, in any order) is a
// usage error that requeues nothing, not a requeue of every dead job; so
// is `events replay SEQ --all` (TestEventsDeadAndReplay). So is an id with
// --name (a filter of --all only), rather than a requeue of a job of
// another name.
func TestJobsRequeueWithConflictingSelectionsRequeuesNothing(t *testing.T) {
	url, prefix, d, ids := twoDeadJobs(t)
	usageErrorsActOnNothing(t, url, prefix, d, [][]string{
		{"jobs", "requeue", ids[0], "--all"},
		{"jobs", "requeue", "--all", ids[0]},
		{"jobs", "requeue", ids[0], "--name", "test.other"},
	})
}

// usageErrorsActOnNothing runs each command line, which must be a usage
// error that leaves every dead letter where it is.
func usageErrorsActOnNothing(t *testing.T, url, prefix string, d *dispatcher.Dispatcher, cmds [][]string) {
	t.Helper()
	ctx := context.Background()
	seqs := func() []uint64 {
		t.Helper()
		l, err := d.DeadLetters(ctx, 0)
		if err != nil {
			t.Fatal(err)
		}
		var out []uint64
		for _, x := range l {
			out = append(out, x.Seq)
		}
		return out
	}
	before := seqs()
	env, _ := operatorCLI(t, url, prefix)
	for _, args := range cmds {
		stdout, stderr, err := runCmd(t, env, args...)
		if err == nil || !strings.Contains(err.Error(), "usage") {
			t.Errorf("connector %s: %v, want a usage error\n%s%s", strings.Join(args, " "), err, stdout, stderr)
		}
		if after := seqs(); !slices.Equal(after, before) {
			t.Fatalf("connector %s: dead letters %v, were %v (acted on)", strings.Join(args, " "), after, before)
		}
	}
}

// A mistyped jobs command is named as such, without connecting anywhere
// first (here nothing answers: the error would be the connection's).
func TestJobsUnknownCommandSaysSo(t *testing.T) {
	unreachable := func(k string) string {
		return map[string]string{"CONNECTOR_NATS_URL": "nats://127.0.0.1:1", "CONNECTOR_REDIS_URL": "redis://127.0.0.1:1/0"}[k]
	}
	_, _, err := runCmd(t, unreachable, "jobs", "shwo", "some-id")
	if err == nil || !strings.Contains(err.Error(), `unknown jobs command "shwo"`) {
		t.Fatalf("connector jobs shwo: %v, want unknown jobs command", err)
	}
}

// twoDeadJobs runs a worker whose jobs all fail for good, and dead-letters
// two: it returns the NATS URL, the prefix, the dispatcher and their ids.
func twoDeadJobs(t *testing.T) (url, prefix string, d *dispatcher.Dispatcher, ids []string) {
	t.Helper()
	srv, _, js := testenv.JetStream(t)
	rdb, prefix := testenv.Redis(t)
	ctx := context.Background()
	reg := worker.NewRegistry()
	worker.MustRegister(reg, func(ctx context.Context, j *job.Job[fragileJob]) (string, error) {
		return "", errors.New("the backend refused the record")
	})
	d = runWorker(t, js, rdb, prefix, reg)
	for i := range 2 {
		id, err := d.Enqueue(ctx, fragileJob{N: i})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	testenv.Eventually(t, 20*time.Second, func() bool {
		l, err := d.DeadLetters(ctx, 0)
		return err == nil && len(l) == len(ids)
	}, "both jobs dead")
	return srv.URL, prefix, d, ids
}
