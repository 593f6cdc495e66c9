package worker

import (
	"context"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/connector-go/connector/internal/channels"
	"github.com/connector-go/connector/internal/testenv"
	"github.com/redis/go-redis/v9"
)

// slotSteps runs one slot scenario against Redis: two worker instances,
// p1 and p2, acquiring and releasing slots of the jobs of channels below
// root.shop, and checking where their waiting places are.
type slotSteps struct {
	t      *testing.T
	rdb    *redis.Client
	chans  *channels.Config
	p1, p2 *slots
	band   int
}

func newSlotSteps(t *testing.T, config string) *slotSteps {
	rdb, prefix := testenv.Redis(t)
	chans, err := channels.Parse(config)
	if err != nil {
		t.Fatal(err)
	}
	tag := "{" + prefix + ":channels}"
	return &slotSteps{t: t, rdb: rdb, chans: chans,
		p1: &slots{rdb: rdb, tag: tag, lease: time.Minute, me: "p1"},
		p2: &slots{rdb: rdb, tag: tag, lease: time.Minute, me: "p2"}}
}

func (x *slotSteps) state(name string) *chanState {
	return newChanState(x.chans, x.chans.Resolve(name))
}

// slotStep: job seq of cs, in instance s, tries a slot and gets one or
// not (want), or, with release set, gives back the slot of token; then,
// with at set, the place of s for cs's jobs is at at[0] with score at[1]
// and nowhere else in the chain ("" for nowhere).
type slotStep struct {
	s       *slots
	cs      *chanState
	token   string
	seq     uint64
	want    bool
	release bool
	at      *slotPlace
}

type slotPlace struct {
	ch    string
	score float64
}

func (x *slotSteps) run(steps []slotStep) {
	t := x.t
	t.Helper()
	ctx := context.Background()
	for i, st := range steps {
		if st.release {
			if err := st.s.release(ctx, st.cs, st.token); err != nil {
				t.Fatal(err)
			}
		} else {
			ok, _, err := st.s.acquire(ctx, st.cs, x.band, st.token, st.seq, place{fail: st.seq})
			if err != nil {
				t.Fatal(err)
			}
			if ok != st.want {
				t.Fatalf("step %d: job %d of %s started: %v, want %v", i, st.seq, st.cs.ch.Name, ok, st.want)
			}
		}
		if st.at == nil {
			continue
		}
		for _, c := range st.cs.chain {
			if !c.Limited() {
				continue
			}
			v, err := x.rdb.ZScore(ctx, st.s.waitingKey(c.Name, x.band), st.s.member(st.cs)).Result()
			switch {
			case c.Name == st.at.ch && (err != nil || v != st.at.score):
				t.Fatalf("step %d: place of %s's jobs at %s: %v (%v), want %v", i, st.cs.ch.Name, c.Name, v, err, st.at.score)
			case c.Name != st.at.ch && err != redis.Nil:
				t.Fatalf("step %d: place of %s's jobs left at %s: %v (%v)", i, st.cs.ch.Name, c.Name, v, err)
			}
		}
	}
}

// The waiting place of a job goes to the channel of its chain that refused
// it: a job held back by its own channel's capacity does not hold back a
// sibling's job at the shared parent, and a job held back by the parent
// holds back the younger jobs of every channel below it, in any process.
// Refused later by its own channel, it moves its place there.
func TestWaitingPlaceIsAtTheChannelThatRefused(t *testing.T) {
	x := newSlotSteps(t, "root.shop:2,root.shop.a:1,root.shop.b,root.shop.c")
	x.band = 1
	p1, p2 := x.p1, x.p2
	a, b, c := x.state("root.shop.a"), x.state("root.shop.b"), x.state("root.shop.c")
	none := &slotPlace{}
	x.run([]slotStep{
		{s: p1, cs: a, token: "a1", seq: 1, want: true},
		{s: p1, cs: a, token: "a10", seq: 10, at: &slotPlace{"root.shop.a", 10}}, // root.shop.a is full
		{s: p2, cs: b, token: "b20", seq: 20, want: true},                        // not held back by job 10
		{s: p2, cs: b, token: "b30", seq: 30, at: &slotPlace{"root.shop", 30}},   // root.shop is full
		{s: p2, cs: b, token: "b20", release: true},
		{s: p1, cs: c, token: "c40", seq: 40, at: &slotPlace{"root.shop", 40}}, // behind job 30
		{s: p2, cs: b, token: "b30", seq: 30, want: true, at: none},
		{s: p2, cs: b, token: "b30", release: true},
		{s: p1, cs: a, token: "a1", release: true}, // root.shop.a has room: job 10 waits at root.shop too
		{s: p1, cs: c, token: "c40", seq: 40},      // behind job 10
		{s: p1, cs: a, token: "a10", seq: 10, want: true, at: none},
		{s: p1, cs: c, token: "c40", seq: 40, want: true, at: none},
		{s: p2, cs: a, token: "a60", seq: 60, at: &slotPlace{"root.shop.a", 60}}, // root.shop.a is full
		{s: p1, cs: a, token: "a10", release: true},                              // job 60 waits at root.shop too
		{s: p2, cs: b, token: "b50", seq: 50, want: true},
		{s: p2, cs: a, token: "a60", seq: 60, at: &slotPlace{"root.shop", 60}}, // root.shop is full: waits there only
		{s: p2, cs: b, token: "b50", release: true},
		{s: p1, cs: a, token: "a70", seq: 70, at: &slotPlace{"root.shop", 70}}, // behind job 60
		{s: p2, cs: a, token: "a60", seq: 60, want: true, at: none},
		{s: p1, cs: a, token: "a70", seq: 70, at: &slotPlace{"root.shop.a", 70}}, // root.shop.a is full again: moves there
	})
	// leave takes a place off every waiting set of the chain.
	p1.leave(context.Background(), a)
	x.run([]slotStep{{s: p1, cs: a, token: "a60", release: true, at: none}})
}

