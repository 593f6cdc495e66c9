package dispatcher_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/connector-go/connector/dispatcher"
	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/internal/wire"
	"github.com/connector-go/connector/job"
	"github.com/nats-io/nats.go"
)

type Bulk struct {
	N int `msgpack:"n"`
}

func (Bulk) JobName() string { return "test.bulk" }

// When a bulk enqueue stops early (its context ends while the window is
// full), every job it did not enqueue says so: none is left with neither
// an id nor an error, which a caller would read as enqueued.
func TestEnqueueManyStoppedEarlyFailsEveryUnsentJob(t *testing.T) {
	_, nc, js := testenv.JetStream(t)
	prefix := testenv.Prefix(t)
	// Nothing stores the jobs: a plain subscriber takes them and never
	// acknowledges (a responder, so no 503), as a stream that stopped
	// answering would.
	mute, err := nc.Subscribe(prefix+".jobs.>", func(*nats.Msg) {})
	if err != nil {
		t.Fatal(err)
	}
	defer mute.Unsubscribe()
	d, err := dispatcher.New(js, dispatcher.WithPrefix(prefix))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close(context.Background())
	const n = 4096 + 4 // the window, and a few more
	items := make([]dispatcher.Item, n)
	for i := range items {
		items[i] = dispatcher.Item{Args: Bulk{N: i}}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	res, err := d.EnqueueMany(ctx, items)
	if err == nil {
		t.Fatal("EnqueueMany succeeded with no stream")
	}
	for i, r := range res {
		if r.Err == nil {
			t.Fatalf("job %d of %d: id %q and no error, though nothing was enqueued (EnqueueMany: %v)", i, n, r.ID, err)
		}
		if !errors.Is(r.Err, context.DeadlineExceeded) {
			t.Fatalf("job %d: %v", i, r.Err)
		}
	}
	if !strings.Contains(err.Error(), "4100 of 4100") {
		t.Fatalf("EnqueueMany: %v", err)
	}
}

// After Close, every enqueue fails with ErrClosed (its record would never
// be written), whether or not a bulk enqueue ran before Close; the bulk
// one panicked when none had.
func TestEnqueueAfterCloseFails(t *testing.T) {
	for _, before := range []bool{false, true} {
		e := newGenv(t)
		ctx := context.Background()
		if before {
			if _, err := e.d.EnqueueMany(ctx, []dispatcher.Item{{Args: Bulk{N: 0}}}); err != nil {
				t.Fatal(err)
			}
		}
		if err := e.d.Close(ctx); err != nil {
			t.Fatal(err)
		}
		res, err := e.d.EnqueueMany(ctx, []dispatcher.Item{{Args: Bulk{N: 1}}})
		if !errors.Is(err, dispatcher.ErrClosed) || res != nil {
			t.Fatalf("EnqueueMany after Close (one before: %v) = %v, %v; want ErrClosed", before, res, err)
		}
		if _, err := e.d.Enqueue(ctx, Bulk{N: 2}); !errors.Is(err, dispatcher.ErrClosed) {
			t.Fatalf("Enqueue after Close: %v, want ErrClosed", err)
		}
		if _, err := e.d.EnqueueRaw(ctx, "bulk", []byte{0x80}); !errors.Is(err, dispatcher.ErrClosed) {
			t.Fatalf("EnqueueRaw after Close: %v, want ErrClosed", err)
		}
	}
}

// Two items of one bulk enqueue with the same identity key: the second
// answers the first's id. When the first then fails to publish (here: no
// jobs stream), the second fails too, with no id: no job exists under
// that id or any other. Every item is counted once in the summary.
func TestEnqueueManySameIdentityFirstFails(t *testing.T) {
	_, _, js := testenv.JetStream(t)
	rdb, prefix := testenv.Redis(t)
	// No streams: every publish fails (no stream answers).
	d, err := dispatcher.New(js, dispatcher.WithPrefix(prefix), dispatcher.WithRedis(rdb))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	same := []job.Option{job.WithIdentityKey("same")}
	res, err := d.EnqueueMany(ctx, []dispatcher.Item{
		{Args: Bulk{N: 1}, Options: same},
		{Args: Bulk{N: 2}, Options: same},
		{Args: Bulk{N: 3}},
		{Args: Bulk{N: 4}, Options: same},
	})
	if err == nil {
		t.Fatal("EnqueueMany succeeded with no jobs stream")
	}
	for i, r := range res {
		if r.Err == nil || r.ID != "" {
			t.Errorf("item %d: id %q, error %v; want no id and an error (EnqueueMany: %v)", i, r.ID, r.Err, err)
		}
	}
	if !strings.Contains(err.Error(), "4 of 4") {
		t.Fatalf("EnqueueMany: %v", err)
	}
	// The key is free again: nothing holds it.
	if n, err := rdb.Exists(ctx, wire.MustNames(prefix).RedisKey("identity", "same")).Result(); err != nil || n != 0 {
		t.Fatalf("identity key left behind (%d, %v)", n, err)
	}
}

// A header the dispatcher sets itself (the message id of JetStream's
// dedup, the schedule of an ETA) is refused from job.WithHeader: a
// caller's would silently replace the job's dedup id or make it fire at
// another time.
func TestEnqueueRefusesTheDispatchersOwnHeaders(t *testing.T) {
	e := newGenv(t)
	ctx := context.Background()
	for _, k := range []string{"Nats-Msg-Id", "Nats-Schedule", "Nats-Schedule-Target"} {
		if id, err := e.d.Enqueue(ctx, Bulk{N: 1}, job.WithHeader(k, "x")); err == nil || !strings.Contains(err.Error(), k) {
			t.Errorf("Enqueue with header %s: %q, %v; want an error naming it", k, id, err)
		}
	}
	if _, err := e.d.Enqueue(ctx, Bulk{N: 1}, job.WithHeader("X-Tenant", "acme")); err != nil {
		t.Fatal(err)
	}
}

// Close during a bulk enqueue ends it at once: the items not yet
// acknowledged fail with ErrClosed (not a 30 s stall and ErrAckTimeout),
// and the rest are neither published nor claim their identity keys.
func TestCloseDuringEnqueueManyFailsTheRestWithErrClosed(t *testing.T) {
	e := newGenv(t)
	ctx := context.Background()
	const n = 200_000
	items := make([]dispatcher.Item, n)
	for i := range items {
		items[i] = dispatcher.Item{Args: Bulk{N: i}, Options: []job.Option{job.WithIdentityKey(fmt.Sprint("k", i))}}
	}
	type answer struct {
		res []dispatcher.Result
		err error
	}
	done := make(chan answer, 1)
	go func() {
		res, err := e.d.EnqueueMany(ctx, items)
		done <- answer{res, err}
	}()
	stream, err := e.js.Stream(ctx, e.names.JobsStream())
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 20*time.Second, func() bool {
		info, err := stream.Info(ctx)
		return err == nil && info.State.Msgs > 0
	}, "some jobs published")
	if err := e.d.Close(ctx); err != nil {
		t.Fatal(err)
	}
	var a answer
	select {
	case a = <-done:
	case <-time.After(15 * time.Second):
		t.Fatal("EnqueueMany still runs 15 s after Close")
	}
	if a.err == nil {
		t.Skip("the enqueue ended before Close")
	}
	if !errors.Is(a.err, dispatcher.ErrClosed) {
		t.Fatalf("EnqueueMany: %v, want ErrClosed", a.err)
	}
	failed := 0
	for i, r := range a.res {
		switch {
		case r.Err == nil && r.ID == "":
			t.Fatalf("item %d: no id and no error", i)
		case r.Err != nil && !errors.Is(r.Err, dispatcher.ErrClosed):
			t.Fatalf("item %d: %v, want ErrClosed", i, r.Err)
		case r.Err != nil:
			failed++
		}
	}
	// The items never published claimed no identity key: the last one's is
	// free.
	keys, err := e.rdb.Keys(ctx, e.prefix+"*").Result()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d of %d failed; %d Redis keys", failed, n, len(keys))
	if len(keys) > n-failed+16 {
		t.Errorf("%d Redis keys for %d jobs enqueued: failed items kept their identity keys", len(keys), n-failed)
	}
}
