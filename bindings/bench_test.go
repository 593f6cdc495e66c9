package bindings_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/connector-go/connector/bindings"
	"github.com/connector-go/connector/internal/testenv"
)

const benchIDs = 10000

// seedBench binds E0..E9999 to L0..L9999 and returns the binder and the
// external ids.
func seedBench(b *testing.B) (*bindings.Binder, []string) {
	b.Helper()
	rdb, prefix := testenv.Redis(b)
	bd := bindings.New(rdb, prefix).Binder("bench", "product")
	ctx := context.Background()
	ids := make([]string, benchIDs)
	pipe := rdb.Pipeline()
	tag := "{" + prefix + ":bind:bench:product}"
	for i := range ids {
		ids[i] = fmt.Sprintf("E%d", i)
		pipe.HSet(ctx, tag+":e2l", ids[i], fmt.Sprintf("L%d", i))
		pipe.HSet(ctx, tag+":l2e", fmt.Sprintf("L%d", i), ids[i])
	}
	if _, err := pipe.Exec(ctx); err != nil {
		b.Fatal(err)
	}
	if err := bd.Bind(ctx, "E0", "L0", time.Now()); err != nil { // through the API too
		b.Fatal(err)
	}
	return bd, ids
}

// BenchmarkToInternal: one lookup per round trip, from GOMAXPROCS*8
// goroutines (a worker runs many jobs at once).
func BenchmarkToInternal(b *testing.B) {
	bd, ids := seedBench(b)
	ctx := context.Background()
	b.SetParallelism(8)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, found, err := bd.ToInternal(ctx, ids[i%benchIDs]); err != nil || !found {
				b.Errorf("lookup: %v %v", found, err)
				return
			}
			i += 7
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "lookups/s")
}

// BenchmarkToInternalSerial: one goroutine, one lookup per round trip: the
// latency floor.
func BenchmarkToInternalSerial(b *testing.B) {
	bd, ids := seedBench(b)
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if _, found, err := bd.ToInternal(ctx, ids[i%benchIDs]); err != nil || !found {
			b.Fatalf("lookup: %v %v", found, err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "lookups/s")
}

// BenchmarkToInternalMany: batches of 1000 ids, one round trip each; one op
// is one batch, lookups/s counts ids.
func BenchmarkToInternalMany(b *testing.B) {
	bd, ids := seedBench(b)
	ctx := context.Background()
	const batch = 1000
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		off := (i * batch) % benchIDs
		m, err := bd.ToInternalMany(ctx, ids[off:off+batch])
		if err != nil || len(m) != batch {
			b.Fatalf("batch: %d found, %v", len(m), err)
		}
	}
	b.ReportMetric(float64(b.N)*batch/b.Elapsed().Seconds(), "lookups/s")
}

// BenchmarkToInternalManyParallel: batches of 1000 from 2 goroutines per
// core, as several jobs of a worker would.
func BenchmarkToInternalManyParallel(b *testing.B) {
	bd, ids := seedBench(b)
	ctx := context.Background()
	const batch = 1000
	b.SetParallelism(2)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			off := (i * batch) % benchIDs
			m, err := bd.ToInternalMany(ctx, ids[off:off+batch])
			if err != nil || len(m) != batch {
				b.Errorf("batch: %d found, %v", len(m), err)
				return
			}
			i++
		}
	})
	b.ReportMetric(float64(b.N)*batch/b.Elapsed().Seconds(), "lookups/s")
}

// BenchmarkBind: one atomic two-way bind per round trip, parallel.
func BenchmarkBind(b *testing.B) {
	rdb, prefix := testenv.Redis(b)
	bd := bindings.New(rdb, prefix).Binder("bench", "bind")
	ctx := context.Background()
	now := time.Now()
	b.SetParallelism(8)
	var seq = make(chan int, 1)
	seq <- 0
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		n := <-seq
		seq <- n + 1
		i := 0
		for pb.Next() {
			id := fmt.Sprintf("%d-%d", n, i)
			if err := bd.Bind(ctx, "E"+id, "L"+id, now); err != nil {
				b.Errorf("bind: %v", err)
				return
			}
			i++
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "binds/s")
}
