package dispatcher_test

import (
	"context"
	"testing"
	"time"

	"github.com/connector-go/connector/dispatcher"
	"github.com/connector-go/connector/internal/graphs"
	"github.com/connector-go/connector/job"
)

// A graph whose root is due after graphs.TTL keeps its bookkeeping until
// the root runs: the hash lives TTL past the root's ETA. Before, it
// expired 30 days after the enqueue, and the children were never
// released.
func TestGraphOutlivesARootsFarETA(t *testing.T) {
	e := newGenv(t)
	ctx := context.Background()
	eta := time.Now().Add(40 * 24 * time.Hour)
	res, err := e.d.EnqueueGraph(ctx, dispatcher.Chain(
		dispatcher.Job(GraphStep{Name: "far-root"}, job.WithETA(eta)),
		dispatcher.Job(GraphStep{Name: "child"}),
	))
	if err != nil {
		t.Fatal(err)
	}
	ttl, err := e.rdb.PTTL(ctx, graphs.Key(e.names, res.ID)).Result()
	if err != nil {
		t.Fatal(err)
	}
	if min := time.Until(eta) + graphs.TTL - time.Hour; ttl < min {
		t.Fatalf("graph kept %v; the root is due in %v, so it must be kept at least %v", ttl, time.Until(eta).Round(time.Hour), min.Round(time.Hour))
	}
	for _, id := range res.Jobs {
		if err := e.d.Cancel(ctx, id); err != nil {
			t.Logf("cancel %s: %v", id, err)
		}
	}
}
