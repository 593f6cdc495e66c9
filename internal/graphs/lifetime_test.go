package graphs_test

import (
	"context"
	"testing"
	"time"

	"github.com/connector-go/connector/internal/graphs"
	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/internal/wire"
)

// atHeader is the schedule header the dispatcher gives a job with an ETA.
func atHeader(eta time.Time) map[string][]string {
	return map[string][]string{
		wire.HeaderSchedule:  {"@at " + eta.UTC().Format(time.RFC3339Nano)},
		wire.HeaderSchTarget: {"p.jobs.root.1"},
	}
}

// chain is a -> b -> c, b and c held with the given headers.
func chain(bHeader, cHeader map[string][]string) []graphs.Node {
	return []graphs.Node{
		{ID: "a", Children: []string{"b"}},
		{ID: "b", Parents: []string{"a"}, Children: []string{"c"}, Pending: &graphs.Pending{Subject: "p.sched.b", Header: bHeader, Data: []byte("b")}},
		{ID: "c", Parents: []string{"b"}, Pending: &graphs.Pending{Subject: "p.jobs.root.1", Header: cHeader, Data: []byte("c")}},
	}
}

// A graph job due in 40 days (a held child with an ETA) runs after the
// graph's 30 days: the graph must still be there when it is done, or its
// own children are never released (Done finds no hash and releases
// nothing, silently).
func TestGraphOutlivesAHeldJobsETA(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	ctx := context.Background()
	n := wire.Names{Prefix: prefix}
	eta := time.Now().Add(40 * 24 * time.Hour)
	nodes := chain(atHeader(eta), nil)
	nodes[1].ETA = eta // as the dispatcher gives it
	if err := graphs.Store(ctx, rdb, n, "g1", nodes); err != nil {
		t.Fatal(err)
	}
	ttl := rdb.PTTL(ctx, graphs.Key(n, "g1")).Val()
	if want := time.Until(eta) + graphs.TTL - time.Minute; ttl < want {
		t.Fatalf("graph expires in %s, before its job due in %s has run (want at least %s)", ttl, time.Until(eta).Round(time.Hour), want.Round(time.Hour))
	}
}

// A root due in 40 days (an ETA the dispatcher knows and passes as
// Node.ETA: roots are published at once, their messages are not kept).
func TestGraphOutlivesARootsETA(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	ctx := context.Background()
	n := wire.Names{Prefix: prefix}
	eta := time.Now().Add(40 * 24 * time.Hour)
	nodes := chain(nil, nil)
	nodes[0].ETA = eta
	if err := graphs.Store(ctx, rdb, n, "g1", nodes); err != nil {
		t.Fatal(err)
	}
	ttl := rdb.PTTL(ctx, graphs.Key(n, "g1")).Val()
	if want := time.Until(eta) + graphs.TTL - time.Minute; ttl < want {
		t.Fatalf("graph expires in %s, before its root due in %s has run (want at least %s)", ttl, time.Until(eta).Round(time.Hour), want.Round(time.Hour))
	}
}

// A graph still making progress keeps its bookkeeping TTL after its last
// progress, not only after it was enqueued: a parent requeued from the dead
// letters on day 29 releases its child, whose own children must still be
// released when it is done on day 31. The key's lease is shortened by hand
// to stand for the days gone by.
func TestGraphProgressRenewsItsLifetime(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	ctx := context.Background()
	n := wire.Names{Prefix: prefix}
	key := graphs.Key(n, "g1")
	if err := graphs.Store(ctx, rdb, n, "g1", chain(nil, nil)); err != nil {
		t.Fatal(err)
	}
	if err := rdb.PExpire(ctx, key, time.Hour).Err(); err != nil { // 29 days and 23 hours later
		t.Fatal(err)
	}
	kids, err := graphs.Done(ctx, rdb, n, "g1", "a")
	if err != nil || len(kids) != 1 || kids[0].ID != "b" {
		t.Fatalf("Done(a) = %+v, %v", kids, err)
	}
	if ttl := rdb.PTTL(ctx, key).Val(); ttl < graphs.TTL-time.Minute {
		t.Fatalf("graph released a job and expires in %s: its job's children would be lost (want about %s)", ttl, graphs.TTL)
	}

	// Progress never shortens a longer lifetime (one set for a far ETA).
	long := graphs.TTL + 20*24*time.Hour
	if err := rdb.PExpire(ctx, key, long).Err(); err != nil {
		t.Fatal(err)
	}
	kids, err = graphs.Done(ctx, rdb, n, "g1", "b")
	if err != nil || len(kids) != 1 || kids[0].ID != "c" {
		t.Fatalf("Done(b) = %+v, %v", kids, err)
	}
	if ttl := rdb.PTTL(ctx, key).Val(); ttl < long-time.Minute {
		t.Fatalf("Done shortened the graph's lifetime to %s (was %s)", ttl, long)
	}

	// A graph that is gone stays gone: Done makes no hash without expiry.
	if err := rdb.Del(ctx, key).Err(); err != nil {
		t.Fatal(err)
	}
	if kids, err := graphs.Done(ctx, rdb, n, "g1", "c"); err != nil || len(kids) != 0 {
		t.Fatalf("Done on a gone graph = %+v, %v", kids, err)
	}
	if e := rdb.Exists(ctx, key).Val(); e != 0 {
		t.Fatalf("Done recreated the gone graph %s", key)
	}
}

// A job due centuries ahead (time.Until saturates) still stores its graph:
// the lifetime saturates too instead of overflowing into an expiry Redis
// refuses.
func TestGraphOfAJobDueCenturiesAhead(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	ctx := context.Background()
	n := wire.Names{Prefix: prefix}
	nodes := chain(nil, nil)
	nodes[0].ETA = time.Date(2400, 1, 1, 0, 0, 0, 0, time.UTC)
	if err := graphs.Store(ctx, rdb, n, "g1", nodes); err != nil {
		t.Fatalf("Store: %v", err)
	}
	if ttl := rdb.PTTL(ctx, graphs.Key(n, "g1")).Val(); ttl <= graphs.TTL {
		t.Fatalf("graph expires in %s", ttl)
	}
}
