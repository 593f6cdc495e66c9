package worker

import (
	"slices"
	"sync"
	"time"
)

// ackOrder sends the acknowledgements of one consumer's jobs to the server
// in the order the server delivered the jobs.
//
// Why: the jobs stream is a work queue, so an ack deletes its message. In
// the server's file store, deleting the first message of a block only
// moves the block's start; deleting any other goes in the block's delete
// map, and once half of a block is deleted that way the server rewrites
// the block (compaction) and then loads it again to read the subjects of
// the next messages acked. Runners finish jobs in no set order, and a
// consumer's two pullers receive alternate messages, so without ordering
// about 40% of the acks are out of order and every 4 MB block is rewritten
// once: about 0.8 µs of the server's CPU per job, an eighth of what a
// short job costs in all (docs/benchmarks.md).
//
// How: a received job takes its place in the order by consumer sequence.
// The ack of a job that succeeded waits until every job delivered before
// it has settled; naks, terms and confirmed settles go at once (they count
// as settled for the order). No ack waits much longer than hold:
//
//   - a job still unsettled at the head (a slow job, or one waiting in
//     this process) is skipped once an ack has waited hold behind it; its
//     own ack then goes when it ends;
//   - a gap in the consumer sequence is a delivery this process has not
//     received yet (the other puller's, about to arrive) or never will
//     (another process's); it is given up on after hold. Another process
//     sharing the consumer interleaves its acks with these anyway, so
//     ordering gains nothing then: for sharedFor the acks go at once, then
//     the order is tried again.
//
// A crash loses the acks held, as it loses the acks not yet flushed to the
// connection: those jobs run again (at least once, as always). Run sends
// what is held before it returns (close).
//
// Only consumers without a capacity order their acks: a limited channel's
// consumer lets few jobs out before their acks are in (MaxAckPending, 1
// for a sequential channel), and a wait would slow it.
type ackOrder struct {
	hold      time.Duration
	sharedFor time.Duration
	send      func(*pulled) // publishes the ack of a job

	mu sync.Mutex
	// q: the jobs received and not yet released, by consumer sequence;
	// q[:head] are released (nil).
	q    []*pulled
	head int
	// settledIn: how many jobs in q have settled (held or not).
	settledIn int
	// next: the consumer sequence due at the head (0: any).
	next uint64
	// blocked: since when a settled job has waited behind the head (zero:
	// none waits).
	blocked time.Time
	timer   *time.Timer
	armed   bool
	// sharedUntil: while in the future, acks go at once.
	sharedUntil time.Time
	closed      bool
}

// The state of a job in its ackOrder (ackOrder.mu guards pulled.ost).
const (
	ackQueued  uint8 = iota // not settled yet
	ackSettled              // settled, nothing left to send
	ackHeld                 // its ack waits for its turn
	ackOut                  // skipped: its settle goes at once
)

// Default bounds of ackOrder.
const (
	defaultAckHold      = 5 * time.Millisecond
	defaultAckSharedFor = time.Second
)

func newAckOrder(hold, sharedFor time.Duration, send func(*pulled)) *ackOrder {
	o := &ackOrder{hold: hold, sharedFor: sharedFor, send: send}
	o.timer = time.AfterFunc(time.Hour, o.tick)
	o.timer.Stop()
	return o
}

// add gives a received job its place. It must come before the job can
// settle; a job added after close goes unordered.
func (o *ackOrder) add(x *pulled) {
	seq := x.meta.Sequence.Consumer
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return
	}
	x.order, x.ost = o, ackQueued
	i := len(o.q)
	for i > o.head && o.q[i-1].meta.Sequence.Consumer > seq {
		i--
	}
	o.q = slices.Insert(o.q, i, x)
}

// settled notes that x settled; held: its ack is to be sent in order
// (false: it was sent, or there is nothing to send).
func (o *ackOrder) settled(x *pulled, held bool) {
	o.mu.Lock()
	if o.closed || x.ost == ackOut {
		o.mu.Unlock()
		if held {
			o.send(x)
		}
		return
	}
	if held && !o.sharedUntil.IsZero() {
		if time.Now().Before(o.sharedUntil) {
			o.send(x)
			held = false
		} else {
			o.sharedUntil = time.Time{}
		}
	}
	x.ost = ackSettled
	if held {
		x.ost = ackHeld
	}
	o.settledIn++
	o.release()
	o.mu.Unlock()
}

// release sends the acks whose turn has come. o.mu held.
func (o *ackOrder) release() {
	for o.head < len(o.q) {
		x := o.q[o.head]
		seq := x.meta.Sequence.Consumer
		forced := false
		switch {
		case x.ost == ackQueued:
			if o.settledIn == 0 || !o.waitedOut() {
				o.wait()
				return
			}
			x.ost, forced = ackOut, true
		case o.next != 0 && seq > o.next && x.ost == ackHeld:
			if !o.waitedOut() {
				o.wait()
				return
			}
			o.sharedUntil, forced = time.Now().Add(o.sharedFor), true
		}
		o.q[o.head] = nil
		o.head++
		if x.ost != ackOut {
			o.settledIn--
		}
		if x.ost == ackHeld {
			o.send(x)
		}
		if seq >= o.next {
			o.next = seq + 1
		}
		if !forced {
			// Progress: whatever waits now has waited behind this one.
			o.blocked = time.Time{}
		}
	}
	o.q, o.head = o.q[:0], 0
	o.blocked = time.Time{}
}

// waitedOut tells whether the settled jobs behind the head have waited
// hold. o.mu held.
func (o *ackOrder) waitedOut() bool {
	now := time.Now()
	if o.blocked.IsZero() {
		o.blocked = now
	}
	return now.Sub(o.blocked) >= o.hold
}

// wait arms the timer for the end of the wait, if something waits, and
// moves the queue down once its released part is the larger. o.mu held.
func (o *ackOrder) wait() {
	if o.head > 64 && o.head*2 > len(o.q) {
		n := copy(o.q, o.q[o.head:])
		clear(o.q[n:])
		o.q, o.head = o.q[:n], 0
	}
	if o.settledIn == 0 || o.blocked.IsZero() {
		o.blocked = time.Time{}
		return
	}
	if !o.armed {
		o.armed = true
		o.timer.Reset(o.hold - time.Since(o.blocked))
	}
}

func (o *ackOrder) tick() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.armed = false
	if !o.closed {
		o.release()
	}
}

// close sends the acks still held, in order, and lets later settles go at
// once.
func (o *ackOrder) close() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return
	}
	o.closed = true
	o.timer.Stop()
	for i := o.head; i < len(o.q); i++ {
		if x := o.q[i]; x.ost == ackHeld {
			o.send(x)
		}
		o.q[i] = nil
	}
	o.q, o.head = nil, 0
}
