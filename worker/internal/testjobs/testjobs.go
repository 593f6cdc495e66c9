// Package testjobs holds the jobs the worker tests run, in-process and in
// separate worker processes.
package testjobs

import (
	"context"
	"time"

	"github.com/connector-go/connector/job"
	"github.com/connector-go/connector/worker"
	"github.com/redis/go-redis/v9"
)

// Slow marks its start, sleeps, then counts its completion: the crash test
// kills a worker between the two.
type Slow struct {
	Key string        `msgpack:"key"`
	For time.Duration `msgpack:"for"`
}

// JobName implements job.Args.
func (Slow) JobName() string { return "test.slow" }

// Register adds the test jobs to reg. Effects go to Redis keys under prefix.
func Register(reg *worker.Registry, rdb redis.UniversalClient, prefix, name string) {
	worker.MustRegister(reg, func(ctx context.Context, j *job.Job[Slow]) (string, error) {
		if err := rdb.RPush(ctx, prefix+":started:"+j.Args.Key, name).Err(); err != nil {
			return "", job.Retry(err)
		}
		select {
		case <-time.After(j.Args.For):
		case <-ctx.Done():
			return "", ctx.Err()
		}
		// The effect: idempotent by job id (a set), counted too.
		if err := rdb.SAdd(ctx, prefix+":done:"+j.Args.Key, j.ID).Err(); err != nil {
			return "", job.Retry(err)
		}
		if err := rdb.RPush(ctx, prefix+":completed:"+j.Args.Key, name).Err(); err != nil {
			return "", job.Retry(err)
		}
		return "slept " + j.Args.For.String() + " on " + name, nil
	})
}
