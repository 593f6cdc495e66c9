package worker

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/internal/wire"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
)

// admitMsg is a received message as admit reads it (its metadata and data).
type admitMsg struct {
	jetstream.Msg
	meta *jetstream.MsgMetadata
	data []byte
}

func (m *admitMsg) Metadata() (*jetstream.MsgMetadata, error) { return m.meta, nil }
func (m *admitMsg) Data() []byte                              { return m.data }

// pipeFault fails, once, the commands of an admission pipeline from its
// failAt-th on, as a reply lost halfway through the pipeline does (go-redis
// sets the read error on the command being read and every one after it),
// and answers as Exec does: the first command's error that is not nil.
type pipeFault struct {
	failAt int
	once   sync.Once
}

func (h *pipeFault) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (h *pipeFault) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (h *pipeFault) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		if len(cmds) <= h.failAt || !strings.EqualFold(cmds[0].Name(), "zmscore") {
			return err
		}
		h.once.Do(func() {
			lost := errors.New("read tcp: i/o timeout (test)")
			for _, c := range cmds[h.failAt:] {
				if sc, ok := c.(*redis.StringCmd); ok {
					sc.SetVal("") // its reply was never read
				}
				c.SetErr(lost)
			}
			err = nil
			for _, c := range cmds {
				if c.Err() != nil {
					err = c.Err()
					break
				}
			}
		})
		return err
	}
}

// Admission reads the cancel tombstones (ZMSCORE) and the hand-back counts
// of redelivered jobs (a GET each, redis.Nil when a job has none) in one
// pipeline, whose Exec answers the first command's error. A job without a
// count before one whose GET failed made that error redis.Nil, taken as
// success: the failed job was admitted without its hand-backs, so they
// counted as attempts (a job handed back at shutdowns could be
// dead-lettered as out of retries). A command's real error is retried.
func TestAdmitRetriesAFailedCommandAfterARedisNil(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	w, err := New(nil, NewRegistry(), WithPrefix(prefix), WithRedis(rdb))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	mk := func(id string, seq uint64) *item {
		data, err := wire.EncodeEnvelopeArgs(&wire.Envelope{ID: id, Name: "probe"}, map[string]any{})
		if err != nil {
			t.Fatal(err)
		}
		meta := &jetstream.MsgMetadata{NumDelivered: 3}
		meta.Sequence.Stream = seq
		return &item{msg: &admitMsg{meta: meta, data: data}}
	}
	// Job a has no hand-back count (GET: redis.Nil), job b was handed back
	// twice; b's GET fails.
	a, b := mk("job-a", 101), mk("job-b", 102)
	if err := rdb.Set(ctx, w.handbackKey(102), 2, time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rdb.Del(context.Background(), w.handbackKey(101), w.handbackKey(102)) })
	rdb.AddHook(&pipeFault{failAt: 2}) // [ZMSCORE, GET a, GET b]

	done := make(chan []*item, 1)
	go func() { done <- w.admit(ctx, []*item{a, b}, newCredits(2, 0)) }()
	var out []*item
	select {
	case out = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("admission did not end")
	}
	if len(out) != 2 {
		t.Fatalf("admitted %d jobs, want 2", len(out))
	}
	if b.handbacks != 2 {
		t.Fatalf("job b admitted with %d hand-backs, want 2: its GET failed and the pipeline's redis.Nil (job a's) was taken for success", b.handbacks)
	}
}
