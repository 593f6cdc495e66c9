package dispatcher_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/connector-go/connector/dispatcher"
	"github.com/connector-go/connector/internal/streams"
	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/internal/wire"
	"github.com/connector-go/connector/job"
	"github.com/redis/go-redis/v9"
)

// loseIdentityAnswers runs the identity claim in Redis and then answers
// its caller as if the reply were lost (a deadline passed), while on.
type loseIdentityAnswers struct{ on *atomic.Bool }

func (h loseIdentityAnswers) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h loseIdentityAnswers) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if !h.on.Load() {
			return err
		}
		for _, a := range cmd.Args() {
			if s, ok := a.(string); ok && strings.Contains(s, ":identity:") {
				cmd.SetErr(context.DeadlineExceeded)
				return context.DeadlineExceeded
			}
		}
		return err
	}
}

func (h loseIdentityAnswers) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// An identity claim that Redis ran but whose answer was lost fails the
// enqueue and does not keep the key: before, the key named a job never
// published, and every enqueue with it for 30 days answered that id as
// a duplicate.
func TestIdentityClaimWithALostAnswerIsReleased(t *testing.T) {
	_, _, js := testenv.JetStream(t)
	rdb, prefix := testenv.Redis(t)
	opt, err := redis.ParseURL(testenv.RedisURL(t))
	if err != nil {
		t.Fatal(err)
	}
	lossy := redis.NewClient(opt)
	defer lossy.Close()
	var lose atomic.Bool
	lossy.AddHook(loseIdentityAnswers{&lose})
	if err := streams.Ensure(context.Background(), js, streams.Config{Names: wire.MustNames(prefix)}); err != nil {
		t.Fatal(err)
	}
	d, err := dispatcher.New(js, dispatcher.WithPrefix(prefix), dispatcher.WithRedis(lossy))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close(context.Background())
	ctx := context.Background()

	lose.Store(true)
	if _, err := d.Enqueue(ctx, GraphStep{Name: "a"}, job.WithIdentityKey("order-7")); err == nil {
		t.Fatal("enqueue whose identity answer was lost: no error")
	}
	lose.Store(false)
	keys, err := rdb.Keys(ctx, prefix+":identity:*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 0 {
		t.Fatalf("identity keys %v kept for a job never published", keys)
	}
	id, err := d.Enqueue(ctx, GraphStep{Name: "a"}, job.WithIdentityKey("order-7"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Job(ctx, id); errors.Is(err, job.ErrNotFound) {
		t.Fatalf("enqueue again answered %s, a job never published", id)
	}
}
