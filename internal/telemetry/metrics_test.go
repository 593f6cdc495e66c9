package telemetry

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
)

func scrape(t *testing.T, h http.Handler) string {
	t.Helper()
	srv := httptest.NewServer(h)
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %d\n%s", resp.StatusCode, b)
	}
	return string(b)
}

func TestMetricsScrape(t *testing.T) {
	ctx := context.Background()
	p, err := Setup(ctx, Config{ServiceName: "connector-test", Prometheus: true, TracesExporter: "none"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Shutdown(context.Background()) })
	m, err := NewMetrics(p.MeterProvider)
	if err != nil {
		t.Fatal(err)
	}
	m.JobEnqueued(ctx, "export_order", "root.export")
	m.JobEnqueued(ctx, "export_order", "root.export")
	m.Job("export_order", "root.export").Started(ctx, 1500*time.Millisecond)
	m.Job("export_order", "root.export").Ended(ctx, OutcomeSucceeded, 250*time.Millisecond)
	m.Job("export_order", "root.export").Started(ctx, 0)
	m.Job("export_order", "root.export").Ended(ctx, OutcomeRetried, time.Second)
	m.Job("import_partner", "root").Started(ctx, time.Millisecond) // still running
	// Through a series handle, as the worker does; one outcome it keeps at
	// hand, one it looks up.
	series := m.Job("export_order", "root.export")
	series.Started(ctx, time.Millisecond)
	series.Ended(ctx, OutcomeSucceeded, time.Millisecond)
	series.Started(ctx, time.Millisecond)
	series.Ended(ctx, "custom", time.Millisecond)
	m.EventHandled(ctx, "export_on_write", "sale.order", "on_record_write", "ok")
	m.StoreOp(ctx, "bind", 2*time.Millisecond, nil)
	m.StoreOp(ctx, "lock", 3*time.Millisecond, errors.New("taken"))
	m.StoreOpOutcome(ctx, "lock", StoreOutcomeLocked, time.Millisecond)
	if err := m.ObserveBacklog(func(ctx context.Context) (map[string]int64, error) {
		return map[string]int64{"workers-root": 42}, nil
	}); err != nil {
		t.Fatal(err)
	}

	health := NewHealth(nil)
	out := scrape(t, health.Handler(p.MetricsHandler))
	for _, want := range []string{
		`connector_jobs_enqueued_total{job_channel="root.export",job_name="export_order"`,
		`connector_jobs_started_total{job_channel="root.export",job_name="export_order"`,
		`connector_jobs_ended_total{job_channel="root.export",job_name="export_order",job_outcome="succeeded"`,
		`connector_jobs_ended_total{job_channel="root.export",job_name="export_order",job_outcome="retried"`,
		`connector_jobs_inflight{job_channel="root"`,
		`connector_jobs_inflight{job_channel="root.export"`,
		`connector_job_queue_wait_seconds_bucket{job_channel="root.export",job_name="export_order"`,
		`connector_job_duration_seconds_count{job_channel="root.export",job_name="export_order",job_outcome="succeeded"`,
		`connector_events_handled_total{event_listener="export_on_write",event_model="sale.order",event_name="on_record_write",event_outcome="ok"`,
		`connector_store_op_duration_seconds_count{otel_scope_name=`,
		`store_op="lock",store_outcome="error"`,
		`store_op="lock",store_outcome="locked"`,
		`store_op="bind",store_outcome="ok"`,
		`connector_consumer_pending{consumer="workers-root"`,
		`target_info{`,
		`service_name="connector-test"`,
		`go_goroutines `,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("scrape lacks %s", want)
		}
	}
	// Values: 2 enqueued, in-flight back to 0 on root.export and 1 on root.
	for prefix, want := range map[string]string{
		`connector_jobs_enqueued_total{job_channel="root.export",job_name="export_order",`:                                "2",
		`connector_jobs_inflight{job_channel="root.export",`:                                                              "0",
		`connector_jobs_ended_total{job_channel="root.export",job_name="export_order",job_outcome="succeeded",`:           "2",
		`connector_jobs_ended_total{job_channel="root.export",job_name="export_order",job_outcome="custom",`:              "1",
		`connector_jobs_started_total{job_channel="root.export",job_name="export_order",`:                                 "4",
		`connector_job_duration_seconds_count{job_channel="root.export",job_name="export_order",job_outcome="succeeded",`: "2",
		`connector_jobs_inflight{job_channel="root",`:                                                                     "1",
		`connector_consumer_pending{consumer="workers-root",`:                                                             "42",
	} {
		line := lineWith(out, prefix)
		if got := line[strings.LastIndexByte(line, ' ')+1:]; got != want {
			t.Errorf("%q = %q, want %s", line, got, want)
		}
	}
	if t.Failed() || testing.Verbose() {
		t.Logf("scrape:\n%s", out)
	}
}

