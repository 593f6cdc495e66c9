package telemetry

import (
	"context"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// Jobs run from milliseconds to hours (timeout_ms is unbounded), and wait in
// the queue as long during a backlog: the job histograms resolve a few
// milliseconds at the bottom and several hours at the top, so that neither a
// 2 ms job nor a 3 h one is lumped with the others (histogram_quantile
// reports at most the highest finite bound).
func TestJobHistogramBucketsSpanMillisecondsToHours(t *testing.T) {
	rd := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(rd))
	defer func() { _ = mp.Shutdown(context.Background()) }()
	m, err := NewMetrics(mp)
	if err != nil {
		t.Fatal(err)
	}
	j := m.Job("export", "root")
	j.Started(context.Background(), 3*time.Hour)
	j.Ended(context.Background(), OutcomeSucceeded, 3*time.Hour)
	j.Started(context.Background(), 2*time.Millisecond)
	j.Ended(context.Background(), OutcomeSucceeded, 2*time.Millisecond)
	var rm metricdata.ResourceMetrics
	if err := rd.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	seen := 0
	for _, sm := range rm.ScopeMetrics {
		for _, mt := range sm.Metrics {
			if mt.Name != MetricJobDuration && mt.Name != MetricJobQueueWait {
				continue
			}
			seen++
			h := mt.Data.(metricdata.Histogram[float64])
			for _, dp := range h.DataPoints {
				b := dp.Bounds
				if b[0] > 0.005 {
					t.Errorf("%s: lowest bound %gs, want 5 ms or less", mt.Name, b[0])
				}
				if top := b[len(b)-1]; top < 4*3600 {
					t.Errorf("%s: highest bound %gs, want 4 h or more", mt.Name, top)
				}
				for i := 1; i < len(b); i++ {
					if b[i] <= b[i-1] {
						t.Fatalf("%s: bounds not increasing: %v", mt.Name, b)
					}
				}
				if len(b) > 24 {
					t.Errorf("%s: %d buckets: each is a series per label set", mt.Name, len(b))
				}
			}
		}
	}
	if seen != 2 {
		t.Fatalf("found %d of the 2 job histograms", seen)
	}
}
