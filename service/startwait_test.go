package service_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/connector-go/connector/internal/streams"
	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/internal/wire"
	"github.com/connector-go/connector/service"
	"github.com/connector-go/connector/worker"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
)

// proxy forwards connections on addr to target until the test ends: the
// test's real Redis, reachable on an address that was closed before.
func proxy(t *testing.T, addr, target string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				_ = c.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, c, u)
			mu.Unlock()
			wg.Add(2)
			go func() { defer wg.Done(); _, _ = io.Copy(u, c); _ = u.Close() }()
			go func() { defer wg.Done(); _, _ = io.Copy(c, u); _ = c.Close() }()
		}
	}()
	return nil
}

// A worker process started before its servers waits for them (by default
// up to connect.DefaultStartWait), then runs: the setups run only once
// both NATS and Redis answer. The test proves that the first connection
// attempt failed before the server came up.
func TestStartWaitsForServers(t *testing.T) {
	t.Setenv("OTEL_TRACES_EXPORTER", "none")
	_, prefix := testenv.Redis(t)
	redisURL := testenv.RedisURL(t)
	ru, err := url.Parse(redisURL)
	if err != nil {
		t.Fatal(err)
	}
	running := testenv.StartNATS(t)

	natsLater := func(t *testing.T, addr string) {
		testenv.StartNATS(t, func(o *server.Options) { o.Port = testenv.Port(t, addr) })
	}
	redisLater := func(t *testing.T, addr string) {
		if err := proxy(t, addr, ru.Host); err != nil {
			t.Fatal(err)
		}
	}

	for _, c := range []struct {
		name string
		// late is the server that comes up after the first attempt.
		late  func(t *testing.T, addr string)
		flags func(addr string) []string
	}{
		{"NATS", natsLater, func(addr string) []string { return []string{"--nats", "nats://" + addr, "--redis", redisURL} }},
		{"Redis", redisLater, func(addr string) []string {
			return []string{"--nats", running.URL, "--redis", strings.Replace(redisURL, ru.Host, addr, 1)}
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			addr, tried := testenv.FirstAttempt(t)
			ran := make(chan struct{})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() {
				done <- service.Run(ctx, append(c.flags(addr), "--prefix", prefix, "--http", "", "--log-level", "error"),
					func(string) string { return "" }, worker.NewRegistry(),
					func(context.Context, *service.Env) error { close(ran); return nil })
			}()
			select {
			case err := <-tried:
				if err != nil {
					t.Fatalf("no connection attempt: %v", err)
				}
			case err := <-done:
				t.Fatalf("Run returned before any connection attempt: %v", err)
			}
			c.late(t, addr)
			select {
			case <-ran:
			case err := <-done:
				t.Fatalf("Run returned instead of waiting for %s: %v", c.name, err)
			case <-time.After(30 * time.Second):
				t.Fatalf("the setup did not run within 30 s of %s coming up", c.name)
			}
			cancel()
			if err := <-done; err != nil {
				t.Fatalf("Run after a graceful stop: %v", err)
			}
		})
	}
}

