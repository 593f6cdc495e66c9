package worker_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/job"
	"github.com/connector-go/connector/worker"
	"github.com/nats-io/nats.go"
	"github.com/redis/go-redis/v9"
)

// A job's identity key claimed again for the job while it runs (a
// producer enqueueing it again with its id, whose duplicate it keeps as
// the stream still holds the message) is released once the run settles:
// done or dead. Before, the start's release was the only one, and the
// claim named a job already run for the key's whole TTL.
func TestIdentityKeyClaimedDuringTheRunIsReleasedWhenItSettles(t *testing.T) {
	e := newEnv(t)
	e.start(okOrDie(func(ctx context.Context, j *job.Job[Flaky]) error {
		return e.rdb.Set(ctx, e.names().RedisKey("identity", j.IdentityKey), j.ID, time.Hour).Err()
	}))
	ctx := context.Background()
	for _, c := range []struct {
		mode, key string
		state     job.State
	}{{"ok", "k-done", job.StateDone}, {"die", "k-dead", job.StateDead}} {
		id, err := e.d.Enqueue(ctx, Flaky{Mode: c.mode}, job.WithIdentityKey(c.key))
		if err != nil {
			t.Fatal(err)
		}
		e.waitState(id, c.state, 10*time.Second)
		key := e.names().RedisKey("identity", c.key)
		testenv.Eventually(t, 10*time.Second, func() bool {
			return errors.Is(e.rdb.Get(ctx, key).Err(), redis.Nil)
		}, "%s: the key claimed for job %s during its run released after it settled", c.mode, id)
		// Free: a new job with the key is a new job.
		again, err := e.d.Enqueue(ctx, Flaky{Mode: c.mode}, job.WithIdentityKey(c.key))
		if err != nil || again == id {
			t.Fatalf("%s: enqueue with the key after the run: %q, %v", c.mode, again, err)
		}
		e.waitState(again, c.state, 10*time.Second)
	}
}

// okOrDie is a registry whose Flaky handler runs during (unless nil), then
// dies for mode "die" and is done otherwise.
func okOrDie(during func(context.Context, *job.Job[Flaky]) error) *worker.Registry {
	reg := worker.NewRegistry()
	worker.MustRegister(reg, func(ctx context.Context, j *job.Job[Flaky]) (string, error) {
		if during != nil {
			if err := during(ctx, j); err != nil {
				return "", err
			}
		}
		if j.Args.Mode == "die" {
			return "", errors.New("refused")
		}
		return "ok", nil
	})
	return reg
}

// countIdentity counts the Redis commands that name an identity key.
type countIdentity struct{ n *atomic.Int64 }

func (h countIdentity) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h countIdentity) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.count(cmd)
		return next(ctx, cmd)
	}
}

func (h countIdentity) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, cmd := range cmds {
			h.count(cmd)
		}
		return next(ctx, cmds)
	}
}

func (h countIdentity) count(cmd redis.Cmder) {
	for _, a := range cmd.Args() {
		if s, ok := a.(string); ok && strings.Contains(s, ":identity:") {
			h.n.Add(1)
			return
		}
	}
}

// A job without an identity key costs its worker no identity command; one
// with a key costs the release at its start and the one as it settles.
func TestIdentityReleasesOnlyForJobsWithAKey(t *testing.T) {
	e := newEnv(t)
	opt, err := redis.ParseURL(testenv.RedisURL(t))
	if err != nil {
		t.Fatal(err)
	}
	wrdb := redis.NewClient(opt)
	defer wrdb.Close()
	var n atomic.Int64
	wrdb.AddHook(countIdentity{&n})
	reg := worker.NewRegistry()
	worker.MustRegister(reg, func(ctx context.Context, j *job.Job[Flaky]) (string, error) { return "ok", nil })
	e.start(reg, worker.WithRedis(wrdb))
	ctx := context.Background()
	for range 3 {
		id, err := e.d.Enqueue(ctx, Flaky{Mode: "plain"})
		if err != nil {
			t.Fatal(err)
		}
		e.waitState(id, job.StateDone, 10*time.Second)
	}
	if got := n.Load(); got != 0 {
		t.Fatalf("jobs without an identity key made %d identity commands", got)
	}
	id, err := e.d.Enqueue(ctx, Flaky{Mode: "keyed"}, job.WithIdentityKey("k-count"))
	if err != nil {
		t.Fatal(err)
	}
	e.waitState(id, job.StateDone, 10*time.Second)
	testenv.Eventually(t, 10*time.Second, func() bool { return n.Load() >= 2 }, "a job with an identity key made 2 identity commands (start, settle)")
}

// The settle of a job with an identity key is confirmed before its key is
// released (an ack or term sent as a request, which the server answers
// once it has applied it): a producer that claims the key after that
// release and reads the job's message back must find it gone, not still
// queued in the server, or it would keep its claim for a job already run.
// Jobs without a key settle as before, without a round trip.
func TestIdentitySettleIsConfirmedBeforeTheRelease(t *testing.T) {
	e := newEnv(t)
	nc, err := nats.Connect(e.srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	type settle struct {
		body  string
		reply bool
	}
	var mu sync.Mutex
	var got []settle
	sub, err := nc.Subscribe("$JS.ACK."+e.names().JobsStream()+".>", func(m *nats.Msg) {
		if string(m.Data) == "+WPI" {
			return
		}
		mu.Lock()
		got = append(got, settle{string(m.Data), m.Reply != ""})
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	e.start(okOrDie(nil))
	ctx := context.Background()
	for _, c := range []struct {
		mode, key string
		state     job.State
		body      string
		reply     bool
	}{
		{"ok", "", job.StateDone, "+ACK", false},
		{"ok", "k-confirm-done", job.StateDone, "+ACK", true},
		{"die", "k-confirm-dead", job.StateDead, "+TERM", true},
	} {
		mu.Lock()
		got = nil
		mu.Unlock()
		var opts []job.Option
		if c.key != "" {
			opts = append(opts, job.WithIdentityKey(c.key))
		}
		id, err := e.d.Enqueue(ctx, Flaky{Mode: c.mode}, opts...)
		if err != nil {
			t.Fatal(err)
		}
		e.waitState(id, c.state, 10*time.Second)
		testenv.Eventually(t, 10*time.Second, func() bool { mu.Lock(); defer mu.Unlock(); return len(got) > 0 }, "%s %q: its settle seen", c.mode, c.key)
		mu.Lock()
		s := got[0]
		mu.Unlock()
		if !strings.HasPrefix(s.body, c.body) || s.reply != c.reply {
			t.Fatalf("%s with key %q: settled with %q, reply subject %v; want %s, reply subject %v", c.mode, c.key, s.body, s.reply, c.body, c.reply)
		}
	}
}
