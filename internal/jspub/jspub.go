// Package jspub publishes batches of messages to JetStream asynchronously
// on the core NATS connection, reading the streams' acknowledgements by
// hand.
//
// It does what jetstream.PublishMsgAsync does for a bulk enqueue at a
// fraction of the cost per message: no future, no channels and no timer
// per message, and no JSON decoding of the common acknowledgement
// ({"stream":"S","seq":N}). Replies go to one subscription per Publisher,
// "<inbox>.<batch>.<index>", so an acknowledgement finds its message by
// arithmetic, whatever order it arrives in.
//
// # Reconnects
//
// An acknowledgement is sent to the connection the message came on. When
// the connection drops, the acknowledgements of messages written on it
// and not yet answered never come, though the stream may have stored
// them; messages published while the client is away wait in nats.go's
// reconnect buffer, are sent once it is back, and are answered as usual.
// So each message is tagged with the connection it was written on (its
// epoch: the count of status changes before its publish returned), and a
// reconnect fails the messages written on an earlier connection, still
// unanswered a short grace later, with ErrAckLost, rather than leaving
// their batch to wait the stall timeout. A message whose epoch is in
// doubt is never failed so: it waits for its acknowledgement or the
// stall timeout, as before. A connection closed for good (nats.go gave up
// reconnecting) fails every outstanding message with ErrAckLost at once.
package jspub

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ErrAckTimeout: no acknowledgement arrived for StallTimeout while some
// were outstanding; whether those messages were stored is unknown.
var ErrAckTimeout = fmt.Errorf("jspub: no acknowledgement from JetStream: %w", nats.ErrTimeout)

// ErrAckLost: the connection the message was written on was lost and the
// client reconnected, and no acknowledgement came within a short grace
// after: it went to the lost connection. As with ErrAckTimeout, whether
// the message was stored is unknown (it wraps nats.ErrTimeout).
var ErrAckLost = fmt.Errorf("jspub: acknowledgement lost with the connection: %w", nats.ErrTimeout)

// ErrClosed: the Publisher was closed.
var ErrClosed = errors.New("jspub: publisher closed")

// Defaults.
const (
	DefaultWindow       = 4096             // acknowledgements outstanding per batch
	DefaultStallTimeout = 30 * time.Second // without any acknowledgement
	noResponderRetries  = 2                // a stream without a leader for a moment
	noResponderWait     = 250 * time.Millisecond
	// reconnectGrace: how long after a reconnect the acknowledgements of
	// messages written before it may still come (the stream was slow, or
	// the old server forwards them once the subscription is back) before
	// they fail with ErrAckLost.
	reconnectGrace = 2 * time.Second
	// untagged: the message's connection is not known yet, or it is being
	// published again; a reconnect does not fail it.
	untagged uint32 = 0
	// uncertain: the status changed while the message was tagged; it
	// might have gone on the new connection, so no reconnect fails it
	// (the stall timeout still does).
	uncertain uint32 = math.MaxUint32
)

// Ack is the outcome of one message: its stream sequence, or an error.
type Ack struct {
	Seq uint64
	// Dup: the stream had the message's id already (its dedup window); Seq
	// is the stored message's.
	Dup bool
	Err error
	// Unsent: the message never left (Err says why), so it is not stored;
	// an Err without it may come after the server stored the message (an
	// acknowledgement lost or late).
	Unsent bool
}

// Publisher owns the reply subscription. It is safe for concurrent use.
type Publisher struct {
	nc     *nats.Conn
	prefix string // "<inbox>."
	window int
	stall  time.Duration

	once    sync.Once
	sub     *nats.Subscription
	subErr  error
	mu      sync.Mutex
	batches map[uint64]*Batch
	next    atomic.Uint64
	closed  atomic.Bool

	// Connection status changes (CONNECTED, RECONNECTING, DISCONNECTED, CLOSED),
	// counted without a lock on the publishing path. nats.go sends them
	// under the connection's lock, the lock a publish takes: a message
	// published after a change finds it in status (len) or in events
	// (taken by watch). gen is odd while watch moves them from one to the
	// other, when the sum may miss one. (nats.go drops a change when the
	// channel holds 10 already: only if the connection flaps faster than
	// watch runs.)
	status  chan nats.Status // not read but by watch, while gen is odd
	wake    chan nats.Status // the same changes, to wake watch
	events  atomic.Uint32
	gen     atomic.Uint32
	watched chan struct{} // closed when watch returns
}