// A release that gives a channel room again lets its oldest waiting job
// take its place at the next limited channel up at once: a younger job of a
// sibling channel, already waiting there, does not take the parent's slot
// first (it would, if it tried before the older job's process did).
func TestReleaseMovesTheOldestWaitingJobUp(t *testing.T) {
	x := newSlotSteps(t, "root.shop:2,root.shop.a:1,root.shop.b")
	p1, p2 := x.p1, x.p2
	a, b := x.state("root.shop.a"), x.state("root.shop.b")
	x.run([]slotStep{
		{s: p1, cs: a, token: "a1", seq: 1, want: true},
		{s: p1, cs: a, token: "a10", seq: 10},             // root.shop.a is full: waits there
		{s: p2, cs: b, token: "b20", seq: 20, want: true}, // root.shop has room
		{s: p2, cs: b, token: "b30", seq: 30},             // root.shop is full: waits there
		{s: p1, cs: a, token: "a1", release: true},        // root.shop.a and root.shop have room
		{s: p2, cs: b, token: "b30", seq: 30},             // job 10 goes first
		{s: p1, cs: a, token: "a10", seq: 10, want: true, at: &slotPlace{}},
		{s: p2, cs: b, token: "b30", seq: 30}, // root.shop is full
	})
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

// A job refused by a throttle waits out the throttle before it tries
// again: its place lasts that long and the usual 2 s beyond, so that a
// younger job of another process does not start first when the throttle
// ends.
func TestThrottledPlaceOutlastsTheThrottle(t *testing.T) {
	x := newSlotSteps(t, "root.slow:0:throttle=30")
	cs := x.state("root.slow")
	x.run([]slotStep{
		{s: x.p1, cs: cs, token: "j1", seq: 1, want: true},
		{s: x.p1, cs: cs, token: "j2", seq: 2, at: &slotPlace{"root.slow", 2}},
	})
	exp, err := x.rdb.ZScore(context.Background(), x.p1.waitingExpKey("root.slow", x.band), x.p1.member(cs)).Result()
	if err != nil {
		t.Fatal(err)
	}
	if left := time.Until(time.UnixMilli(int64(exp))); left < 30*time.Second {
		t.Fatalf("the place lapses in %s, before the 30 s throttle ends", left)
	}
}

// A job of a better band that takes its slot takes off its own "wants"
// mark, not the one another process set meanwhile for a job of the band
// that still waits (it may be sleeping out a throttle, and set no mark
// again before that ends): worse bands keep waiting for that one.
func TestStartLeavesAnotherProcesssWantsMark(t *testing.T) {
	x := newSlotSteps(t, "root.slow:0:throttle=30")
	ctx := context.Background()
	cs := x.state("root.slow")
	p3 := &slots{rdb: x.rdb, tag: x.p1.tag, lease: time.Minute, me: "p3"}
	key := x.p1.wantsKey("root.slow", 0)
	x.p1.want(ctx, "root.slow", 0, 2*time.Second)
	x.p2.want(ctx, "root.slow", 0, 32*time.Second) // its job sleeps out the throttle
	x.p1.unwant(ctx, "root.slow", 0)               // p1's job started
	if n, err := x.rdb.Exists(ctx, key).Result(); err != nil || n != 1 {
		t.Fatalf("p2's mark after p1's job started: %d, %v", n, err)
	}
	x.rdb.Del(ctx, x.p1.throttleKey("root.slow")) // the throttle ends
	if ok, _, err := p3.acquire(ctx, cs, 1, "p3-band1", 0, place{}); err != nil || ok {
		t.Fatalf("a band-1 job started while p2's band-0 job waits: %v, %v", ok, err)
	}
	x.p2.unwant(ctx, "root.slow", 0) // p2's job started
	if n, err := x.rdb.Exists(ctx, key).Result(); err != nil || n != 0 {
		t.Fatalf("p2's own mark after its job started: %d, %v", n, err)
	}
}

// An attempt whose answer was lost (a Redis timeout after the script ran)
// took the slots under the job's token; the job, which does not know it,
// tries again with the same token. It must not wait for its own slot until
// the lease ends (a full channel of capacity 1 would stop, fleet-wide), and
// an attempt refused meanwhile must not keep such a slot.
func TestRetriedAttemptDoesNotWaitForItsOwnSlot(t *testing.T) {
	x := newSlotSteps(t, "root.shop:2,root.shop.a:1,root.shop.b")
	a, b := x.state("root.shop.a"), x.state("root.shop.b")
	x.run([]slotStep{
		{s: x.p1, cs: a, token: "a10", seq: 10, want: true}, // its answer lost
		{s: x.p2, cs: b, token: "b2", seq: 2, want: true},   // root.shop is full now
		{s: x.p2, cs: b, token: "b3", seq: 3},               // waits at root.shop
		{s: x.p2, cs: b, token: "b2", release: true},
		{s: x.p1, cs: a, token: "a10", seq: 10},           // tried again: behind job 3
		{s: x.p2, cs: b, token: "b3", seq: 3, want: true}, // job 10 holds no slot
		{s: x.p2, cs: b, token: "b5", seq: 5, want: true},
	})
	for _, ch := range []string{"root.shop", "root.shop.a"} {
		if n, err := x.rdb.ZScore(context.Background(), x.p1.slotsKey(ch), "a10").Result(); err != redis.Nil {
			t.Fatalf("the refused job holds a slot of %s: %v, %v", ch, n, err)
		}
	}
	x.run([]slotStep{
		{s: x.p2, cs: b, token: "b3", release: true},
		{s: x.p1, cs: a, token: "a10", seq: 10, want: true}, // its answer lost again
		{s: x.p1, cs: a, token: "a10", seq: 10, want: true}, // tried again: its own slot
		{s: x.p2, cs: b, token: "b6", seq: 6},               // root.shop is full
	})
}

// Slot leases and waiting places are scored and ended by Redis's clock,
// not the worker's: a worker whose clock is off neither sees the others'
// live leases as expired (and takes their slots) nor has its own seen so.
// Here Redis's clock is an hour ahead of the worker's and moves only when
// the test moves it; the embedded store (miniredis) stands in for Redis
// because its clock can be set: the scripts are the same.
func TestSlotLeasesRunOnRedissClock(t *testing.T) {
	mr := miniredis.RunT(t)
	start := time.Now().Add(time.Hour).Truncate(time.Millisecond)
	mr.SetTime(start)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	chans, err := channels.Parse("root.shop:1")
	if err != nil {
		t.Fatal(err)
	}
	cs := newChanState(chans, chans.Resolve("root.shop"))
	p1 := &slots{rdb: rdb, tag: "{clock:channels}", lease: 30 * time.Second, me: "p1"}
	p2 := &slots{rdb: rdb, tag: "{clock:channels}", lease: 30 * time.Second, me: "p2"}
	ctx := context.Background()
	score := func(key, member string, want time.Duration) {
		t.Helper()
		v, err := rdb.ZScore(ctx, key, member).Result()
		if err != nil || int64(v) != start.Add(want).UnixMilli() {
			t.Fatalf("%s of %s: %v (%v), want Redis's start + %s", key, member, v, err, want)
		}
	}
	try := func(p *slots, token string, seq uint64, want bool) {
		t.Helper()
		ok, _, err := p.acquire(ctx, cs, 0, token, seq, place{fail: seq})
		if err != nil || ok != want {
			t.Fatalf("%s's job %s started: %v (%v), want %v", p.me, token, ok, err, want)
		}
	}

	try(p1, "j1", 1, true)
	score(p1.slotsKey("root.shop"), "j1", 30*time.Second)

	mr.SetTime(start.Add(20 * time.Second))
	try(p2, "j2", 2, false) // p1's lease is still on
	score(p2.waitingExpKey("root.shop", 0), p2.member(cs), 20*time.Second+waitingTTL)

	it := &item{ch: cs, token: "j1"}
	it.slotHeld.Store(true)
	if lost, err := p1.renew(ctx, []*item{it}); err != nil || lost != 0 {
		t.Fatalf("renew: %d leases taken again, %v", lost, err)
	}
	score(p1.slotsKey("root.shop"), "j1", 50*time.Second)

	mr.SetTime(start.Add(45 * time.Second))
	try(p2, "j2", 2, false) // renewed: on until 50 s
	mr.SetTime(start.Add(51 * time.Second))
	try(p2, "j2", 2, true) // p1's lease ended, by Redis's clock
	score(p2.slotsKey("root.shop"), "j2", 81*time.Second)

	// A lease found gone at renewal is taken again, in Redis's clock too.
	if lost, err := p1.renew(ctx, []*item{it}); err != nil || lost != 1 {
		t.Fatalf("renew of a lease gone: %d leases taken again, %v", lost, err)
	}
	score(p1.slotsKey("root.shop"), "j1", 81*time.Second)
}
