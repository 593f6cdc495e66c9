package main

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/connector-go/connector/internal/streams"
	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/internal/wire"
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