func lineWith(out, prefix string) string {
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, prefix) {
			return l
		}
	}
	return ""
}

func TestNewMetricsNil(t *testing.T) {
	m, err := NewMetrics(nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	m.Job("a", "root").Started(ctx, time.Second)
	m.Job("a", "root").Ended(ctx, OutcomeDead, time.Second)
	if err := m.ObserveBacklog(func(context.Context) (map[string]int64, error) { return nil, nil }); err != nil {
		t.Fatal(err)
	}
	var disabled *Metrics // metrics off: every method is a no-op
	disabled.Job("a", "root").Started(ctx, time.Second)
	disabled.Job("a", "root").Ended(ctx, OutcomeDead, time.Second)
	disabled.JobEnqueued(ctx, "a", "root")
	series := disabled.Job("a", "root")
	if series != nil {
		t.Errorf("Job on disabled metrics: %v, want nil", series)
	}
	series.Started(ctx, time.Second)
	series.Ended(ctx, OutcomeSucceeded, time.Second)
	disabled.EventHandled(ctx, "l", "m", "e", "ok")
	disabled.StoreOp(ctx, "bind", time.Second, nil)
	disabled.StoreOpOutcome(ctx, "lock", StoreOutcomeLocked, time.Second)
	if err := disabled.ObserveBacklog(nil); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkJobMetrics measures a series's Started+Ended per op: 0 allocs/op with
// the noop provider and with the SDK once the label set is cached.
func BenchmarkJobMetrics(b *testing.B) {
	run := func(b *testing.B, m *Metrics) {
		ctx := context.Background()
		m.Job("export_order", "root.export").Started(ctx, time.Millisecond) // warm the cache
		m.Job("export_order", "root.export").Ended(ctx, OutcomeSucceeded, time.Millisecond)
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			m.Job("export_order", "root.export").Started(ctx, time.Millisecond)
			m.Job("export_order", "root.export").Ended(ctx, OutcomeSucceeded, 3*time.Millisecond)
		}
	}
	b.Run("noop", func(b *testing.B) {
		m, err := NewMetrics(nil)
		if err != nil {
			b.Fatal(err)
		}
		run(b, m)
	})
	b.Run("sdk", func(b *testing.B) {
		mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
		defer func() { _ = mp.Shutdown(context.Background()) }()
		m, err := NewMetrics(mp)
		if err != nil {
			b.Fatal(err)
		}
		run(b, m)
	})
	b.Run("sdk-parallel", func(b *testing.B) {
		mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
		defer func() { _ = mp.Shutdown(context.Background()) }()
		m, err := NewMetrics(mp)
		if err != nil {
			b.Fatal(err)
		}
		ctx := context.Background()
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				m.Job("export_order", "root.export").Started(ctx, time.Millisecond)
				m.Job("export_order", "root.export").Ended(ctx, OutcomeSucceeded, 3*time.Millisecond)
			}
		})
	})
}

// TestJobMetricsAllocs pins the benchmark's promise in a test.
func TestJobMetricsAllocs(t *testing.T) {
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	defer func() { _ = mp.Shutdown(context.Background()) }()
	for name, provider := range map[string]*sdkmetric.MeterProvider{"noop": nil, "sdk": mp} {
		var m *Metrics
		var err error
		if provider == nil {
			m, err = NewMetrics(nil)
		} else {
			m, err = NewMetrics(provider)
		}
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		f := func() {
			m.Job("export_order", "root.export").Started(ctx, time.Millisecond)
			m.Job("export_order", "root.export").Ended(ctx, OutcomeSucceeded, 3*time.Millisecond)
			m.StoreOp(ctx, "bind", time.Millisecond, nil)
			m.StoreOpOutcome(ctx, "lock", StoreOutcomeLocked, time.Millisecond)
			m.EventHandled(ctx, "l", "m", "e", "ok")
		}
		f()
		if n := testing.AllocsPerRun(200, f); n > 0 {
			t.Errorf("%s: %.1f allocs per job, want 0", name, n)
		}
	}
}
