package dispatcher_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/connector-go/connector/dispatcher"
	"github.com/connector-go/connector/internal/streams"
	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/internal/wire"
	"github.com/connector-go/connector/job"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

type ackEnv struct {
	prefix string
	js     jetstream.JetStream // direct
	d      *dispatcher.Dispatcher
	link   *testenv.Link
	slow   *dispatcher.Dispatcher // through link
}

func newAckEnv(t *testing.T) *ackEnv {
	t.Helper()
	s := testenv.StartNATS(t)
	rdb, prefix := testenv.Redis(t)
	js, err := jetstream.New(s.Connect(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := streams.Ensure(context.Background(), js, streams.Config{Names: wire.MustNames(prefix)}); err != nil {
		t.Fatal(err)
	}
	link := testenv.NewLink(t, s.Server.Addr().String())
	snc, err := nats.Connect("nats://"+link.Addr, nats.NoReconnect())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(snc.Close)
	sjs, err := jetstream.New(snc)
	if err != nil {
		t.Fatal(err)
	}
	e := &ackEnv{prefix: prefix, js: js, link: link}
	for _, p := range []struct {
		js jetstream.JetStream
		d  **dispatcher.Dispatcher
	}{{js, &e.d}, {sjs, &e.slow}} {
		d, err := dispatcher.New(p.js, dispatcher.WithPrefix(prefix), dispatcher.WithRedis(rdb))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Close(context.Background()) })
		*p.d = d
	}
	return e
}

// warm brings the slow connection up (its first request answered), so
// that a test may then hold the link, and returns the jobs stored then.
func (e *ackEnv) warm(t *testing.T) uint64 {
	t.Helper()
	if _, err := e.slow.Enqueue(context.Background(), GraphStep{Name: "warm"}); err != nil {
		t.Fatal(err)
	}
	return e.stored(t)
}

