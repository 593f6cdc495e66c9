package worker

import (
	"context"
	"testing"
	"time"

	"github.com/connector-go/connector/internal/channels"
	"github.com/connector-go/connector/internal/testenv"
)

// The waiting place of a job goes to the channel of its chain that refused
// it: a job held back by its own channel's capacity does not hold back a
// sibling's job at the shared parent, and a job held back by the parent
// holds back the younger jobs of every channel below it, in any process.
func TestWaitingPlaceIsAtTheChannelThatRefused(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	ctx := context.Background()
	chans, err := channels.Parse("root.shop:2,root.shop.a:1,root.shop.b,root.shop.c")
	if err != nil {
		t.Fatal(err)
	}
	state := func(name string) *chanState { return newChanState(chans, chans.Resolve(name)) }
	a, b, c := state("root.shop.a"), state("root.shop.b"), state("root.shop.c")
	tag := "{" + prefix + ":channels}"
	p1 := &slots{rdb: rdb, tag: tag, lease: time.Minute, me: "p1"}
	p2 := &slots{rdb: rdb, tag: tag, lease: time.Minute, me: "p2"}
	const band = 1
	try := func(s *slots, cs *chanState, token string, seq uint64) bool {
		t.Helper()
		ok, _, err := s.acquire(ctx, cs, band, token, seq, place{fail: seq})
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	placeAt := func(ch string, s *slots, cs *chanState) float64 {
		t.Helper()
		v, err := rdb.ZScore(ctx, s.waitingKey(ch, band), s.member(cs)).Result()
		if err != nil {
			return 0
		}
		return v
	}

	if !try(p1, a, "a1", 1) {
		t.Fatal("first job of root.shop.a refused")
	}
	// root.shop.a is full: its next job waits there, not at root.shop.
	if try(p1, a, "a10", 10) {
		t.Fatal("second job of root.shop.a (capacity 1) started")
	}
	if got := placeAt("root.shop.a", p1, a); got != 10 {
		t.Fatalf("place at root.shop.a = %v, want 10", got)
	}
	if got := placeAt("root.shop", p1, a); got != 0 {
		t.Fatalf("place at root.shop = %v, want none", got)
	}
	// So an older job waiting for root.shop.a does not keep a younger job
	// of root.shop.b from root.shop's free slot.
	if !try(p2, b, "b20", 20) {
		t.Fatal("job of root.shop.b held back by a job waiting for root.shop.a")
	}
	// root.shop is full now: the next job of root.shop.b waits at root.shop...
	if try(p2, b, "b30", 30) {
		t.Fatal("third job under root.shop (capacity 2) started")
	}
	if got := placeAt("root.shop", p2, b); got != 30 {
		t.Fatalf("place at root.shop = %v, want 30", got)
	}
	// Once root.shop has room, a younger job of a sibling channel, in
	// another process, waits behind it, while it starts.
	if err := p2.release(ctx, b, "b20"); err != nil {
		t.Fatal(err)
	}
	if try(p1, c, "c40", 40) {
		t.Fatal("job 40 of root.shop.c started before job 30 of root.shop.b, which waits at root.shop")
	}
	if got := placeAt("root.shop", p1, c); got != 40 {
		t.Fatalf("place of the refused job 40 at root.shop = %v, want 40", got)
	}
	if !try(p2, b, "b30", 30) {
		t.Fatal("job 30 of root.shop.b, the oldest waiting at root.shop, refused")
	}
	if got := placeAt("root.shop", p2, b); got != 0 {
		t.Fatalf("place of root.shop.b at root.shop after its start = %v, want none", got)
	}
	// A job refused at the parent waits there; refused later by its own
	// channel, it moves its place there (and holds back no sibling).
	if err := p2.release(ctx, b, "b30"); err != nil {
		t.Fatal(err)
	}
	if err := p1.release(ctx, a, "a1"); err != nil {
		t.Fatal(err)
	}
	for _, j := range []struct {
		s     *slots
		cs    *chanState
		token string
		seq   uint64
	}{{p1, c, "c40", 40}, {p2, b, "b50", 50}} {
		if !try(j.s, j.cs, j.token, j.seq) {
			t.Fatalf("job %d refused with a slot free and no older job waiting", j.seq)
		}
	}
	if try(p1, a, "a10", 10) { // root.shop is full
		t.Fatal("job 10 of root.shop.a started with root.shop full")
	}
	if at, under := placeAt("root.shop", p1, a), placeAt("root.shop.a", p1, a); at != 10 || under != 0 {
		t.Fatalf("place of job 10: %v at root.shop, %v at root.shop.a; want 10 and none", at, under)
	}
	if err := p2.release(ctx, b, "b50"); err != nil {
		t.Fatal(err)
	}
	if try(p2, a, "a60", 60) {
		t.Fatal("job 60 of root.shop.a started before job 10, which waits at root.shop")
	}
	if !try(p1, a, "a10", 10) {
		t.Fatal("job 10 of root.shop.a, the oldest waiting, refused")
	}
	if try(p2, a, "a60", 60) { // root.shop.a is full now
		t.Fatal("job 60 of root.shop.a (capacity 1) started")
	}
	if at, under := placeAt("root.shop", p2, a), placeAt("root.shop.a", p2, a); at != 0 || under != 60 {
		t.Fatalf("place of job 60: %v at root.shop, %v at root.shop.a; want none and 60", at, under)
	}
	// leave takes a place off every waiting set of the chain.
	p2.leave(ctx, a)
	for _, ch := range []string{"root.shop.a", "root.shop"} {
		if got := placeAt(ch, p2, a); got != 0 {
			t.Fatalf("place at %s after leave = %v, want none", ch, got)
		}
	}
}
