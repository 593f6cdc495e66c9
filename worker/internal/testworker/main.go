// Command testworker is a worker process for the crash and fleet tests: it
// runs test jobs against the NATS and Redis named in its environment.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

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
	w, err := worker.New(js, reg, worker.WithPrefix(prefix), worker.WithRedis(rdb), worker.WithLogger(log),
		worker.WithAckWait(ackWait), worker.WithConcurrency(conc), worker.WithName(os.Getenv("TW_NAME")),
		worker.WithRetryPattern(job.RetryPattern{1: 200 * time.Millisecond}),
		worker.WithChannels(os.Getenv("TW_CHANNELS")))
	if err != nil {
		return err
	}
	go func() {
		<-ctx.Done()
		// Tells tests the signal was seen (signals are asynchronous).
		rdb.Set(context.Background(), prefix+":stopping:"+os.Getenv("TW_NAME"), "1", time.Minute)
	}()
	return w.Run(ctx)
}
