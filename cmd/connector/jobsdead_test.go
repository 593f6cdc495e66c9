package main

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/job"
	"github.com/connector-go/connector/worker"
)

// `jobs dead --limit 0` lists every dead job (0: no limit, as the
// dispatcher reads it); with --name, the same limit keeps the same meaning
// instead of listing none.
func TestJobsDeadLimitZeroWithName(t *testing.T) {
	srv, _, js := testenv.JetStream(t)
	rdb, prefix := testenv.Redis(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reg := worker.NewRegistry()
	worker.MustRegister(reg, func(ctx context.Context, j *job.Job[fragileJob]) (string, error) {
		return "", errors.New("the backend refused the record")
	})
	d := runWorker(t, js, rdb, prefix, reg)
	var ids []string
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

	_, cli := operatorCLI(t, srv.URL, prefix)
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