// stored is how many messages the jobs stream holds (no worker runs: every
// job enqueued is there).
func (e *ackEnv) stored(t *testing.T) uint64 {
	t.Helper()
	s, err := e.js.Stream(context.Background(), wire.MustNames(e.prefix).JobsStream())
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

// An enqueue with an identity key whose publish the server stored, but
// whose acknowledgement came after the caller's deadline, does not free
// the key for a second job: the enqueue learns the job was stored and
// answers its id, and enqueueing the key again (a new id: the caller's
// retry) answers that id. Before, the dispatcher released the key on the
// timeout, and the retry stored a second job with the same key.
func TestIdentityEnqueueWithALateAckKeepsOneJob(t *testing.T) {
	e := newAckEnv(t)
	key := job.WithIdentityKey("order-9")
	base := e.warm(t)

	e.link.Hold()
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	go func() {
		<-ctx.Done()
		time.Sleep(100 * time.Millisecond) // the network recovers
		e.link.Release()
	}()
	id, err := e.slow.Enqueue(ctx, GraphStep{Name: "a"}, key)
	if got := e.stored(t) - base; got != 1 {
		t.Fatalf("the server stored %d jobs, want 1 (the test's premise)", got)
	}
	if err != nil {
		t.Logf("enqueue with a late ack: %v", err)
	}
	// The caller retries: a new job with the same key.
	again, err2 := e.d.Enqueue(context.Background(), GraphStep{Name: "a"}, key)
	if err2 != nil {
		t.Fatal(err2)
	}
	if got := e.stored(t) - base; got != 1 {
		t.Fatalf("two jobs stored with identity key order-9 (first enqueue: id %q, err %v; again: %s)", id, err, again)
	}
	if err != nil || again != id {
		t.Fatalf("first enqueue answered %q, %v; again %q: want the stored job's id, no error", id, err, again)
	}
}

// When the acknowledgement does not come at all (the link held until the
// enqueue gives up), the enqueue fails with ErrOutcomeUnknown and the id
// of the job that may be stored: enqueueing it again with that id does not
// store a second job.
func TestIdentityEnqueueWithoutAnAckAnswersItsID(t *testing.T) {
	e := newAckEnv(t)
	key := job.WithIdentityKey("order-10")
	base := e.warm(t)

	e.link.Hold()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	id, err := e.slow.Enqueue(ctx, GraphStep{Name: "a"}, key)
	e.link.Release()
	if err == nil {
		t.Fatalf("enqueue without an ack answered %s, no error", id)
	}
	if !errors.Is(err, dispatcher.ErrOutcomeUnknown) || id == "" {
		t.Fatalf("enqueue without an ack: id %q, err %v; want the job's id and ErrOutcomeUnknown", id, err)
	}
	if got := e.stored(t) - base; got != 1 {
		t.Fatalf("the server stored %d jobs, want 1 (the test's premise)", got)
	}
	again, err := e.d.Enqueue(context.Background(), GraphStep{Name: "a"}, key, job.WithID(id))
	if err != nil {
		t.Fatal(err)
	}
	if again != id {
		t.Fatalf("enqueue again with job.WithID(%s) answered %s", id, again)
	}
	if got := e.stored(t) - base; got != 1 {
		t.Fatalf("%d jobs stored with identity key order-10 after the retry with its id, want 1", got)
	}
}

// EnqueueMany does as Enqueue: jobs of a batch with identity keys whose
// acknowledgements came after the caller's deadline keep their keys and
// answer their ids, so a retry of the batch (new ids) stores nothing new.
// Before, the keys were freed and the retry stored a second job for each.
func TestIdentityEnqueueManyWithLateAcksKeepsOneJobEach(t *testing.T) {
	e := newAckEnv(t)
	base := e.warm(t)
	items := func() []dispatcher.Item {
		return []dispatcher.Item{
			{Args: GraphStep{Name: "a"}, Options: []job.Option{job.WithIdentityKey("order-11")}},
			{Args: GraphStep{Name: "b"}, Options: []job.Option{job.WithIdentityKey("order-12")}},
		}
	}

	e.link.Hold()
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	go func() {
		<-ctx.Done()
		time.Sleep(100 * time.Millisecond) // the network recovers
		e.link.Release()
	}()
	first, err := e.slow.EnqueueMany(ctx, items())
	testenv.Eventually(t, 10*time.Second, func() bool { return e.stored(t)-base == 2 }, "both jobs stored (the test's premise)")
	if err != nil {
		t.Logf("bulk enqueue with late acks: %v", err)
	}
	again, err := e.d.EnqueueMany(context.Background(), items())
	if err != nil {
		t.Fatal(err)
	}
	if got := e.stored(t) - base; got != 2 {
		t.Fatalf("%d jobs stored for 2 identity keys (first: %+v; again: %+v)", got, first, again)
	}
	for i := range first {
		if first[i].Err != nil || first[i].ID == "" || again[i].ID != first[i].ID {
			t.Fatalf("item %d: first %+v, again %+v: want the stored job's id, no error", i, first[i], again[i])
		}
	}
}

// A batch's job whose acknowledgement never comes fails with
// ErrOutcomeUnknown and its id in its Result, to retry with.
func TestIdentityEnqueueManyWithoutAnAckAnswersItsID(t *testing.T) {
	e := newAckEnv(t)
	base := e.warm(t)
	e.link.Hold()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	res, err := e.slow.EnqueueMany(ctx, []dispatcher.Item{{Args: GraphStep{Name: "a"}, Options: []job.Option{job.WithIdentityKey("order-13")}}})
	e.link.Release()
	if err == nil || len(res) != 1 || !errors.Is(res[0].Err, dispatcher.ErrOutcomeUnknown) || res[0].ID == "" {
		t.Fatalf("bulk enqueue without an ack: %+v, %v; want the job's id and ErrOutcomeUnknown", res, err)
	}
	testenv.Eventually(t, 10*time.Second, func() bool { return e.stored(t)-base == 1 }, "the job stored (the test's premise)")
	again, err := e.d.Enqueue(context.Background(), GraphStep{Name: "a"}, job.WithIdentityKey("order-13"), job.WithID(res[0].ID))
	if err != nil || again != res[0].ID {
		t.Fatalf("enqueue again with job.WithID(%s): %s, %v", res[0].ID, again, err)
	}
	if got := e.stored(t) - base; got != 1 {
		t.Fatalf("%d jobs stored after the retry with its id, want 1", got)
	}
}