// New makes a Publisher on nc; window bounds the acknowledgements a batch
// keeps outstanding (0: DefaultWindow), stall how long a batch waits
// without any (0: DefaultStallTimeout).
func New(nc *nats.Conn, window int, stall time.Duration) *Publisher {
	if window <= 0 {
		window = DefaultWindow
	}
	if stall <= 0 {
		stall = DefaultStallTimeout
	}
	return &Publisher{nc: nc, prefix: nc.NewRespInbox() + ".", window: window, stall: stall, batches: map[uint64]*Batch{}}
}

func (p *Publisher) subscribe() error {
	p.once.Do(func() {
		p.sub, p.subErr = p.nc.Subscribe(p.prefix+"*.*", p.handle)
		if p.subErr == nil {
			// Acknowledgements are small and handled at once; never drop one.
			p.subErr = p.sub.SetPendingLimits(-1, 64<<20)
		}
		if p.subErr == nil {
			p.status = p.nc.StatusChanged(nats.CONNECTED, nats.RECONNECTING, nats.DISCONNECTED, nats.CLOSED)
			p.wake = p.nc.StatusChanged(nats.CONNECTED, nats.RECONNECTING, nats.DISCONNECTED, nats.CLOSED)
			p.watched = make(chan struct{})
			// After the listeners: a change after this is counted.
			go p.watch(p.nc.IsConnected())
		}
	})
	return p.subErr
}

// epoch returns the count of status changes that happened before it was
// called, or more (never fewer), plus one (0 is untagged). A message is
// tagged with it after its publish returned: a message written after a
// reconnect has a higher epoch than the reconnect's, whatever watch has
// seen yet, and is never taken for one written before it; one written
// just before a change may get the higher epoch, and is then not failed
// by that reconnect (its stall timeout still applies). uncertain when
// watch was counting meanwhile. A few atomic loads: no lock, no call
// into nats.go.
func (p *Publisher) epoch() uint32 {
	g := p.gen.Load()
	queued := uint32(len(p.status)) // len: allowed beside receives
	n := p.events.Load() + queued + 1
	if g&1 != 0 || p.gen.Load() != g {
		return uncertain
	}
	return n
}

// watch counts the connection's status changes and, a grace after each
// reconnect, fails the messages written on the connections before it
// that are still unanswered (ErrAckLost), and every outstanding message
// when the connection is closed for good. It returns when Close removes
// the listeners.
//
// Which messages: at a reconnect, those whose epoch is the previous
// connection's (published while it was up) or lower. A message with a
// higher epoch was published after that connection dropped, into the
// reconnect buffer, and is sent on the new connection: its
// acknowledgement comes. One with a lower epoch was written on an older
// connection, or buffered and sent on the previous one: its
// acknowledgement is as lost.
func (p *Publisher) watch(connected bool) {
	defer close(p.watched)
	// The epoch of messages written on the current connection; 0 when
	// none was known (the Publisher began disconnected).
	var current uint32
	if connected {
		current = 1
	}
	type cut struct {
		at   time.Time
		upto uint32
	}
	var cuts []cut // in time order
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case _, ok := <-p.wake:
			if !ok {
				return
			}
			// The change was sent to status under the same hold of the
			// connection's lock as to wake: once it is free, it is there.
			p.nc.Status()
			p.gen.Add(1)
			closed := false
			for taking := true; taking; {
				select {
				case st, ok := <-p.status:
					if !ok {
						taking = false
						break
					}
					n := p.events.Add(1) + 1
					closed = closed || st == nats.CLOSED
					if st == nats.CONNECTED {
						if current != 0 {
							cuts = append(cuts, cut{time.Now().Add(reconnectGrace), current})
							if len(cuts) == 1 {
								timer.Reset(reconnectGrace)
							}
						}
						current = n
					}
				default:
					taking = false
				}
			}
			p.gen.Add(1)
			if closed {
				// Closed for good (nats.go gave up reconnecting, or its
				// owner closed it): no acknowledgement comes any more.
				p.cut(uncertain)
			}
		case <-timer.C:
			var upto uint32
			now := time.Now()
			for len(cuts) > 0 && !cuts[0].at.After(now) {
				upto = max(upto, cuts[0].upto)
				cuts = cuts[1:]
			}
			if len(cuts) > 0 {
				timer.Reset(cuts[0].at.Sub(now))
			}
			if upto != 0 {
				p.cut(upto)
			}
		}
	}
}

