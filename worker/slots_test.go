package worker

import (
	"context"
	"testing"
	"time"

	"github.com/connector-go/connector/internal/channels"
	"github.com/connector-go/connector/internal/testenv"
	"github.com/redis/go-redis/v9"
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
		return tryAcquire(t, s, cs, band, token, seq)
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
	steps := []struct {
		s    *slots
		cs   *chanState
		tok  string
		seq  uint64
		want bool
		rel  *slots // release tok instead of trying it
	}{
		{s: p2, cs: b, tok: "b30", rel: p2},
		{s: p1, cs: a, tok: "a1", rel: p1},  // root.shop.a has room: job 10 waits at root.shop too
		{s: p1, cs: c, tok: "c40", seq: 40}, // behind job 10
		{s: p1, cs: a, tok: "a10", seq: 10, want: true},
		{s: p1, cs: c, tok: "c40", seq: 40, want: true},
		{s: p2, cs: a, tok: "a60", seq: 60}, // root.shop.a is full: waits there
		{s: p1, cs: a, tok: "a10", rel: p1}, // job 60 waits at root.shop too
		{s: p2, cs: b, tok: "b50", seq: 50, want: true},
		{s: p2, cs: a, tok: "a60", seq: 60}, // root.shop is full: waits there only
		{s: p2, cs: b, tok: "b50", rel: p2},
		{s: p1, cs: a, tok: "a70", seq: 70}, // behind job 60 at root.shop
		{s: p2, cs: a, tok: "a60", seq: 60, want: true},
		{s: p1, cs: a, tok: "a70", seq: 70}, // root.shop.a is full again: waits there only
	}
	for i, st := range steps {
		if st.rel != nil {
			if err := st.rel.release(ctx, st.cs, st.tok); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if got := try(st.s, st.cs, st.tok, st.seq); got != st.want {
			t.Fatalf("step %d: job %d started: %v, want %v", i, st.seq, got, st.want)
		}
		if i == 8 {
			if at, under := placeAt("root.shop", p2, a), placeAt("root.shop.a", p2, a); at != 60 || under != 0 {
				t.Fatalf("place of job 60: %v at root.shop, %v at root.shop.a; want 60 and none", at, under)
			}
		}
	}
	if at, under := placeAt("root.shop", p1, a), placeAt("root.shop.a", p1, a); at != 0 || under != 70 {
		t.Fatalf("place of job 70: %v at root.shop, %v at root.shop.a; want none and 70", at, under)
	}
	// leave takes a place off every waiting set of the chain.
	p1.leave(ctx, a)
	for _, ch := range []string{"root.shop.a", "root.shop"} {
		if got := placeAt(ch, p1, a); got != 0 {
			t.Fatalf("place at %s after leave = %v, want none", ch, got)
		}
	}
}

// A release that gives a channel room again lets its oldest waiting job
// take its place at the next limited channel up at once: a younger job of a
// sibling channel, already waiting there, does not take the parent's slot
// first (it would, if it tried before the older job's process did).
func TestReleaseMovesTheOldestWaitingJobUp(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	ctx := context.Background()
	chans, err := channels.Parse("root.shop:2,root.shop.a:1,root.shop.b")
	if err != nil {
		t.Fatal(err)
	}
	a, b := newChanState(chans, chans.Resolve("root.shop.a")), newChanState(chans, chans.Resolve("root.shop.b"))
	tag := "{" + prefix + ":channels}"
	p1 := &slots{rdb: rdb, tag: tag, lease: time.Minute, me: "p1"}
	p2 := &slots{rdb: rdb, tag: tag, lease: time.Minute, me: "p2"}
	const band = 0
	try := func(s *slots, cs *chanState, token string, seq uint64) bool {
		t.Helper()
		return tryAcquire(t, s, cs, band, token, seq)
	}
	for _, j := range []struct {
		s    *slots
		cs   *chanState
		tok  string
		seq  uint64
		want bool
	}{
		{p1, a, "a1", 1, true},
		{p1, a, "a10", 10, false}, // root.shop.a is full: waits there
		{p2, b, "b20", 20, true},  // root.shop has room
		{p2, b, "b30", 30, false}, // root.shop is full: waits there
	} {
		if got := try(j.s, j.cs, j.tok, j.seq); got != j.want {
			t.Fatalf("job %d started: %v, want %v", j.seq, got, j.want)
		}
	}
	if err := p1.release(ctx, a, "a1"); err != nil { // root.shop.a and root.shop have room
		t.Fatal(err)
	}
	if try(p2, b, "b30", 30) {
		t.Fatal("job 30 of root.shop.b took root.shop's slot before job 10 of root.shop.a, whose channel had room again")
	}
	if !try(p1, a, "a10", 10) {
		t.Fatal("job 10 of root.shop.a refused")
	}
	for _, ch := range []string{"root.shop.a", "root.shop"} {
		if err := rdb.ZScore(ctx, p1.waitingKey(ch, band), p1.member(a)).Err(); err != redis.Nil {
			t.Fatalf("job 10 started, but a place of root.shop.a's jobs is left at %s (err %v)", ch, err)
		}
	}
	if try(p2, b, "b30", 30) {
		t.Fatal("job 30 started with root.shop full")
	}
}

// A Redis user without Pub/Sub rights still gives slots back: only the
// announcement is left out (the others find the slot at their next poll).
func TestReleaseWithoutPubSubRights(t *testing.T) {
	if testenv.RedisEmbedded() {
		t.Skip("the embedded store has no ACLs")
	}
	rdb, prefix := testenv.Redis(t)
	ctx := context.Background()
	user, pw := "connector-test-"+prefix, "pw-"+prefix
	if err := rdb.Do(ctx, "ACL", "SETUSER", user, "on", ">"+pw, "~{"+prefix+":*", "resetchannels", "+@all", "-@pubsub").Err(); err != nil {
		t.Skipf("this Redis takes no ACL rules: %v", err)
	}
	t.Cleanup(func() { rdb.Do(context.Background(), "ACL", "DELUSER", user) })
	opt := *rdb.Options()
	opt.Username, opt.Password = user, pw
	limited := redis.NewClient(&opt)
	defer limited.Close()
	if err := limited.Publish(ctx, "{"+prefix+":channels}:freed", "x").Err(); err == nil {
		t.Fatal("the test user may publish")
	}
	chans, err := channels.Parse("root.shop:1")
	if err != nil {
		t.Fatal(err)
	}
	cs := newChanState(chans, chans.Resolve("root.shop"))
	s := &slots{rdb: limited, tag: "{" + prefix + ":channels}", lease: time.Minute, me: "p1"}
	for _, tok := range []string{"j1", "j2"} {
		ok, _, err := s.acquire(ctx, cs, 0, tok, 0, place{})
		if err != nil || !ok {
			t.Fatalf("slot for %s: %v, %v", tok, ok, err)
		}
		if err := s.release(ctx, cs, tok); err != nil {
			t.Fatalf("release without Pub/Sub rights: %v", err)
		}
	}
}

// tryAcquire tries a slot for the job seq of cs in band, as a fresh job of
// an instance with no other job waiting, and reports whether it got one.
func tryAcquire(t *testing.T, s *slots, cs *chanState, band int, token string, seq uint64) bool {
	t.Helper()
	ok, _, err := s.acquire(context.Background(), cs, band, token, seq, place{fail: seq})
	if err != nil {
		t.Fatal(err)
	}
	return ok
}
