package channels

import (
	"testing"
	"time"
)

// A throttle is a wait between starts in whole milliseconds (the slot
// script's SET PX): a value that is not a finite number of seconds, or
// rounds to no wait at all, or overflows a time.Duration, is nonsense and
// must be refused, not turned into a channel that is silently unthrottled
// (a NaN or overflowing value became a negative Throttle, so the channel
// was not even Limited; a sub-millisecond one reached Redis as 0).
func TestThrottleMustBeAFiniteWaitOfAtLeastAMillisecond(t *testing.T) {
	for _, s := range []string{
		"root.x:0:throttle=NaN",
		"root.x:0:throttle=nan",
		"root.x:0:throttle=Inf",
		"root.x:0:throttle=+Inf",
		"root.x:0:throttle=1e300",
		"root.x:0:throttle=0.0001",
		"root.x:0:throttle=1e-12",
	} {
		c, err := Parse(s)
		if err == nil {
			ch, _ := c.Get("root.x")
			t.Errorf("%q accepted: throttle %v, limited %v", s, ch.Throttle, ch.Limited())
		}
	}
	c, err := Parse("root.x:0:throttle=0.5,root.y:0:throttle=0.001")
	if err != nil {
		t.Fatal(err)
	}
	if ch, _ := c.Get("root.x"); ch.Throttle != 500*time.Millisecond || !ch.Limited() {
		t.Errorf("root.x: throttle %v, limited %v", ch.Throttle, ch.Limited())
	}
	if ch, _ := c.Get("root.y"); ch.Throttle != time.Millisecond {
		t.Errorf("root.y: throttle %v", ch.Throttle)
	}
}
