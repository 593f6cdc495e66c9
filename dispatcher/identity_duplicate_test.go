package dispatcher_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/connector-go/connector/dispatcher"
	"github.com/connector-go/connector/job"
	"github.com/redis/go-redis/v9"
)

// enqueueOne enqueues one job, by Enqueue or by EnqueueMany.
func (e *genv) enqueueOne(bulk bool, args GraphStep, opts ...job.Option) string {
	e.t.Helper()
	ctx := context.Background()
	if !bulk {
		id, err := e.d.Enqueue(ctx, args, opts...)
		if err != nil {
			e.t.Fatal(err)
		}
		return id
	}
	res, err := e.d.EnqueueMany(ctx, []dispatcher.Item{{Args: args, Options: opts}})
	if err != nil {
		e.t.Fatal(err)
	}
	return res[0].ID
}

// jobsMsgs is how many messages the jobs stream holds.
func (e *genv) jobsMsgs() uint64 {
	e.t.Helper()
	s, err := e.js.Stream(context.Background(), e.names.JobsStream())
	if err != nil {
		e.t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	return info.State.Msgs
}

// identityHolder is the job id an identity key names ("" if free).
func (e *genv) identityHolder(key string) string {
	e.t.Helper()
	v, err := e.rdb.Get(context.Background(), e.names.RedisKey("identity", key)).Result()
	if errors.Is(err, redis.Nil) {
		return ""
	}
	if err != nil {
		e.t.Fatal(err)
	}
	return v
}

// A job stored with its identity key whose enqueue freed the key (both
// acknowledgements lost: ErrOutcomeUnknown), enqueued again with its id
// as documented, is answered as a duplicate by the stream: it is still
// pending, so its key must name it again. Before, the duplicate dropped
// the claim, and the next enqueue with the key stored a second pending
// job with it (both ran). So for a job waiting for its ETA (its schedule
// message holds the same envelope), and in a bulk enqueue.
func TestDuplicateOfAPendingJobKeepsItsIdentityKey(t *testing.T) {
	for _, bulk := range []bool{false, true} {
		for _, delayed := range []bool{false, true} {
			e := newGenv(t) // no worker: the job stays pending
			const key = "order:9"
			opts := []job.Option{job.WithIdentityKey(key)}
			if delayed {
				opts = append(opts, job.WithDelay(time.Hour))
			}
			x := e.enqueueOne(bulk, GraphStep{Name: "x"}, opts...)
			// Step 1's outcome: stored, its key freed by the lost acks.
			if err := e.rdb.Del(context.Background(), e.names.RedisKey("identity", key)).Err(); err != nil {
				t.Fatal(err)
			}
			// Step 2: the caller's retry with the job's id.
			if id := e.enqueueOne(bulk, GraphStep{Name: "x"}, append(opts, job.WithID(x))...); id != x {
				t.Fatalf("bulk %v, delayed %v: the retry answered %q, want %s", bulk, delayed, id, x)
			}
			if h := e.identityHolder(key); h != x {
				t.Fatalf("bulk %v, delayed %v: after the duplicate the key names %q, want the pending job %s", bulk, delayed, h, x)
			}
			// Step 3: a new enqueue with the key is that pending job.
			if id := e.enqueueOne(bulk, GraphStep{Name: "y"}, opts...); id != x {
				t.Fatalf("bulk %v, delayed %v: a new enqueue with the key stored job %s beside the pending %s", bulk, delayed, id, x)
			}
			if n := e.jobsMsgs(); n != 1 {
				t.Fatalf("bulk %v, delayed %v: the jobs stream holds %d messages, want 1", bulk, delayed, n)
			}
		}
	}
}

// A duplicate whose stored message is not that job with that key still
// frees the key: nothing pending would ever release it.
func TestDuplicateOfAJobNotPendingWithTheKeyFreesIt(t *testing.T) {
	const key = "order:10"
	cases := []struct {
		name string
		// stored enqueues job x as it was first, and leaves the stream
		// and the key as they are when the duplicate comes.
		stored func(e *genv, bulk bool, x string)
	}{
		{"consumed", func(e *genv, bulk bool, x string) {
			e.enqueueOne(bulk, GraphStep{Name: "x"}, job.WithID(x), job.WithIdentityKey(key))
			// Run and acked (a work queue drops the message), its key
			// released as it started.
			s, err := e.js.Stream(context.Background(), e.names.JobsStream())
			if err != nil {
				e.t.Fatal(err)
			}
			if err := s.Purge(context.Background()); err != nil {
				e.t.Fatal(err)
			}
			if err := e.rdb.Del(context.Background(), e.names.RedisKey("identity", key)).Err(); err != nil {
				e.t.Fatal(err)
			}
		}},
		{"without a key", func(e *genv, bulk bool, x string) {
			e.enqueueOne(bulk, GraphStep{Name: "x"}, job.WithID(x))
		}},
		{"another key", func(e *genv, bulk bool, x string) {
			e.enqueueOne(bulk, GraphStep{Name: "x"}, job.WithID(x), job.WithIdentityKey("order:other"))
		}},
	}
	for _, c := range cases {
		for _, bulk := range []bool{false, true} {
			e := newGenv(t)
			const x = "ev-10"
			c.stored(e, bulk, x)
			if id := e.enqueueOne(bulk, GraphStep{Name: "x"}, job.WithID(x), job.WithIdentityKey(key)); id != x {
				t.Fatalf("%s, bulk %v: the repeat answered %q, want %s", c.name, bulk, id, x)
			}
			if h := e.identityHolder(key); h != "" {
				t.Fatalf("%s, bulk %v: after the duplicate the key names %q, want it free", c.name, bulk, h)
			}
			if id := e.enqueueOne(bulk, GraphStep{Name: "y"}, job.WithIdentityKey(key)); id == x {
				t.Fatalf("%s, bulk %v: a new enqueue with the key answered %s, not pending with it", c.name, bulk, x)
			}
		}
	}
}
