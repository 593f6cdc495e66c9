package bindings_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/connector-go/connector/bindings"
	"github.com/connector-go/connector/internal/testenv"
)

// storeOps reads the connector.store.op.duration histogram: per
// "op/outcome", the number of observations and their sum in seconds.
func storeOps(t *testing.T, r *sdkmetric.ManualReader) (count map[string]uint64, sum map[string]float64, bounds []float64) {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	count, sum = map[string]uint64{}, map[string]float64{}
	for _, sm := range rm.ScopeMetrics {
		if sm.Scope.Name != "github.com/connector-go/connector" {
			continue
		}
		for _, m := range sm.Metrics {
			if m.Name != "connector.store.op.duration" {
				continue
			}
			if m.Unit != "s" {
				t.Errorf("unit %q, want s", m.Unit)
			}
			h, ok := m.Data.(metricdata.Histogram[float64])
			if !ok {
				t.Fatalf("connector.store.op.duration is a %T, want a float64 histogram", m.Data)
			}
			for _, dp := range h.DataPoints {
				op, _ := dp.Attributes.Value("store.op")
				outcome, _ := dp.Attributes.Value("store.outcome")
				if dp.Attributes.Len() != 2 {
					t.Errorf("attributes %v, want only store.op and store.outcome", dp.Attributes.ToSlice())
				}
				k := op.AsString() + "/" + outcome.AsString()
				count[k] += dp.Count
				sum[k] += dp.Sum
				bounds = dp.Bounds
			}
		}
	}
	return count, sum, bounds
}

// With WithMeterProvider every Redis operation of the Store, run for real
// against Redis, is timed in connector.store.op.duration{store.op,
// store.outcome}: one observation per call (a batch of 2,500 ids, three
// HMGETs in one pipeline, is one), with the outcome the call returned.
// Calls refused before reaching Redis are not recorded.
func TestStoreOpMetrics(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	rdb, prefix := testenv.Redis(t)
	s := bindings.New(rdb, prefix, bindings.WithMeterProvider(mp))
	b := s.Binder("shop", "product")
	ctx := context.Background()
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}

	must("bind", b.Bind(ctx, "E1", "L1", time.Now()))
	must("bind again", b.Bind(ctx, "E1", "L1", time.Now()))
	if err := b.Bind(ctx, "E1", "L2", time.Now()); err == nil {
		t.Fatal("conflicting bind succeeded")
	}
	if err := b.Bind(ctx, "", "L3", time.Now()); err == nil { // ErrInvalid: no Redis call
		t.Fatal("bind without external id succeeded")
	}
	_, _, err := b.ToInternal(ctx, "E1")
	must("to internal", err)
	_, _, err = b.ToInternal(ctx, "nope") // not found is ok
	must("to internal (unbound)", err)
	_, _, err = b.ToExternal(ctx, "L1")
	must("to external", err)
	_, _, err = b.SyncDate(ctx, "E1")
	must("sync date", err)
	many := make([]string, 2500)
	for i := range many {
		many[i] = fmt.Sprint("E", i)
	}
	got, err := b.ToInternalMany(ctx, many)
	must("to internal many", err)
	if got["E1"] != "L1" || len(got) != 1 {
		t.Fatalf("ToInternalMany: %v", got)
	}
	_, err = b.ToInternalMany(ctx, nil) // nothing to ask: no Redis call
	must("to internal many (empty)", err)
	_, err = b.ToExternalMany(ctx, []string{"L1", "L9"})
	must("to external many", err)
	_, err = b.SyncDateMany(ctx, []string{"E1"})
	must("sync date many", err)
	must("unbind", b.Unbind(ctx, "E1"))

	l, err := s.Lock(ctx, "shop/product/E1", time.Minute)
	must("lock", err)
	if _, err := s.Lock(ctx, "shop/product/E1", time.Minute); err == nil {
		t.Fatal("second lock succeeded")
	}
	if _, err := s.Lock(ctx, "", time.Minute); err == nil { // ErrInvalid: no Redis call
		t.Fatal("lock without resource succeeded")
	}
	must("extend", l.Extend(ctx, time.Minute))
	must("release", l.Release(ctx))
	if err := l.Release(ctx); err == nil {
		t.Fatal("second release succeeded")
	}
	if err := l.Extend(ctx, time.Minute); err == nil {
		t.Fatal("extend after release succeeded")
	}
	must("mark completed", s.MarkCompleted(ctx, "job-1", "done", time.Minute))
	_, _, err = s.Completed(ctx, "job-1")
	must("completed", err)

	// A Store over a Redis that is down records its failures as errors.
	down := redis.NewClient(&redis.Options{Addr: testenv.FreeAddr(t), MaxRetries: -1, DialTimeout: time.Second, DialerRetries: 1})
	t.Cleanup(func() { _ = down.Close() })
	ds := bindings.New(down, prefix, bindings.WithMeterProvider(mp))
	if err := ds.Binder("shop", "product").Bind(ctx, "E1", "L1", time.Now()); err == nil {
		t.Fatal("bind on a Redis that is down succeeded")
	}
	if _, err := ds.Lock(ctx, "r", time.Minute); err == nil {
		t.Fatal("lock on a Redis that is down succeeded")
	}

	count, sum, bounds := storeOps(t, reader)
	want := map[string]uint64{
		"bind/ok":             2,
		"bind/conflict":       1,
		"bind/error":          1,
		"to_internal/ok":      2,
		"to_external/ok":      1,
		"sync_date/ok":        1,
		"to_internal_many/ok": 1,
		"to_external_many/ok": 1,
		"sync_date_many/ok":   1,
		"unbind/ok":           1,
		"lock/ok":             1,
		"lock/locked":         1,
		"lock/error":          1,
		"extend/ok":           1,
		"extend/lost":         1,
		"release/ok":          1,
		"release/lost":        1,
		"mark_completed/ok":   1,
		"completed/ok":        1,
	}
	for k, n := range want {
		if count[k] != n {
			t.Errorf("%s: %d observations, want %d", k, count[k], n)
		}
		if count[k] > 0 && (sum[k] <= 0 || sum[k] > 30) {
			t.Errorf("%s: %v s in all, want a real latency", k, sum[k])
		}
	}
	for k, n := range count {
		if _, ok := want[k]; !ok {
			t.Errorf("unexpected observations %s: %d", k, n)
		}
	}
	// The documented buckets: 0.2 ms to 1 s.
	if wantB := []float64{0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1}; !slices.Equal(bounds, wantB) {
		t.Errorf("bucket bounds %v, want %v", bounds, wantB)
	}
}

// Without WithMeterProvider nothing is recorded, and a nil provider is the
// same as none.
func TestStoreWithoutMetrics(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	s := bindings.New(rdb, prefix, bindings.WithMeterProvider(nil))
	if err := s.Binder("shop", "product").Bind(context.Background(), "E1", "L1", time.Now()); err != nil {
		t.Fatal(err)
	}
}
