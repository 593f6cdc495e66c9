package worker

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// credits bound the jobs this process holds, running and waiting: a puller
// takes one per job it receives and the job gives it back when it ends.
// The bound is the concurrency plus a prefetch. A fixed prefetch
// (WithPrefetch) stays as given; by default it adapts to the jobs' pace:
// enough queued work for about prefetchHorizon, between minPrefetch and
// maxPrefetch. Fast jobs then keep the server's pull requests full, and a
// process running slow jobs does not hoard the backlog that other workers
// of the fleet could run.
type credits struct {
	mu    sync.Mutex
	held  int
	limit int
	freed chan struct{} // a credit came back (buffered 1)
	ended atomic.Int64  // jobs that gave their credit back

	concurrency int
	adaptive    bool
}

const (
	minPrefetch     = 16
	maxPrefetch     = 4096
	prefetchHorizon = 50 * time.Millisecond
)

func newCredits(concurrency, prefetch int) *credits {
	c := &credits{concurrency: concurrency, freed: make(chan struct{}, 1)}
	if prefetch < 0 {
		c.adaptive, prefetch = true, 256
	}
	c.limit = concurrency + prefetch
	return c
}

// take takes one credit, waiting for one to be free; false once ctx ends.
func (c *credits) take(ctx context.Context) bool {
	for {
		if c.tryTake() {
			return true
		}
		select {
		case <-c.freed:
		case <-ctx.Done():
			return false
		}
	}
}

// tryTake takes one credit if one is free.
func (c *credits) tryTake() bool {
	c.mu.Lock()
	ok := c.held < c.limit
	if ok {
		c.held++
	}
	c.mu.Unlock()
	return ok
}

// force takes a credit even over the bound.
func (c *credits) force() {
	c.mu.Lock()
	c.held++
	c.mu.Unlock()
}

// give returns the credits of n jobs that ended (or went back).
func (c *credits) give(n int) {
	c.ended.Add(int64(n))
	c.putBack(n)
}

// putBack returns n credits taken for jobs that never came.
func (c *credits) putBack(n int) {
	if n <= 0 {
		return
	}
	c.mu.Lock()
	c.held -= n
	c.mu.Unlock()
	select {
	case c.freed <- struct{}{}:
	default:
	}
}

// adapt sets the prefetch from the pace of the last interval until ctx ends.
func (c *credits) adapt(ctx context.Context) {
	if !c.adaptive {
		return
	}
	const every = 100 * time.Millisecond
	t := time.NewTicker(every)
	defer t.Stop()
	last, lastAt := c.ended.Load(), time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			n := c.ended.Load()
			rate := float64(n-last) / now.Sub(lastAt).Seconds()
			last, lastAt = n, now
			prefetch := int(rate * prefetchHorizon.Seconds())
			prefetch = min(max(prefetch, minPrefetch), maxPrefetch)
			c.mu.Lock()
			c.limit = c.concurrency + prefetch
			c.mu.Unlock()
			select { // a larger bound may let a waiting puller go on
			case c.freed <- struct{}{}:
			default:
			}
		}
	}
}
