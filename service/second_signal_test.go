package service_test

import (
	"context"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/connector-go/connector/events"
	"github.com/connector-go/connector/internal/testenv"
)

// A second SIGINT or SIGTERM during the shutdown's drain ends the process
// at once (the default action of the signal), as an operator pressing
// Ctrl-C twice expects; the first one starts the graceful shutdown. Before,
// the second was swallowed and the process waited out the whole grace.
func TestMainSecondSignalEndsTheDrain(t *testing.T) {
	srv := testenv.StartNATS(t)
	rdb, prefix := testenv.Redis(t)
	addr := testenv.FreeAddr(t)
	cmd := exec.Command(os.Args[0], "--nats", srv.URL, "--redis", testenv.RedisURL(t), "--prefix", prefix,
		"--http", addr, "--log-level", "warn", "--ack-wait", "5s", "--shutdown-grace", "5m")
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
	if _, err := pub.Publish(context.Background(), events.Event{Model: "res.partner", Name: events.Create, RecordID: "hang"}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 20*time.Second, func() bool {
		got, _ := rdb.LRange(context.Background(), prefix+":test:exported", 0, -1).Result()
		return len(got) == 1
	}, "the hanging job started")

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// Draining: /readyz answers 503 (or no longer at all).
	testenv.Eventually(t, 10*time.Second, func() bool { code, _ := get("http://" + addr + "/readyz"); return code != http.StatusOK }, "the drain started")
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		exited <- err // for the cleanup
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatalf("after the second SIGTERM: %v, want the process ended by the signal", err)
		}
		if ws, ok := ee.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGTERM {
			t.Fatalf("after the second SIGTERM: %v, want the process ended by SIGTERM", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the second SIGTERM did not end the process (it waits out the 5 min grace)")
	}
}
