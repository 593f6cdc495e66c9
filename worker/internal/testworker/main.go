// Command testworker is a worker process for the crash and fleet tests: it
// runs test jobs against the NATS and Redis named in its environment.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/connector-go/connector/dispatcher"
	"github.com/connector-go/connector/job"
	"github.com/connector-go/connector/worker"
	"github.com/connector-go/connector/worker/internal/testjobs"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "testworker:", err)
		os.Exit(1)
	}
}

func run() error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	nc, err := nats.Connect(os.Getenv("TW_NATS"), nats.MaxReconnects(-1))
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	opt, err := redis.ParseURL(os.Getenv("TW_REDIS"))
	if err != nil {
		return err
	}
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	prefix := os.Getenv("TW_PREFIX")
	if os.Getenv("TW_MODE") == "produce" {
		return produce(ctx, js, opt, prefix)
	}
	ackWait, _ := time.ParseDuration(os.Getenv("TW_ACK_WAIT"))
	if ackWait == 0 {
		ackWait = 2 * time.Second
	}
	conc, _ := strconv.Atoi(os.Getenv("TW_CONCURRENCY"))
	if conc == 0 {
		conc = 4
	}
	log, _ := zap.NewDevelopment()
	reg := worker.NewRegistry()
	testjobs.Register(reg, rdb, prefix, os.Getenv("TW_NAME"))
	testjobs.RegisterProbe(reg, rdb, prefix)
	testjobs.RegisterFleet(reg, rdb, prefix, os.Getenv("TW_NAME"))
	w, err := worker.New(js, reg, worker.WithPrefix(prefix), worker.WithRedis(rdb), worker.WithLogger(log),
		worker.WithAckWait(ackWait), worker.WithConcurrency(conc), worker.WithName(os.Getenv("TW_NAME")),
		worker.WithRetryPattern(job.RetryPattern{1: 200 * time.Millisecond}),
		worker.WithChannels(os.Getenv("TW_CHANNELS")))
	if err != nil {
		return err
	}
	if err := w.Setup(ctx); err != nil {
		return err
	}
	// Tells tests this process is about to pull (Run's Setup finds the
	// consumers there).
	rdb.Set(ctx, prefix+":up:"+os.Getenv("TW_NAME"), "1", time.Hour)
	go func() {
		<-ctx.Done()
		// Tells tests the signal was seen (signals are asynchronous).
		rdb.Set(context.Background(), prefix+":stopping:"+os.Getenv("TW_NAME"), "1", time.Minute)
	}()
	return w.Run(ctx)
}

// produce is the producer mode (TW_MODE=produce): TW_PRODUCE_N goroutines
// enqueue a testjobs.Probe with the identity key TW_IDENTITY, all at once.
// The process counts itself ready (INCR <prefix>:produce:ready), waits for
// the go signal (an element on the list <prefix>:produce:go), enqueues, and
// pushes "<name>/<i>=<id>" to <prefix>:produce:ids for every enqueue. Any
// error exits non-zero.
func produce(ctx context.Context, js jetstream.JetStream, opt *redis.Options, prefix string) error {
	name := os.Getenv("TW_NAME")
	n, _ := strconv.Atoi(os.Getenv("TW_PRODUCE_N"))
	if n == 0 {
		n = 1
	}
	key := os.Getenv("TW_IDENTITY")
	// A connection per goroutine, all dialled before the go signal, so the
	// enqueues really overlap in Redis (not serialised by pool dialling).
	opt.PoolSize = n + 4
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	d, err := dispatcher.New(js, dispatcher.WithPrefix(prefix), dispatcher.WithRedis(rdb))
	if err != nil {
		return err
	}
	start := make(chan struct{})
	ids := make([]string, n)
	errs := make([]error, n)
	var ready, done sync.WaitGroup
	for i := 0; i < n; i++ {
		ready.Add(1)
		done.Add(1)
		go func(i int) {
			defer done.Done()
			err := rdb.Ping(ctx).Err()
			ready.Done()
			<-start
			if err != nil {
				errs[i] = err
				return
			}
			ids[i], errs[i] = d.Enqueue(ctx, testjobs.Probe{Key: "identity", N: i}, job.WithIdentityKey(key))
		}(i)
	}
	ready.Wait()
	if err := rdb.Incr(ctx, prefix+":produce:ready").Err(); err != nil {
		return err
	}
	if err := rdb.BLPop(ctx, 30*time.Second, prefix+":produce:go").Err(); err != nil {
		return fmt.Errorf("waiting for the go signal: %w", err)
	}
	close(start)
	done.Wait()
	out := make([]any, 0, n)
	for i := range ids {
		if errs[i] != nil {
			return fmt.Errorf("enqueue %d: %w", i, errs[i])
		}
		out = append(out, fmt.Sprintf("%s/%d=%s", name, i, ids[i]))
	}
	if err := rdb.RPush(ctx, prefix+":produce:ids", out...).Err(); err != nil {
		return err
	}
	return d.Close(ctx)
}
