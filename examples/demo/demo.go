// Package demo holds the three tiny jobs `connector dev` runs so that a
// newcomer sees jobs flowing, retried and dead-lettered in the log: the
// smallest possible example of typed jobs and their outcomes.
package demo

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/connector-go/connector/job"
	"github.com/connector-go/connector/worker"
	"go.uber.org/zap"
)

// Greet always succeeds.
type Greet struct {
	Name string `msgpack:"name"`
}

// JobName implements job.Args.
func (Greet) JobName() string { return "demo.greet" }

// Flaky fails (retryably) until its third attempt.
type Flaky struct {
	N int `msgpack:"n"`
}

// JobName implements job.Args.
func (Flaky) JobName() string { return "demo.flaky" }

// JobOptions gives Flaky a short retry pattern so the demo shows retries quickly.
func (Flaky) JobOptions() []job.Option {
	return []job.Option{job.WithRetryPattern(job.RetryPattern{1: 2 * time.Second}), job.WithMaxRetries(5)}
}

// Broken fails with a permanent error: it ends in the dead-letter stream.
type Broken struct {
	N int `msgpack:"n"`
}

// JobName implements job.Args.
func (Broken) JobName() string { return "demo.broken" }

// Register adds the demo jobs to reg.
func Register(reg *worker.Registry) {
	worker.MustRegister(reg, func(ctx context.Context, j *job.Job[Greet]) (string, error) {
		return "hello, " + j.Args.Name, nil
	})
	worker.MustRegister(reg, func(ctx context.Context, j *job.Job[Flaky]) (string, error) {
		if j.Attempt < 3 {
			return "", job.Retry(fmt.Errorf("backend timeout on attempt %d", j.Attempt))
		}
		return fmt.Sprintf("worked on attempt %d", j.Attempt), nil
	})
	worker.MustRegister(reg, func(ctx context.Context, j *job.Job[Broken]) (string, error) {
		return "", errors.New("mapping failed: field 'price' is not a number")
	})
}

// Produce enqueues a few demo jobs every interval until ctx ends.
func Produce(ctx context.Context, q job.Enqueuer, every time.Duration, log *zap.Logger) {
	t := time.NewTicker(every)
	defer t.Stop()
	for i := 1; ; i++ {
		for _, a := range []job.Args{Greet{Name: fmt.Sprintf("visitor %d", i)}, Flaky{N: i}} {
			if id, err := q.Enqueue(ctx, a); err != nil {
				if ctx.Err() != nil {
					return
				}
				log.Warn("demo: enqueue failed", zap.Error(err))
			} else {
				log.Info("demo: enqueued", zap.String("job_name", a.JobName()), zap.String("job_id", id))
			}
		}
		if i%3 == 1 {
			if id, err := q.Enqueue(ctx, Broken{N: i}, job.WithDescription("a job that always fails")); err == nil {
				log.Info("demo: enqueued a job that will be dead-lettered", zap.String("job_id", id))
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