// cut fails the outstanding messages tagged upto or lower with ErrAckLost.
func (p *Publisher) cut(upto uint32) {
	p.mu.Lock()
	bs := make([]*Batch, 0, len(p.batches))
	for _, b := range p.batches {
		bs = append(bs, b)
	}
	p.mu.Unlock()
	for _, b := range bs {
		for i := range b.state {
			if b.state[i].Load() != sent {
				continue
			}
			if e := b.epoch[i].Load(); e != untagged && e <= upto {
				b.settle(i, Ack{Err: ErrAckLost})
			}
		}
	}
}

// Close ends the subscription; batches still waiting fail with ErrClosed.
func (p *Publisher) Close() error {
	p.mu.Lock()
	p.closed.Store(true)
	bs := make([]*Batch, 0, len(p.batches))
	for _, b := range p.batches {
		bs = append(bs, b)
	}
	p.mu.Unlock()
	for _, b := range bs {
		b.abort(ErrClosed)
	}
	// No subscription after this; one being made is waited for.
	p.once.Do(func() { p.subErr = ErrClosed })
	if p.watched != nil {
		p.nc.RemoveStatusListener(p.wake) // closes it: watch returns
		p.nc.RemoveStatusListener(p.status)
		<-p.watched
	}
	if p.sub != nil {
		return p.sub.Unsubscribe()
	}
	return nil
}

// Batch publishes n messages and collects their acknowledgements, in the
// order of their indexes. One goroutine publishes; acknowledgements are
// recorded by the Publisher's subscription.
type Batch struct {
	p     *Publisher
	id    uint64
	acks  []Ack
	msgs  []*nats.Msg
	tries []uint8
	state []atomic.Uint32 // unsent, sent, settled: an index is settled once
	epoch []atomic.Uint32 // the connection it was written on: Publisher.epoch
	sem   chan struct{}   // a token per outstanding acknowledgement
	left  atomic.Int64    // published and not settled
	done  chan struct{}   // signalled when left drops to 0
	last  atomic.Int64    // unix nanos of the last acknowledgement
	reply []byte
	// stalled: no acknowledgement came for the stall timeout while the
	// window was full; the outstanding messages failed with ErrAckTimeout
	// and the rest of the batch fails at once (publishing goroutine only).
	stalled bool
}

const (
	unsent uint32 = iota
	sent
	settling // its Ack is being written
	settled
)

// NewBatch starts a batch of up to n messages.
func (p *Publisher) NewBatch(n int) (*Batch, error) {
	if p.closed.Load() {
		return nil, ErrClosed
	}
	if err := p.subscribe(); err != nil {
		if errors.Is(err, ErrClosed) {
			return nil, ErrClosed
		}
		return nil, fmt.Errorf("jspub: subscribe: %w", err)
	}
	b := &Batch{
		p: p, id: p.next.Add(1), acks: make([]Ack, n), msgs: make([]*nats.Msg, n), tries: make([]uint8, n),
		state: make([]atomic.Uint32, n), epoch: make([]atomic.Uint32, n), sem: make(chan struct{}, max(1, min(n, p.window))), done: make(chan struct{}, 1),
	}
	b.reply = strconv.AppendUint(append(b.reply, p.prefix...), b.id, 36)
	b.reply = append(b.reply, '.')
	p.mu.Lock()
	if p.closed.Load() {
		p.mu.Unlock()
		return nil, ErrClosed
	}
	p.batches[b.id] = b
	p.mu.Unlock()
	b.last.Store(time.Now().UnixNano())
	return b, nil
}

