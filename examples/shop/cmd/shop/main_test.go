package main

import (
	"context"
	"net"
	"testing"
	"time"
)

// The command serves, answers its own --check probe, and stops cleanly when
// its context ends (SIGTERM in production).
func TestRunServesChecksAndStops(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addrc := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--addr", "127.0.0.1:0", "--seed=false"}, func(a net.Addr) { addrc <- a })
	}()
	var addr string
	select {
	case a := <-addrc:
		addr = a.String()
	case err := <-done:
		t.Fatalf("run: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("shop did not start listening")
	}

	if err := run(context.Background(), []string{"--check", "--addr", addr}, nil); err != nil {
		t.Fatalf("--check against a running shop: %v", err)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run after shutdown: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("shop did not stop")
	}
	if err := run(context.Background(), []string{"--check", "--addr", addr}, nil); err == nil {
		t.Fatal("--check succeeded against a stopped shop")
	}
}
