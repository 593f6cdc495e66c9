package worker_test

import (
	"context"
	"testing"
	"time"

	"github.com/connector-go/connector/internal/telemetry"
	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/internal/wire"
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
