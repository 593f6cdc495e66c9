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

// ErrClosed: the Publisher was closed.
var ErrClosed = errors.New("jspub: publisher closed")

// Defaults.
const (
	DefaultWindow       = 4096             // acknowledgements outstanding per batch
	DefaultStallTimeout = 30 * time.Second // without any acknowledgement
	noResponderRetries  = 2                // a stream without a leader for a moment
	noResponderWait     = 250 * time.Millisecond
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
	})
	return p.subErr
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
		state: make([]atomic.Uint32, n), sem: make(chan struct{}, max(1, min(n, p.window))), done: make(chan struct{}, 1),
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
					if err := p.nc.PublishMsg(msg); err != nil {
						b.settle(int(i), Ack{Err: err})
					}
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
