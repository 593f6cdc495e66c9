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
	"github.com/redis/go-redis/v9"
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
	c := startChild(t)
	cmd, exited := c.cmd, c.exited
	c.publish("42")
	testenv.Eventually(t, 20*time.Second, func() bool {
		got := c.exported()
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

// child is a connector process running childMain (service.Main), ready.
type child struct {
	t      *testing.T
	cmd    *exec.Cmd
	exited chan error // cmd.Wait's answer; put it back after taking it
	addr   string     // its /livez, /readyz and /metrics
	srv    *testenv.NATSServer
	rdb    *redis.Client
	prefix string
}

// startChild starts childMain in a process of its own with args after
// the connection flags, and waits until it is ready; it is killed when
// the test ends.
func startChild(t *testing.T, args ...string) *child {
	t.Helper()
	srv := testenv.StartNATS(t)
	rdb, prefix := testenv.Redis(t)
	addr := testenv.FreeAddr(t)
	cmd := exec.Command(os.Args[0], append([]string{"--nats", srv.URL, "--redis", testenv.RedisURL(t), "--prefix", prefix,
		"--http", addr, "--log-level", "warn", "--ack-wait", "5s"}, args...)...)
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
	return &child{t: t, cmd: cmd, exited: exited, addr: addr, srv: srv, rdb: rdb, prefix: prefix}
}

// publish publishes a partner's creation: the child exports the partner
// (an "hang" one never ends).
func (c *child) publish(id string) {
	c.t.Helper()
	pub, err := events.NewPublisher(jsOf(c.t, c.srv), events.WithPrefix(c.prefix))
	if err != nil {
		c.t.Fatal(err)
	}
	if _, err := pub.Publish(context.Background(), events.Event{Model: "res.partner", Name: events.Create, RecordID: id}); err != nil {
		c.t.Fatal(err)
	}
}

// exported lists the partners whose export started, in order.
func (c *child) exported() []string {
	got, _ := c.rdb.LRange(context.Background(), c.prefix+":test:exported", 0, -1).Result()
	return got
}
