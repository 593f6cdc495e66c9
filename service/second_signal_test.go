package service_test

import (
	"errors"
	"net/http"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/connector-go/connector/internal/testenv"
)

// A second SIGINT or SIGTERM during the shutdown's drain ends the process
// at once (the default action of the signal), as an operator pressing
// Ctrl-C twice expects; the first one starts the graceful shutdown. Before,
// the second was swallowed and the process waited out the whole grace.
func TestMainSecondSignalEndsTheDrain(t *testing.T) {
	c := startChild(t, "--shutdown-grace", "5m")
	cmd, exited, addr := c.cmd, c.exited, c.addr
	c.publish("hang")
	testenv.Eventually(t, 20*time.Second, func() bool { return len(c.exported()) == 1 }, "the hanging job started")

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
