package dispatcher_test

import (
	"context"
	"errors"
	"testing"

	"github.com/connector-go/connector/dispatcher"
)

// A bulk enqueue whose context has ended publishes nothing: it used to
// publish every job while the window had room and then answer each with
// context.Canceled, so a caller retrying the "failed" jobs enqueued them
// twice.
func TestEnqueueManyWithEndedContextPublishesNothing(t *testing.T) {
	e := newGenv(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	items := make([]dispatcher.Item, 16)
	for i := range items {
		items[i] = dispatcher.Item{Args: Bulk{N: i}}
	}
	res, err := e.d.EnqueueMany(ctx, items)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("EnqueueMany: %v; want context.Canceled", err)
	}
	for i, r := range res {
		if !errors.Is(r.Err, context.Canceled) {
			t.Fatalf("item %d: %+v; want context.Canceled", i, r)
		}
	}
	// A marker published on the same connection is stored after anything
	// the bulk enqueue sent before it.
	bg := context.Background()
	if _, err := e.js.Publish(bg, e.names.JobsSubject("root", 1), []byte("marker")); err != nil {
		t.Fatal(err)
	}
	s, err := e.js.Stream(bg, e.names.JobsStream())
	if err != nil {
		t.Fatal(err)
	}
	if n := s.CachedInfo().State.Msgs; n != 1 {
		t.Fatalf("%d jobs stored though every item answered context.Canceled", n-1)
	}
}
