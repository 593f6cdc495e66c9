package main

import (
	"context"
	"fmt"
	"io"
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
	srv := testenv.StartNATS(t, func(o *server.Options) { o.Port = testenv.Port(t, addr) })
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

// A fresh NATS cluster comes up one server at a time: provisioning R3
// streams against its first server meets no meta leader, then too few
// JetStream peers. `connector streams provision --start-wait` waits
// through both and provisions once the three servers are up.
func TestProvisionWaitsForACluster(t *testing.T) {
	prefix := testenv.Prefix(t)
	names := wire.MustNames(prefix)
	var client, routes [3]int
	for i := range 3 {
		client[i], routes[i] = testenv.Port(t, testenv.FreeAddr(t)), testenv.Port(t, testenv.FreeAddr(t))
	}
	node := func(i int) func(*server.Options) {
		return func(o *server.Options) {
			o.ServerName = "n" + strconv.Itoa(i+1)
			o.Port = client[i]
			o.Cluster = server.ClusterOpts{Name: "c-" + prefix, Host: "127.0.0.1", Port: routes[i]}
			o.Routes = server.RoutesFromStr(fmt.Sprintf("nats://127.0.0.1:%d,nats://127.0.0.1:%d,nats://127.0.0.1:%d", routes[0], routes[1], routes[2]))
		}
	}
	first := testenv.StartNATS(t, node(0))
	nc := first.Connect(t)
	checks, err := nc.SubscribeSync("$JS.API.STREAM.>")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	var stdout, stderr testenv.Buffer
	go func() {
		done <- run(context.Background(), []string{"streams", "provision", "--nats", first.URL, "--prefix", prefix,
			"--replicas", "3", "--start-wait", "2m", "--log-level", "warn"}, &stdout, &stderr, func(string) string { return "" })
	}()
	// It asks the first server while the cluster cannot answer, fails
	// (an attempt is a stream info request, then a create) and tries again.
	for i := range 3 {
		if _, err := checks.NextMsg(30 * time.Second); err != nil {
			t.Fatalf("JetStream request %d: %v", i+1, err)
		}
	}
	select {
	case err := <-done:
		t.Fatalf("provision returned with one server of three: %v\n%s", err, stderr.String())
	default:
	}
	testenv.StartNATS(t, node(1))
	testenv.StartNATS(t, node(2))
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("provision: %v\n%s", err, stderr.String())
		}
	case <-time.After(110 * time.Second):
		t.Fatalf("provision did not end once the cluster was up\n%s", stderr.String())
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(context.Background(), names.JobsStream())
	if err != nil {
		t.Fatal(err)
	}
	if r := s.CachedInfo().Config.Replicas; r != 3 {
		t.Errorf("jobs stream with %d replicas, want 3", r)
	}
}
