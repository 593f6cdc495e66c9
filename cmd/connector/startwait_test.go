package main

import (
	"context"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/connector-go/connector/internal/streams"
	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/internal/wire"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
)

// `connector worker --provision=false`, as the Kubernetes worker runs,
// waits for the streams that the provisioning Job creates beside it, then
// starts its consumers.
func TestWorkerWaitsForStreams(t *testing.T) {
	srv, nc, js := testenv.JetStream(t)
	_, prefix := testenv.Redis(t)
	names := wire.MustNames(prefix)
	checks, err := nc.SubscribeSync("$JS.API.STREAM.INFO." + names.JobsStream())
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"CONNECTOR_NATS_URL": srv.URL, "CONNECTOR_REDIS_URL": testenv.RedisURL(t), "CONNECTOR_PREFIX": prefix,
		"CONNECTOR_LOG_LEVEL": "error", "CONNECTOR_SHUTDOWN_GRACE": "5s", "CONNECTOR_PROVISION": "false",
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	var stderr testenv.Buffer
	go func() {
		done <- run(ctx, []string{"worker", "--http="}, io.Discard, &stderr, func(k string) string { return env[k] })
	}()
	if _, err := checks.NextMsg(30 * time.Second); err != nil {
		t.Fatalf("the worker did not check the streams: %v\n%s", err, stderr.String())
	}
	if err := streams.Ensure(ctx, js, streams.Config{Names: names}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, func() bool {
		select {
		case err := <-done:
			done <- err
			t.Fatalf("connector worker returned instead of waiting for the streams: %v\n%s", err, stderr.String())
		default:
		}
		_, err := js.Consumer(ctx, names.JobsStream(), names.JobsConsumer("root", 0))
		return err == nil
	}, "the worker's consumer after the streams were provisioned")
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("connector worker: %v\n%s", err, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("connector worker did not stop")
	}
}

// `connector streams provision --start-wait` (the Kubernetes provisioning
// Job sets CONNECTOR_START_WAIT) waits for a NATS that is still starting;
// without it, the command fails at once, as the other operations do.
func TestProvisionWaitsForNATS(t *testing.T) {
	prefix := testenv.Prefix(t)
	names := wire.MustNames(prefix)
	none := func(string) string { return "" }

	refused := "nats://" + testenv.FreeAddr(t)
	start := time.Now()
	err := run(context.Background(), []string{"streams", "provision", "--nats", refused, "--prefix", prefix}, io.Discard, io.Discard, none)
	if err == nil || !strings.Contains(err.Error(), "connect: nats") {
		t.Fatalf("provision against nothing: %v, want a connect error", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("provision without --start-wait took %s, want it to fail at once", d)
	}

	addr, tried := testenv.FirstAttempt(t)
	done := make(chan error, 1)
	var stdout testenv.Buffer
	go func() {
		done <- run(context.Background(), []string{"streams", "provision", "--nats", "nats://" + addr, "--prefix", prefix, "--log-level", "error"},
			&stdout, io.Discard, func(k string) string { return map[string]string{"CONNECTOR_START_WAIT": "30s"}[k] })
	}()
	select {
	case err := <-tried:
		if err != nil {
			t.Fatalf("no connection attempt: %v", err)
		}
	case err := <-done:
		t.Fatalf("provision returned before any connection attempt: %v", err)
	}
	_, port, _ := net.SplitHostPort(addr)
	p, _ := strconv.Atoi(port)
	srv := testenv.StartNATS(t, func(o *server.Options) { o.Port = p })
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("provision: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("provision did not end after NATS came up")
	}
	js, err := jetstream.New(srv.Connect(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{names.JobsStream(), names.DeadStream(), names.EventsStream()} {
		if _, err := js.Stream(context.Background(), s); err != nil {
			t.Errorf("stream %s: %v", s, err)
		}
	}
	if !strings.Contains(stdout.String(), "provisioned") {
		t.Errorf("output %q", stdout.String())
	}
}