// Publish sends message i (its Reply is set here). It blocks while the
// window is full, until an acknowledgement frees a place, ctx ends, or
// none comes for the stall timeout; the returned error is then also the
// message's Ack. After a stall, the outstanding messages have failed with
// ErrAckTimeout, and so does every later Publish of the batch, at once.
func (b *Batch) Publish(ctx context.Context, i int, m *nats.Msg) error {
	if b.p.closed.Load() {
		return b.unsent(i, ErrClosed) // its acknowledgement could never arrive
	}
	if b.stalled {
		return b.unsent(i, ErrAckTimeout)
	}
	if err := ctx.Err(); err != nil {
		// Not sent: a message published after its context ended would be
		// stored though the caller is told it failed.
		return b.unsent(i, err)
	}
	select {
	case b.sem <- struct{}{}:
	default:
		if err := b.waitRoom(ctx); err != nil {
			if errors.Is(err, ErrAckTimeout) {
				// The stream stopped answering: fail what is outstanding
				// now, rather than one stall timeout per message to come.
				b.stalled = true
				b.abort(ErrAckTimeout)
			}
			return b.unsent(i, err)
		}
	}
	if b.p.closed.Load() { // while it waited for room: Close's abort made it
		<-b.sem
		return b.unsent(i, ErrClosed)
	}
	n := len(b.reply)
	m.Reply = string(strconv.AppendUint(b.reply, uint64(i), 36))
	b.reply = b.reply[:n]
	b.msgs[i] = m
	b.left.Add(1)
	b.state[i].Store(sent) // after msgs[i]: the handler reads it only then
	if err := b.p.nc.PublishMsg(m); err != nil {
		b.settle(i, Ack{Err: err, Unsent: true})
		return err
	}
	b.epoch[i].Store(b.p.epoch()) // after: see epoch
	if b.p.closed.Load() {
		// Closed meanwhile, after Close's abort looked at this message
		// (or it settled it already: settle is once).
		b.settle(i, Ack{Err: ErrClosed})
	}
	return nil
}

// unsent settles message i, not sent, with err, and returns err.
func (b *Batch) unsent(i int, err error) error {
	b.acks[i] = Ack{Err: err, Unsent: true}
	b.state[i].Store(settled)
	return err
}

func (b *Batch) waitRoom(ctx context.Context) error {
	t := time.NewTimer(b.p.stall)
	defer t.Stop()
	for {
		select {
		case b.sem <- struct{}{}:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			if time.Since(time.Unix(0, b.last.Load())) >= b.p.stall {
				return ErrAckTimeout
			}
			t.Reset(b.p.stall)
		}
	}
}

// Settled returns message i's Ack once it has one (ok false before): the
// publishing goroutine may handle outcomes while it publishes the rest.
func (b *Batch) Settled(i int) (Ack, bool) {
	if b.state[i].Load() != settled {
		return Ack{}, false
	}
	return b.acks[i], true
}

// Wait waits for the acknowledgements of every published message and
// returns them by index (an index never published has a zero Ack). When
// ctx ends or none arrives for the stall timeout, the outstanding ones
// fail with that error.
func (b *Batch) Wait(ctx context.Context) []Ack {
	defer b.release()
	t := time.NewTimer(b.p.stall)
	defer t.Stop()
	for b.left.Load() > 0 {
		select {
		case <-b.done:
		case <-ctx.Done():
			b.abort(ctx.Err())
		case <-t.C:
			if time.Since(time.Unix(0, b.last.Load())) >= b.p.stall {
				b.abort(ErrAckTimeout)
			}
			t.Reset(b.p.stall)
		}
	}
	return b.acks
}

func (b *Batch) release() {
	b.p.mu.Lock()
	delete(b.p.batches, b.id)
	b.p.mu.Unlock()
}

// abort settles every outstanding message with err.
func (b *Batch) abort(err error) {
	for i := range b.state {
		b.settle(i, Ack{Err: err})
	}
}

