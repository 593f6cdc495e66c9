package graphs_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/connector-go/connector/internal/graphs"
	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/internal/wire"
)

// held is a job kept until its parents are done.
func held(id string, parents, children []string) graphs.Node {
	return graphs.Node{ID: id, Parents: parents, Children: children,
		Pending: &graphs.Pending{Subject: "p.jobs.root.1", Data: []byte(id)}}
}

func ids(rs []graphs.Released) []string {
	out := make([]string, 0, len(rs))
	for _, r := range rs {
		out = append(out, r.ID)
	}
	return out
}

// A child of two parents done at the same moment on two workers is
// released once: by whichever parent's mark comes second (each mark and
// its check are one script). Run on many graphs, the two Done calls let go
// together.
func TestChildOfTwoParentsDoneAtOnceIsReleasedOnce(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	ctx := context.Background()
	n := wire.Names{Prefix: prefix}
	for i := 0; i < 200; i++ {
		g := fmt.Sprint("g", i)
		nodes := []graphs.Node{
			{ID: "a", Children: []string{"c"}},
			{ID: "b", Children: []string{"c"}},
			held("c", []string{"a", "b"}, nil),
		}
		if err := graphs.Store(ctx, rdb, n, g, nodes); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		start := make(chan struct{})
		got := make([][]graphs.Released, 2)
		for k, parent := range []string{"a", "b"} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				kids, err := graphs.Done(ctx, rdb, n, g, parent)
				if err != nil {
					t.Error(err)
				}
				got[k] = kids
			}()
		}
		close(start)
		wg.Wait()
		if released := len(got[0]) + len(got[1]); released != 1 || append(got[0], got[1]...)[0].ID != "c" {
			t.Fatalf("%s: Done(a) released %v, Done(b) %v; want c once", g, ids(got[0]), ids(got[1]))
		}
	}
}

// A parent that died keeps its children pending (nothing is marked); once
// requeued and done, it releases them, and those released release theirs.
func TestRequeuedParentReleasesItsChildren(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	ctx := context.Background()
	n := wire.Names{Prefix: prefix}
	if err := graphs.Store(ctx, rdb, n, "g1", chain(nil, nil)); err != nil {
		t.Fatal(err)
	}
	// "a" died (dead-lettered: the graph is not touched) and was requeued;
	// now it is done, and its redelivery repeats the release harmlessly.
	for i := 0; i < 2; i++ {
		kids, err := graphs.Done(ctx, rdb, n, "g1", "a")
		if err != nil || len(kids) != 1 || kids[0].ID != "b" || string(kids[0].Data) != "b" {
			t.Fatalf("Done(a) after its requeue = %v, %v; want b", ids(kids), err)
		}
	}
	if kids, err := graphs.Done(ctx, rdb, n, "g1", "b"); err != nil || len(kids) != 1 || kids[0].ID != "c" {
		t.Fatalf("Done(b) = %v, %v; want c", ids(kids), err)
	}
}

// Cancelled children are never released: neither one cancelled while it
// waits (CancelPending), nor the descendants of a cancelled job, nor a
// child of two parents one of which was cancelled when the other is done.
func TestCancelledChildrenAreNotReleased(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	ctx := context.Background()
	n := wire.Names{Prefix: prefix}
	// a -> b, a -> c, b -> d; x -> d
	nodes := []graphs.Node{
		{ID: "a", Children: []string{"b", "c"}},
		{ID: "x", Children: []string{"d"}},
		held("b", []string{"a"}, []string{"d"}),
		held("c", []string{"a"}, nil),
		held("d", []string{"b", "x"}, nil),
	}
	if err := graphs.Store(ctx, rdb, n, "g1", nodes); err != nil {
		t.Fatal(err)
	}
	if released, err := graphs.CancelPending(ctx, rdb, n, "g1", "c"); err != nil || released {
		t.Fatalf("CancelPending(c) = %v, %v; want not released", released, err)
	}
	kids, err := graphs.Done(ctx, rdb, n, "g1", "a")
	if err != nil || len(kids) != 1 || kids[0].ID != "b" {
		t.Fatalf("Done(a) with c cancelled = %v, %v; want b alone", ids(kids), err)
	}
	// b is cancelled as it runs (its descendants with it): d is never
	// released, even once both its parents are marked done.
	cancelled, err := graphs.CancelDescendants(ctx, rdb, n, "g1", "b")
	if err != nil || len(cancelled) != 1 || cancelled[0] != "d" {
		t.Fatalf("CancelDescendants(b) = %v, %v; want d", cancelled, err)
	}
	for _, p := range []string{"x", "b"} {
		if kids, err := graphs.Done(ctx, rdb, n, "g1", p); err != nil || len(kids) != 0 {
			t.Fatalf("Done(%s) released cancelled %v, %v", p, ids(kids), err)
		}
	}
	// A job cancelled after its parents were done reports it (its message
	// may be queued: it is cancelled as a queued job is).
	if released, err := graphs.CancelPending(ctx, rdb, n, "g1", "d"); err != nil || !released {
		t.Fatalf("CancelPending(d) after its parents = %v, %v; want released", released, err)
	}
}
