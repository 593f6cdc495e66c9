package dispatcher_test

import (
	"context"
	"strconv"
	"testing"

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
