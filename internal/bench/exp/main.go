package main

import (
	"context"
	"fmt"
	"os"
	"runtime/pprof"
	"strings"
	"sync/atomic"
	"time"

	"github.com/connector-go/connector/dispatcher"
	"github.com/connector-go/connector/internal/bench"
	"github.com/connector-go/connector/internal/devenv"
	"github.com/connector-go/connector/internal/streams"
	"github.com/connector-go/connector/internal/wire"
	"github.com/connector-go/connector/job"
	"github.com/connector-go/connector/worker"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
)

func main() {
	srv, _ := devenv.StartNATS(devenv.NATSOptions{})
	defer srv.Stop()
	nc, _ := nats.Connect(srv.URL)
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	N := 100000
	var rdb redis.UniversalClient
	if os.Getenv("REC") == "1" {
		rdb = redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
	}
	prefix := "exp" + strings.ToLower(wire.NewID()[20:])
	sc := streams.Config{Names: wire.MustNames(prefix)}
	streams.Ensure(ctx, js, sc)
	dopts := []dispatcher.Option{dispatcher.WithPrefix(prefix)}
	if rdb != nil {
		dopts = append(dopts, dispatcher.WithRedis(rdb))
	}
	d, _ := dispatcher.New(js, dopts...)
	payload := bench.Payload{Data: []byte(strings.Repeat("x", 256))}
	items := make([]dispatcher.Item, 10000)
	for i := range items {
		items[i] = dispatcher.Item{Args: payload}
	}
	f, _ := os.Create("/tmp/enq.prof")
	pprof.StartCPUProfile(f)
	t0 := time.Now()
	for i := 0; i < N/10000; i++ {
		if _, err := d.EnqueueMany(ctx, items); err != nil {
			panic(err)
		}
	}
	fmt.Printf("enqueue %.0f/s\n", float64(N)/time.Since(t0).Seconds())
	pprof.StopCPUProfile()
	d.Close(ctx)
	reg := worker.NewRegistry()
	var n atomic.Int64
	done := make(chan struct{})
	worker.MustRegister(reg, func(ctx context.Context, j *job.Job[bench.Payload]) (string, error) {
		if n.Add(1) == int64(N) {
			close(done)
		}
		return "", nil
	})
	wopts := []worker.Option{worker.WithPrefix(prefix)}
	if rdb != nil {
		wopts = append(wopts, worker.WithRedis(rdb))
	}
	w, _ := worker.New(js, reg, wopts...)
	_ = w.Setup(ctx)
	f2, _ := os.Create("/tmp/run.prof")
	pprof.StartCPUProfile(f2)
	t0 = time.Now()
	wctx, cancel := context.WithCancel(ctx)
	go w.Run(wctx)
	<-done
	fmt.Printf("run %.0f/s\n", float64(N)/time.Since(t0).Seconds())
	pprof.StopCPUProfile()
	mf, _ := os.Create("/tmp/mem.prof")
	pprof.Lookup("allocs").WriteTo(mf, 0)
	mf.Close()
	cancel()
	for _, s := range []string{sc.Names.JobsStream(), sc.Names.DeadStream(), sc.Names.EventsStream()} {
		js.DeleteStream(ctx, s)
	}
}
