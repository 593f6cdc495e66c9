package service_test

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/connector-go/connector/events"
	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/job"
	"github.com/connector-go/connector/service"
	"github.com/connector-go/connector/worker"
)

// TestMain lets the test binary be a connector's process: with
// SERVICE_TEST_CHILD=1 it runs childMain, which calls service.Main and
// never returns.
func TestMain(m *testing.M) {
	if os.Getenv("SERVICE_TEST_CHILD") == "1" {
		childMain()
	}
	os.Exit(m.Run())
}

// childMain is a connector's main: a job that records its export in
// Redis, and a listener that enqueues it for each partner event.
func childMain() {
	var env *service.Env
	reg := worker.NewRegistry()
	worker.MustRegister(reg, func(ctx context.Context, j *job.Job[exportPartner]) (string, error) {
		err := env.Redis.RPush(ctx, env.Prefix+":test:exported", j.Args.ID).Err()
		if j.Args.ID == "hang" {
			time.Sleep(time.Hour) // a handler that ignores its context
		}
		return "exported", err
	})
	service.Main(reg, func(ctx context.Context, e *service.Env) error {
		env = e
		l, err := e.Listeners()
		if err != nil {
			return err
		}
		return l.On("export_partner", "res.partner", "", func(ctx context.Context, ev events.Event) error {
			_, err := e.Dispatcher.Enqueue(ctx, exportPartner{ID: ev.RecordID})
			return err
		}, events.WithPartitions(1))
	})
}

// service.Main in a process of its own: it runs the connector until
// SIGTERM, then shuts down gracefully and exits with status 0.
func TestMainRunsUntilSIGTERM(t *testing.T) {
	srv := testenv.StartNATS(t)
	rdb, prefix := testenv.Redis(t)
	addr := testenv.FreeAddr(t)
	cmd := exec.Command(os.Args[0], "--nats", srv.URL, "--redis", testenv.RedisURL(t), "--prefix", prefix,
		"--http", addr, "--log-level", "warn", "--ack-wait", "5s")
	cmd.Env = append(os.Environ(), "SERVICE_TEST_CHILD=1", "OTEL_TRACES_EXPORTER=none")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	testenv.Eventually(t, 30*time.Second, func() bool { code, _ := get("http://" + addr + "/readyz"); return code == http.StatusOK }, "/readyz 200")

	pub, err := events.NewPublisher(jsOf(t, srv), events.WithPrefix(prefix))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pub.Publish(context.Background(), events.Event{Model: "res.partner", Name: events.Create, RecordID: "42"}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 20*time.Second, func() bool {
		got, _ := rdb.LRange(context.Background(), prefix+":test:exported", 0, -1).Result()
		return len(got) == 1 && got[0] == "42"
	}, "partner 42 exported by the child process")

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		exited <- err // for the cleanup
		if err != nil {
			t.Fatalf("after SIGTERM: %v, want exit status 0", err)
		}
	case <-time.After(40 * time.Second):
		t.Fatal("the process did not exit after SIGTERM")
	}
}