// settle records a sent message's outcome, once.
func (b *Batch) settle(i int, a Ack) {
	if !b.state[i].CompareAndSwap(sent, settling) {
		return
	}
	b.acks[i] = a
	b.state[i].Store(settled)
	select {
	case <-b.sem:
	default:
	}
	if b.left.Add(-1) == 0 {
		select {
		case b.done <- struct{}{}:
		default:
		}
	}
}

// handle reads one acknowledgement: "<prefix><batch>.<index>".
func (p *Publisher) handle(m *nats.Msg) {
	if len(m.Subject) <= len(p.prefix) {
		return
	}
	tail := m.Subject[len(p.prefix):]
	dot := -1
	for i := 0; i < len(tail); i++ {
		if tail[i] == '.' {
			dot = i
			break
		}
	}
	if dot < 0 {
		return
	}
	id, err1 := strconv.ParseUint(tail[:dot], 36, 64)
	i, err2 := strconv.ParseUint(tail[dot+1:], 36, 64)
	if err1 != nil || err2 != nil {
		return
	}
	p.mu.Lock()
	b := p.batches[id]
	p.mu.Unlock()
	if b == nil || i >= uint64(len(b.acks)) || b.state[i].Load() != sent {
		return // a late acknowledgement of a batch that gave up
	}
	b.last.Store(time.Now().UnixNano())
	if len(m.Data) == 0 && m.Header.Get("Status") == "503" {
		// No stream answered: none matches, or its leader is being
		// elected. The latter passes: try again a little later.
		if b.tries[i] < noResponderRetries {
			b.tries[i]++
			msg := b.msgs[i]
			time.AfterFunc(noResponderWait, func() {
				if b.state[i].Load() == sent {
					b.epoch[i].Store(untagged) // written again: tagged again
					if err := p.nc.PublishMsg(msg); err != nil {
						b.settle(int(i), Ack{Err: err})
						return
					}
					b.epoch[i].Store(p.epoch())
				}
			})
			return
		}
		b.settle(int(i), Ack{Err: jetstream.ErrNoStreamResponse})
		return
	}
	seq, err := ParseAck(m.Data)
	b.settle(int(i), Ack{Seq: seq, Dup: err == nil && duplicate(m.Data), Err: err})
}

// duplicate reports whether an acknowledgement says the stream had the
// message's id already: "duplicate": true (the server writes it with a
// space, encoding/json without).
func duplicate(data []byte) bool {
	k := bytes.Index(data, []byte(`"duplicate":`))
	if k < 0 {
		return false
	}
	rest := bytes.TrimLeft(data[k+len(`"duplicate":`):], " ")
	return bytes.HasPrefix(rest, []byte("true"))
}

// ParseAck reads a JetStream publish acknowledgement: the stream sequence,
// or the error the stream answered with.
func ParseAck(data []byte) (uint64, error) {
	if bytes.Contains(data, []byte(`"error"`)) {
		var r struct {
			Error *jetstream.APIError `json:"error"`
		}
		if err := json.Unmarshal(data, &r); err != nil || r.Error == nil {
			return 0, fmt.Errorf("%w: %q", jetstream.ErrInvalidJSAck, data)
		}
		return 0, r.Error
	}
	k := bytes.Index(data, []byte(`"seq":`))
	if k < 0 || !bytes.Contains(data, []byte(`"stream":`)) {
		return 0, fmt.Errorf("%w: %q", jetstream.ErrInvalidJSAck, data)
	}
	k += len(`"seq":`)
	for k < len(data) && data[k] == ' ' {
		k++
	}
	var seq uint64
	n := 0
	for ; k < len(data) && data[k] >= '0' && data[k] <= '9'; k++ {
		d := uint64(data[k] - '0')
		if seq > (math.MaxUint64-d)/10 {
			return 0, fmt.Errorf("%w: %q", jetstream.ErrInvalidJSAck, data)
		}
		seq = seq*10 + d
		n++
	}
	if n == 0 {
		return 0, fmt.Errorf("%w: %q", jetstream.ErrInvalidJSAck, data)
	}
	return seq, nil
}
