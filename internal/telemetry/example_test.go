package telemetry_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/connector-go/connector/internal/telemetry"
	"github.com/nats-io/nats.go"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

func ExampleRedact() {
	fmt.Println(telemetry.Redact("connect nats://worker:s3cret@nats:4222 failed"))
	fmt.Println(telemetry.Redact("redis://:s3cret@redis:6379/0"))
	fmt.Println(telemetry.Redact("GET https://shop.example.com/api/orders?page=2&token=abc"))
	// Output:
	// connect nats://worker:xxxxx@nats:4222 failed
	// redis://:xxxxx@redis:6379/0
	// GET https://shop.example.com/api/orders?page=2&token=xxxxx
}

// A job's trace crosses NATS in the message headers: the enqueuer starts a
// producer span (which writes "traceparent"), the worker starts a consumer
// span from the received headers.
func ExampleStartConsumerSpan() {
	tp := sdktrace.NewTracerProvider() // in main: Setup(...).TracerProvider
	defer func() { _ = tp.Shutdown(context.Background()) }()
	tr := tp.Tracer("github.com/connector-go/connector")

	msg := nats.NewMsg("CONNECTOR.jobs.root")
	_, send := telemetry.StartProducerSpan(context.Background(), tr, "CONNECTOR_JOBS", "job-42", msg.Header,
		telemetry.AttrJobName.String("export_order"))
	// js.PublishMsg(ctx, msg) ...
	send.End()

	// In the worker, with the delivered message's headers:
	_, process := telemetry.StartConsumerSpan(context.Background(), tr, telemetry.ParentMode,
		"CONNECTOR_JOBS", "workers-root", "job-42", msg.Header)
	defer process.End()

	fmt.Println("traceparent header:", msg.Header.Get("traceparent") != "")
	fmt.Println("same trace:", process.SpanContext().TraceID() == send.SpanContext().TraceID())
	// Output:
	// traceparent header: true
	// same trace: true
}

// Metrics and probes as main wires them: Setup builds a Prometheus-backed
// MeterProvider, Health serves /livez, /readyz and /metrics.
func ExampleHealth() {
	ctx := context.Background()
	p, err := telemetry.Setup(ctx, telemetry.Config{ServiceName: "connector-worker", Prometheus: true, TracesExporter: "none"})
	if err != nil {
		panic(err)
	}
	defer func() { _ = p.Shutdown(ctx) }()
	m, err := telemetry.NewMetrics(p.MeterProvider)
	if err != nil {
		panic(err)
	}
	m.Job("export_order", "root").Started(ctx, 2*time.Second)
	m.Job("export_order", "root").Ended(ctx, telemetry.OutcomeSucceeded, 300*time.Millisecond)

	h := telemetry.NewHealth(nil)
	h.AddCheck("backend", func(ctx context.Context) error { return nil })
	// In main: go h.ListenAndServe(ctx, ":8080", p.MetricsHandler)
	srv := httptest.NewServer(h.Handler(p.MetricsHandler))
	defer srv.Close()

	for _, path := range []string{"/livez", "/readyz", "/metrics"} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			panic(err)
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		fmt.Println(path, resp.StatusCode, strings.Contains(string(body), `connector_jobs_ended_total{job_channel="root",job_name="export_order",job_outcome="succeeded"`))
	}
	// Output:
	// /livez 200 false
	// /readyz 200 false
	// /metrics 200 true
}
