package worker_test

import (
	"context"
	"testing"
	"time"

	"github.com/connector-go/connector/internal/telemetry"
	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/internal/wire"
	"github.com/connector-go/connector/job"
	"github.com/connector-go/connector/worker"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// Job names the worker does not know come from whoever publishes: the
// metrics of their dead letters carry no name label, so a publisher
// cannot grow the number of series without bound (docs/observability.md:
// label values stay bounded).
func TestUnknownJobNamesAreNotMetricLabels(t *testing.T) {
	e := newEnv(t)
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	e.start(worker.NewRegistry(), worker.WithMeterProvider(mp))

	ctx := context.Background()
	const name = "publisher.made.up.name"
	b, err := wire.Marshal(map[string]any{"v": 1, "id": "U1", "name": name, "args": map[string]any{}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.js.Publish(ctx, e.names().JobsSubject("root", 1), b); err != nil {
		t.Fatal(err)
	}
	var rm metricdata.ResourceMetrics
	ended := func() []metricdata.DataPoint[int64] {
		rm = metricdata.ResourceMetrics{}
		if err := reader.Collect(ctx, &rm); err != nil {
			t.Fatal(err)
		}
		var out []metricdata.DataPoint[int64]
		for _, sm := range rm.ScopeMetrics {
			for _, m := range sm.Metrics {
				if s, ok := m.Data.(metricdata.Sum[int64]); ok && m.Name == telemetry.MetricJobsEnded {
					out = append(out, s.DataPoints...)
				}
			}
		}
		return out
	}
	testenv.Eventually(t, 15*time.Second, func() bool { return len(ended()) > 0 }, "the dead letter counted")
	for _, dp := range ended() {
		if v, ok := dp.Attributes.Value(telemetry.AttrJobName); ok && v.AsString() == name {
			t.Fatalf("job.name label %q taken from an unregistered job", name)
		}
	}
}

// The channel a job's envelope names comes from whoever publishes it: the
// worker labels its metrics with the configured channel the job ran
// under, so that a publisher writing made-up channels (a sub-channel per
// record, say) cannot grow the number of series without bound.
func TestEnvelopeChannelsAreNotMetricLabels(t *testing.T) {
	e := newEnv(t)
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	reg := worker.NewRegistry()
	worker.MustRegister(reg, func(ctx context.Context, j *job.Job[ImportProduct]) (string, error) { return "", nil })
	e.start(reg, worker.WithMeterProvider(mp), worker.WithChannels("root, root.shop:2"))

	ctx := context.Background()
	const made = "root.shop.record.r4711"
	id, err := e.d.Enqueue(ctx, ImportProduct{ExternalID: "4711"}, job.WithChannel(made))
	if err != nil {
		t.Fatal(err)
	}
	e.waitState(id, job.StateDone, 30*time.Second)
	channels := func() map[string]bool {
		var rm metricdata.ResourceMetrics
		if err := reader.Collect(ctx, &rm); err != nil {
			t.Fatal(err)
		}
		out := map[string]bool{}
		for _, sm := range rm.ScopeMetrics {
			for _, m := range sm.Metrics {
				if s, ok := m.Data.(metricdata.Sum[int64]); ok && m.Name == telemetry.MetricJobsEnded {
					for _, dp := range s.DataPoints {
						v, _ := dp.Attributes.Value(telemetry.AttrJobChannel)
						out[v.AsString()] = true
					}
				}
			}
		}
		return out
	}
	testenv.Eventually(t, 15*time.Second, func() bool { return len(channels()) > 0 }, "the job's end counted")
	if got := channels(); !got["root.shop"] || got[made] {
		t.Fatalf("job.channel labels %v: want the configured root.shop, not the envelope's %s", got, made)
	}
}
