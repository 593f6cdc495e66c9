// Command listenerproc is a worker process for the events package's
// multi-process tests: it runs one listener whose handler records, in
// Redis, how many times each event was handled, the order of each record's
// events, and how many events this process handled.
//
// Keys (P = -prefix, also the subject prefix):
//
//	P:count:<event id>     INCR per handling
//	P:order:<record id>    RPUSH of the event's data "n"
//	P:by:<-id>             INCR per handling by this process
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/connector-go/connector/events"
	"github.com/connector-go/connector/internal/wire"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "listenerproc:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		natsURL    = flag.String("nats", nats.DefaultURL, "NATS URL")
		redisURL   = flag.String("redis", "redis://127.0.0.1:6379/0", "Redis URL")
		prefix     = flag.String("prefix", "", "subject and key prefix")
		id         = flag.String("id", "p", "process id for the by:<id> counter")
		listener   = flag.String("listener", "shared", "listener name")
		model      = flag.String("model", "res.partner", "model listened to")
		partitions = flag.Int("partitions", 4, "listener partitions")
		ackWait    = flag.Duration("ackwait", 2*time.Second, "ack wait")
		work       = flag.Duration("work", 0, "time each handling takes")
	)
	flag.Parse()
	names, err := wire.NewNames(*prefix)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	log, err := zap.NewDevelopment()
	if err != nil {
		return err
	}
	nc, err := nats.Connect(*natsURL, nats.MaxReconnects(-1))
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	opt, err := redis.ParseURL(*redisURL)
	if err != nil {
		return err
	}
	rdb := redis.NewClient(opt)
	defer rdb.Close()

	l, err := events.NewListeners(js, events.WithRedis(rdb), events.WithPrefix(names.Prefix), events.WithLogger(log.Named(*id)),
		events.WithAckWait(*ackWait), events.WithWorkerID(*id))
	if err != nil {
		return err
	}
	err = l.On(*listener, *model, "", func(ctx context.Context, ev events.Event) error {
		if *work > 0 {
			time.Sleep(*work)
		}
		_, err := rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.Incr(ctx, names.RedisKey("count", ev.ID))
			p.RPush(ctx, names.RedisKey("order", ev.RecordID), fmt.Sprint(ev.Data["n"]))
			p.Incr(ctx, names.RedisKey("by", *id))
			return nil
		})
		return err
	}, events.WithPartitions(*partitions))
	if err != nil {
		return err
	}
	return l.Run(ctx)
}
