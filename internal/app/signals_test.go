package app

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// signalChild is the process TestSecondSignalEndsTheProcess starts: it
// takes the first signal as a graceful shutdown that never ends (a drain
// waiting on a stuck job), so only the second signal can end it.
func signalChild() {
	ctx, stop := SignalContext()
	defer stop()
	fmt.Println("ready")
	<-ctx.Done()
	fmt.Println("draining")
	select {} // the drain never ends
}

func TestMain(m *testing.M) {
	if os.Getenv("APP_SIGNAL_CHILD") == "1" {
		signalChild()
	}
	os.Exit(m.Run())
}

// Two signals that arrive before the watcher has run at all (a second
// Ctrl-C right after the first, on a busy machine) are both acted on: the
// first cancels, the second ends the process. With signal.NotifyContext
// and its stop called once the context ended, the second one was caught
// in between and dropped, and the process waited out its whole grace.
func TestWatchSignalsKeepsASecondSignalThatCameAtOnce(t *testing.T) {
	sigs := make(chan os.Signal, 2)
	sigs <- syscall.SIGTERM
	sigs <- syscall.SIGINT
	cancelled := make(chan struct{})
	raised := make(chan os.Signal, 1)
	go watchSignals(sigs, make(chan struct{}), func() { close(cancelled) }, func(s os.Signal) { raised <- s })
	select {
	case s := <-raised:
		if s != syscall.SIGINT {
			t.Fatalf("raised %v, want the second signal, SIGINT", s)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the second signal was not raised")
	}
	select {
	case <-cancelled:
	default:
		t.Fatal("the first signal did not cancel")
	}
}

// Once the process is stopped (stop), the watcher returns without acting.
func TestWatchSignalsEndsWithDone(t *testing.T) {
	done := make(chan struct{})
	returned := make(chan struct{})
	go func() {
		watchSignals(make(chan os.Signal), done, func() { t.Error("cancelled") }, func(os.Signal) { t.Error("raised") })
		close(returned)
	}()
	close(done)
	select {
	case <-returned:
	case <-time.After(10 * time.Second):
		t.Fatal("the watcher did not return after done")
	}
}

// A real process: the first SIGTERM starts the drain (the context ends),
// the second, sent as soon as the drain has begun, ends the process by
// SIGTERM.
func TestSecondSignalEndsTheProcess(t *testing.T) {
	for i := range 5 {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "APP_SIGNAL_CHILD=1")
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := bufio.NewScanner(out)
		next := func(want string) {
			if !lines.Scan() || lines.Text() != want {
				_ = cmd.Process.Kill()
				_ = cmd.Wait()
				t.Fatalf("run %d: child said %q, want %q", i, lines.Text(), want)
			}
		}
		next("ready")
		_ = cmd.Process.Signal(syscall.SIGTERM)
		next("draining")
		_ = cmd.Process.Signal(syscall.SIGTERM)
		exited := make(chan error, 1)
		go func() {
			for lines.Scan() {
			}
			exited <- cmd.Wait()
		}()
		select {
		case err := <-exited:
			var ee *exec.ExitError
			if !errors.As(err, &ee) {
				t.Fatalf("run %d: %v, want the process ended by SIGTERM", i, err)
			}
			if ws, ok := ee.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGTERM {
				t.Fatalf("run %d: %v, want the process ended by SIGTERM", i, err)
			}
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
			t.Fatalf("run %d: the second SIGTERM did not end the process", i)
		}
	}
}
