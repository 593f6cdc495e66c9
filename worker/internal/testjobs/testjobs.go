// Package testjobs holds the jobs the worker tests run, in-process and in
// separate worker processes.
package testjobs

import (
	"context"
	"fmt"
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

// Probe measures concurrency: it counts itself running under Key, keeps
// the maximum seen, logs its start order, and can fail its first attempts.
type Probe struct {
	Key   string        `msgpack:"key"`
	N     int           `msgpack:"n"`
	For   time.Duration `msgpack:"for"`
	Fails int           `msgpack:"fails"`
}

// JobName implements job.Args.
func (Probe) JobName() string { return "test.probe" }

var probeStart = redis.NewScript(`
local n = redis.call('INCR', KEYS[1])
local m = tonumber(redis.call('GET', KEYS[2]) or '0')
if n > m then redis.call('SET', KEYS[2], n) end
redis.call('RPUSH', KEYS[3], ARGV[1])
return n
`)

// RegisterProbe adds the Probe job to reg.
func RegisterProbe(reg *worker.Registry, rdb redis.UniversalClient, prefix string) {
	worker.MustRegister(reg, func(ctx context.Context, j *job.Job[Probe]) (string, error) {
		k := prefix + ":probe:" + j.Args.Key
		if err := probeStart.Run(ctx, rdb, []string{k + ":running", k + ":max", k + ":starts"},
			fmt.Sprintf("%d@%d", j.Args.N, time.Now().UnixMilli())).Err(); err != nil {
			return "", job.Retry(err)
		}
		defer rdb.Decr(context.WithoutCancel(ctx), k+":running")
		select {
		case <-time.After(j.Args.For):
		case <-ctx.Done():
			return "", ctx.Err()
		}
		if j.Attempt <= j.Args.Fails {
			return "", job.RetryAfter(fmt.Errorf("probe %d fails attempt %d", j.Args.N, j.Attempt), 300*time.Millisecond)
		}
		rdb.RPush(ctx, k+":done", j.Args.N)
		return "", nil
	})
}

// Stamp records the id of each of its runs and the worker that ran it:
// the periodic-job tests count ticks by job id.
type Stamp struct {
	Key string `msgpack:"key"`
}

// JobName implements job.Args.
func (Stamp) JobName() string { return "test.stamp" }

// Ordered records its start order, with the worker that started it, under
// Key: the priority tests across processes read it.
type Ordered struct {
	Key string        `msgpack:"key"`
	N   int           `msgpack:"n"`
	For time.Duration `msgpack:"for"`
}

// JobName implements job.Args.
func (Ordered) JobName() string { return "test.ordered" }

// RegisterFleet adds Stamp and Ordered to reg; name is the worker's name.
// Stamp pushes "<job id>@<name>" to <prefix>:stamp:<key>; Ordered pushes
// "<n>@<name>" to <prefix>:ordered:<key>:starts when it starts and n to
// <prefix>:ordered:<key>:done when it ends.
func RegisterFleet(reg *worker.Registry, rdb redis.UniversalClient, prefix, name string) {
	worker.MustRegister(reg, func(ctx context.Context, j *job.Job[Stamp]) (string, error) {
		if err := rdb.RPush(ctx, prefix+":stamp:"+j.Args.Key, j.ID+"@"+name).Err(); err != nil {
			return "", job.Retry(err)
		}
		return "", nil
	})
	worker.MustRegister(reg, func(ctx context.Context, j *job.Job[Ordered]) (string, error) {
		k := prefix + ":ordered:" + j.Args.Key
		if err := rdb.RPush(ctx, k+":starts", fmt.Sprintf("%d@%s", j.Args.N, name)).Err(); err != nil {
			return "", job.Retry(err)
		}
		select {
		case <-time.After(j.Args.For):
		case <-ctx.Done():
			return "", ctx.Err()
		}
		rdb.RPush(ctx, k+":done", j.Args.N)
		return "", nil
	})
}
