package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/connector-go/connector/examples/catalog"
	"github.com/connector-go/connector/internal/streams"
	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/internal/wire"
)

// The catalog command publishes the events of its changes, with their
// origin, into the events stream of its prefix, traces each publish (the
// event carries the span's traceparent; the span reaches the OTLP endpoint
// under service name "catalog" at the latest when the command stops), and
// stops on cancel.
func TestCatalogPublishesEvents(t *testing.T) {
	var (
		mu     sync.Mutex
		traces [][]byte
	)
	otlp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if r.URL.Path == "/v1/traces" {
			mu.Lock()
			traces = append(traces, body)
			mu.Unlock()
		}
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	defer otlp.Close()
	t.Setenv("OTEL_TRACES_EXPORTER", "otlp")
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.URL)
	t.Setenv("OTEL_SERVICE_NAME", "")
	srv, _, js := testenv.JetStream(t)
	prefix := testenv.Prefix(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	names := wire.MustNames(prefix)
	if err := streams.Ensure(ctx, js, streams.Config{Names: names, Memory: true}); err != nil {
		t.Fatal(err)
	}
	addrc := make(chan net.Addr, 1)
	done := make(chan error, 1)
	env := map[string]string{"CONNECTOR_LOG_LEVEL": "error"}
	go func() {
		done <- run(ctx, []string{"--addr", "127.0.0.1:0", "--nats", srv.URL, "--prefix", prefix},
			func(k string) string { return env[k] }, func(a net.Addr) { addrc <- a })
	}()
	var addr net.Addr
	select {
	case addr = <-addrc:
	case err := <-done:
		t.Fatal(err)
	case <-time.After(10 * time.Second):
		t.Fatal("catalog did not start")
	}
	req, _ := http.NewRequest("POST", "http://"+addr.String()+"/products", strings.NewReader(`{"name": "Cup", "price": 6.5}`))
	req.Header.Set(catalog.OriginHeader, "shop-eu")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("create: %s", resp.Status)
	}
	s, err := js.Stream(ctx, names.EventsStream())
	if err != nil {
		t.Fatal(err)
	}
	msg, err := s.GetLastMsgForSubject(ctx, names.EventsWildcard())
	if err != nil {
		t.Fatal(err)
	}
	body, err := wire.DecodeEvent(msg.Data, 0)
	if err != nil {
		t.Fatal(err)
	}
	if body.Model != "product" || body.Event != "create" || body.RecordID != "1" || body.Origin != "shop-eu" {
		t.Fatalf("event %+v", body)
	}
	traceparent := msg.Header.Get("traceparent")
	if traceparent == "" {
		t.Fatalf("the event carries no traceparent: headers %v", msg.Header)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("catalog did not stop")
	}
	// Shutdown flushed the span: the OTLP request names the service and
	// holds the trace id of the event's traceparent (version-traceid-...).
	parts := strings.Split(traceparent, "-")
	traceID, err := hex.DecodeString(parts[1])
	if len(parts) != 4 || err != nil {
		t.Fatalf("traceparent %q", traceparent)
	}
	mu.Lock()
	defer mu.Unlock()
	all := bytes.Join(traces, nil)
	// The resource attribute service.name="catalog", protobuf-encoded
	// (KeyValue{key, value: AnyValue{string_value}}).
	serviceName := []byte("service.name\x12\x09\x0a\x07catalog")
	if !bytes.Contains(all, serviceName) || !bytes.Contains(all, traceID) {
		t.Fatalf("%d OTLP trace requests; want the publish span of service catalog with trace id %x", len(traces), traceID)
	}
}
