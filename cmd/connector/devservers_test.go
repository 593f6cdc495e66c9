package main

import (
	"context"
	"regexp"
	"testing"
	"time"

	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/job"
	"github.com/connector-go/connector/service"
	"github.com/connector-go/connector/worker"
)

type devPing struct {
	N int `msgpack:"n"`
}

func (devPing) JobName() string { return "test.dev_ping" }

// `connector dev --servers-only` runs the embedded servers alone and prints
// the flags that point a connector of one's own (service.Run) at them;
// that connector runs its jobs there.
func TestDevServersOnlyRunYourOwnConnector(t *testing.T) {
	t.Setenv("OTEL_TRACES_EXPORTER", "none")
	var stdout, stderr testenv.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	devDone := make(chan error, 1)
	go func() {
		devDone <- run(ctx, []string{"dev", "--servers-only", "--nats-port", "0", "--redis-addr", "127.0.0.1:0"},
			&stdout, &stderr, func(string) string { return "" })
	}()
	re := regexp.MustCompile(`--nats (\S+) --redis (\S+)`)
	var m []string
	testenv.Eventually(t, 30*time.Second, func() bool {
		m = re.FindStringSubmatch(stdout.String())
		return m != nil
	}, "connector dev --servers-only prints the flags of a connector")

	ran := make(chan int, 1)
	reg := worker.NewRegistry()
	worker.MustRegister(reg, func(ctx context.Context, j *job.Job[devPing]) (string, error) {
		ran <- j.Args.N
		return "", nil
	})
	svcCtx, stopSvc := context.WithCancel(ctx)
	defer stopSvc()
	svcDone := make(chan error, 1)
	go func() {
		svcDone <- service.Run(svcCtx, []string{"--nats", m[1], "--redis", m[2], "--http", "", "--log-level", "error"},
			func(string) string { return "" }, reg, func(ctx context.Context, env *service.Env) error {
				_, err := env.Dispatcher.Enqueue(ctx, devPing{N: 7})
				return err
			})
	}()
	select {
	case n := <-ran:
		if n != 7 {
			t.Fatalf("job ran with %d", n)
		}
	case err := <-svcDone:
		t.Fatalf("the connector stopped: %v\n%s", err, stderr.String())
	case <-time.After(30 * time.Second):
		t.Fatal("the connector's job did not run on the dev servers")
	}
	// The connector stops first, then the servers it uses.
	for _, s := range []struct {
		name string
		stop context.CancelFunc
		done chan error
	}{{"connector", stopSvc, svcDone}, {"connector dev", cancel, devDone}} {
		s.stop()
		select {
		case err := <-s.done:
			if err != nil {
				t.Errorf("%s: %v", s.name, err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("%s did not stop", s.name)
		}
	}
}
