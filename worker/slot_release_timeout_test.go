package worker

import (
	"testing"
	"time"

	"github.com/connector-go/connector/internal/channels"
	"github.com/connector-go/connector/internal/testenv"
	"github.com/redis/go-redis/v9"
)

// At shutdown the slots of the jobs still queued are given back one after
// the other (Run, after closeAndDrain; runItem's shutdown branch). With
// Redis hanging, a release left to the client's own timeouts and retries
// (go-redis defaults: a 3s read timeout, 3 retries) takes some 10s, each:
// the shutdown overruns its grace period by that much per job. A slot is a
// lease that expires anyway, so a release is bounded.
func TestSlotReleaseIsBoundedWhenRedisHangs(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: testenv.SilentAddr(t)}) // the client's defaults
	t.Cleanup(func() { _ = rdb.Close() })
	chans, err := channels.Parse("root.lim:1")
	if err != nil {
		t.Fatal(err)
	}
	w := &Worker{slots: &slots{rdb: rdb, tag: "{" + t.Name() + ":channels}", lease: DefaultAckWait, me: "p1"}}
	cs := newChanState(chans, chans.Resolve("root.lim"))
	bound := releaseTimeout + time.Second
	for i, token := range []string{"t1", "t2"} {
		it := &item{ch: cs, token: token}
		it.slotHeld.Store(true)
		start := time.Now()
		err := w.releaseSlot(it)
		if took := time.Since(start); took > bound {
			t.Fatalf("release %d with Redis hanging took %s (err %v), want at most %s", i+1, took.Round(time.Millisecond), err, bound)
		}
		if err == nil {
			t.Fatalf("release %d: no error from a Redis that never answers", i+1)
		}
		if it.slotHeld.Load() {
			t.Fatalf("release %d: the job still holds its slot", i+1)
		}
	}
}
