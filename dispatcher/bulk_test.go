package dispatcher_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/connector-go/connector/dispatcher"
	"github.com/connector-go/connector/internal/testenv"
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
