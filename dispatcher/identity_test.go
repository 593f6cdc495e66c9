package dispatcher_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/connector-go/connector/dispatcher"
	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/internal/wire"
	"github.com/connector-go/connector/job"
)

// WriteFields is a job whose arguments hold maps, as a "write these
// fields" job does.
type WriteFields struct {
	Model  string            `msgpack:"model"`
	Fields map[string]string `msgpack:"fields"`
	Qty    map[string]int    `msgpack:"qty"`
}

func (WriteFields) JobName() string { return "test.write_fields" }

func writeFields() WriteFields {
	a := WriteFields{Model: "res.partner", Fields: map[string]string{}, Qty: map[string]int{}}
	for i := range 32 {
		a.Fields["field_"+strconv.Itoa(i)] = "v" + strconv.Itoa(i)
		a.Qty["q"+strconv.Itoa(i)] = i
	}
	return a
}

// job.WithIdentityExact: two enqueues of the same job with the same
// arguments share one pending job, though the arguments hold maps (which
// Go iterates in random order); EnqueueRaw computes the same key from the
// arguments encoded in any order.
func TestIdentityExactWithMapArgs(t *testing.T) {
	e := newGenv(t)
	ctx := context.Background()
	ids := map[string]bool{}
	for range 8 {
		id, err := e.d.Enqueue(ctx, writeFields(), job.WithIdentityExact())
		if err != nil {
			t.Fatal(err)
		}
		ids[id] = true
	}
	if len(ids) != 1 {
		t.Fatalf("8 enqueues of equal arguments with WithIdentityExact made %d distinct jobs, want 1 (ids %v)", len(ids), ids)
	}
	for range 4 {
		raw, err := wire.Marshal(writeFields()) // not in canonical form
		if err != nil {
			t.Fatal(err)
		}
		id, err := e.d.EnqueueRaw(ctx, WriteFields{}.JobName(), raw, job.WithIdentityExact())
		if err != nil {
			t.Fatal(err)
		}
		if !ids[id] {
			t.Fatalf("EnqueueRaw of the same arguments made job %s, want the pending one (%v)", id, ids)
		}
	}
}

// An enqueue with a chosen id the stream still has (its dedup window) and
// an identity key enqueues nothing, and leaves the key free: the job of
// that id ran already, so no run would release it, and every later
// enqueue with the key answered that done job's id for the key's whole
// TTL, enqueueing nothing. So in a bulk enqueue.
func TestDuplicateChosenIDLeavesItsIdentityKeyFree(t *testing.T) {
	for _, bulk := range []bool{false, true} {
		e := newGenv(t)
		e.start()
		ctx := context.Background()
		enqueue := func(args GraphStep, opts ...job.Option) string {
			t.Helper()
			if !bulk {
				id, err := e.d.Enqueue(ctx, args, opts...)
				if err != nil {
					t.Fatal(err)
				}
				return id
			}
			res, err := e.d.EnqueueMany(ctx, []dispatcher.Item{{Args: args, Options: opts}})
			if err != nil {
				t.Fatal(err)
			}
			return res[0].ID
		}
		key := job.WithIdentityKey("export:product:7")
		first := enqueue(GraphStep{Name: "first"}, job.WithID("ev-1"), key)
		testenv.WaitJob(t, e.d, first, job.StateDone, 10*time.Second)
		// The same event again, within the dedup window: nothing runs.
		if id := enqueue(GraphStep{Name: "first"}, job.WithID("ev-1"), key); id != "ev-1" {
			t.Fatalf("bulk %v: the repeated event answered %q, want ev-1", bulk, id)
		}
		// A new export of the record is a new job.
		second := enqueue(GraphStep{Name: "second"}, key)
		if second == first {
			t.Fatalf("bulk %v: a new job with the key answered the done job %s: its key stayed claimed", bulk, first)
		}
		testenv.WaitJob(t, e.d, second, job.StateDone, 10*time.Second)
		if n := e.runs("first"); n != 1 {
			t.Errorf("bulk %v: the first job ran %d times", bulk, n)
		}
	}
}
