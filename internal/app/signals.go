package app

import (
	"context"
	"os"
	"os/signal"
	"sync"
	"syscall"
)

// SignalContext returns a context that the first SIGINT or SIGTERM
// cancels (the graceful shutdown), and arranges that a second one ends the
// process at once with that signal's default action, as an operator
// pressing Ctrl-C twice expects, however soon it follows the first. stop
// releases the signals; call it once the process has shut down.
//
// Both signals go to one channel with room for two, read by one goroutine,
// so none is lost between them. (signal.NotifyContext with its stop called
// once the context ends has a window, between the first signal and that
// call, in which a second one is caught and dropped: the process then
// waits out its whole grace period.)
func SignalContext() (ctx context.Context, stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	done := make(chan struct{})
	go watchSignals(sigs, done, cancel, raiseDefault)
	var once sync.Once
	return ctx, func() {
		once.Do(func() {
			signal.Stop(sigs)
			close(done)
			cancel()
		})
	}
}

// watchSignals cancels on the first signal of sigs and calls raise with the
// second, until done is closed.
func watchSignals(sigs <-chan os.Signal, done <-chan struct{}, cancel func(), raise func(os.Signal)) {
	select {
	case <-sigs:
		cancel()
	case <-done:
		return
	}
	select {
	case s := <-sigs:
		raise(s)
	case <-done:
	}
}

// raiseDefault delivers s again with its default action: the process ends
// by the signal, as a shell or Kubernetes sees it.
func raiseDefault(s os.Signal) {
	signal.Reset(syscall.SIGINT, syscall.SIGTERM)
	if sig, ok := s.(syscall.Signal); ok {
		_ = syscall.Kill(os.Getpid(), sig)
	}
}