// Waiting is for servers that are not up yet, not for a wrong
// configuration: a rejected password ends the start at once, however long
// the process would wait.
func TestStartWaitEndsOnAuthError(t *testing.T) {
	t.Setenv("OTEL_TRACES_EXPORTER", "none")
	srv := testenv.StartNATS(t, func(o *server.Options) { o.Username, o.Password = "worker", "right" })
	_, prefix := testenv.Redis(t)
	u := strings.Replace(srv.URL, "nats://", "nats://worker:wrong@", 1)
	done := make(chan error, 1)
	go func() {
		done <- service.Run(context.Background(), []string{"--nats", u, "--redis", testenv.RedisURL(t), "--prefix", prefix,
			"--http", "", "--log-level", "error", "--start-wait", "10m"}, func(string) string { return "" }, worker.NewRegistry())
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(strings.ToLower(err.Error()), "authorization") || strings.Contains(err.Error(), "wrong") {
			t.Fatalf("Run: %v, want the authorization error, password redacted", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run kept waiting on an authorization error")
	}
}

// A process asked to stop while it waits for its servers stops at once,
// and gracefully (Run returns nil: exit status 0), as it would later.
func TestStopWhileWaitingForServers(t *testing.T) {
	t.Setenv("OTEL_TRACES_EXPORTER", "none")
	_, prefix := testenv.Redis(t)
	addr, tried := testenv.FirstAttempt(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- service.Run(ctx, []string{"--nats", "nats://" + addr, "--redis", testenv.RedisURL(t), "--prefix", prefix,
			"--http", "", "--log-level", "error"}, func(string) string { return "" }, worker.NewRegistry())
	}()
	select {
	case err := <-tried:
		if err != nil {
			t.Fatalf("no connection attempt: %v", err)
		}
	case err := <-done:
		t.Fatalf("Run returned before any connection attempt: %v", err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run stopped while waiting: %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run kept waiting after its context ended")
	}
}

// A worker that may not create the streams (-provision=false) waits for
// the operator's provisioning, which runs beside it in a fresh install (the
// Kubernetes provision Job), instead of exiting: its consumers appear once
// the streams do. Without them by the end of -start-wait, it exits with
// "stream not found".
func TestStartWaitsForStreams(t *testing.T) {
	t.Setenv("OTEL_TRACES_EXPORTER", "none")
	srv := testenv.StartNATS(t)
	_, prefix := testenv.Redis(t)
	names, err := wire.NewNames(prefix)
	if err != nil {
		t.Fatal(err)
	}
	js := jsOf(t, srv)
	nc := srv.Connect(t)
	// The worker's check of the jobs stream is a request on this subject.
	checks, err := nc.SubscribeSync("$JS.API.STREAM.INFO." + names.JobsStream())
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	args := []string{"--nats", srv.URL, "--redis", testenv.RedisURL(t), "--prefix", prefix,
		"--http", "", "--log-level", "error", "--provision=false"}

	// A setup runs only once the streams exist (its listeners create
	// consumers on them).
	setupRan := make(chan bool, 2)
	setup := func(ctx context.Context, env *service.Env) error {
		_, err := env.JS.Stream(ctx, names.JobsStream())
		setupRan <- err == nil
		return nil
	}

	// Never provisioned: the worker gives up after its wait.
	start := time.Now()
	err = service.Run(context.Background(), append(args, "--start-wait", "1s"), func(string) string { return "" }, worker.NewRegistry(), setup)
	if !errors.Is(err, jetstream.ErrStreamNotFound) || !strings.Contains(err.Error(), "gave up waiting") {
		t.Fatalf("Run without streams: %v, want stream not found after waiting", err)
	}
	if len(setupRan) > 0 {
		t.Fatal("the setup ran without the streams")
	}
	if d := time.Since(start); d < time.Second {
		t.Fatalf("Run gave up after %s, before its 1 s wait", d)
	}
	for { // drop the checks of that run
		if _, err := checks.NextMsg(10 * time.Millisecond); err != nil {
			break
		}
	}

	// Provisioned while it waits: it starts.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- service.Run(ctx, args, func(string) string { return "" }, worker.NewRegistry(), setup) }()
	if _, err := checks.NextMsg(30 * time.Second); err != nil {
		t.Fatalf("the worker did not check the streams: %v", err)
	}
	select {
	case err := <-done:
		t.Fatalf("Run returned instead of waiting for the streams: %v", err)
	default:
	}
	if err := streams.Ensure(context.Background(), js, streams.Config{Names: names}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, func() bool {
		_, err := js.Consumer(context.Background(), names.JobsStream(), names.JobsConsumer("root", 0))
		return err == nil
	}, "the worker's consumer after the streams were provisioned")
	if sawStreams := <-setupRan; !sawStreams {
		t.Fatal("the setup ran before the streams existed")
	}
	select {
	case err := <-done:
		t.Fatalf("Run returned: %v", err)
	default:
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run after a graceful stop: %v", err)
	}
}
