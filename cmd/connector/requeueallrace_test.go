package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/internal/wire"
	"github.com/connector-go/connector/job"
	"github.com/connector-go/connector/worker"
	"github.com/nats-io/nats.go"
)

type doomedJob struct{}

func (doomedJob) JobName() string { return "test.doomed" }

// `jobs requeue --all` while a worker keeps dead-lettering jobs (new ones,
// and the ones it requeues, which die again at once): each letter is
// requeued at most once, and the count printed is the number of letters
// requeued (the requeue publishes, seen on the wire).
func TestJobsRequeueAllWhileJobsDie(t *testing.T) {
	srv, nc, js := testenv.JetStream(t)
	rdb, prefix := testenv.Redis(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reg := worker.NewRegistry()
	worker.MustRegister(reg, func(ctx context.Context, j *job.Job[doomedJob]) (string, error) {
		return "", errors.New("doomed")
	})
	d := runWorker(t, js, rdb, prefix, reg)
	const first = 30
	for range first {
		if _, err := d.Enqueue(ctx, doomedJob{}, job.WithMaxRetries(1)); err != nil {
			t.Fatal(err)
		}
	}
	testenv.Eventually(t, 30*time.Second, func() bool {
		l, err := d.DeadLetters(ctx, 0)
		return err == nil && len(l) >= first
	}, "%d dead jobs", first)

	var mu sync.Mutex
	requeues := map[string]int{} // requeue message id -> times published
	sub, err := nc.Subscribe(prefix+".>", func(m *nats.Msg) {
		if id := m.Header.Get(wire.HeaderMsgID); strings.Contains(id, ".r") {
			mu.Lock()
			requeues[id]++
			mu.Unlock()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	pctx, stop := context.WithCancel(ctx)
	produced := make(chan struct{})
	go func() {
		defer close(produced)
		tick := time.NewTicker(5 * time.Millisecond) // a steady stream, not a flood
		defer tick.Stop()
		for pctx.Err() == nil {
			_, _ = d.Enqueue(pctx, doomedJob{}, job.WithMaxRetries(1))
			select {
			case <-tick.C:
			case <-pctx.Done():
			}
		}
	}()
	env, _ := operatorCLI(t, srv.URL, prefix)
	stdout, stderr, err := runCmd(t, env, "jobs", "requeue", "--all")
	stop()
	<-produced
	if err != nil {
		t.Fatalf("jobs requeue --all: %v\n%s", err, stderr)
	}
	var n int
	if _, err := fmt.Sscanf(stdout, "requeued %d job(s)", &n); err != nil {
		t.Fatalf("output %q: %v", stdout, err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	jobs := map[string]int{}
	for id, times := range requeues {
		if times > 1 {
			t.Errorf("letter %s requeued %d times", id, times)
		}
		jobs[id[:strings.LastIndex(id, ".r")]]++
	}
	for id, times := range jobs {
		if times > 1 {
			t.Errorf("job %s requeued %d times by one jobs requeue --all", id, times)
		}
	}
	if n < first || n != len(requeues) {
		t.Errorf("printed %d requeued, %d requeue messages published (at least %d letters were dead)", n, len(requeues), first)
	}
}
