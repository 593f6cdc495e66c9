package worker

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// pullSub is one puller's pull subscription to a consumer, on the JetStream
// pull API directly (what jetstream's Fetch does, without its goroutine,
// timer and conversions per message): a pull request goes to the
// consumer's MSG.NEXT subject with a reply subject of its own
// (<inbox>.<request>), and the messages and the closing status arrive on
// one channel subscription, straight from the connection's reader. A
// message of an earlier request that arrives late is still a job to run;
// only the status that ends the current request ends the wait.
type pullSub struct {
	nc       *nats.Conn
	nextSubj string // <api prefix>CONSUMER.MSG.NEXT.<stream>.<consumer>
	inbox    string // "<inbox>."
	stream   string
	consumer string
	sub      *nats.Subscription
	order    *ackOrder // nil: acks go at once
	ch       chan *nats.Msg
	req      uint64
	timer    *time.Timer
	body     []byte
}

// errConsumerGone: the consumer was deleted or its stream has no leader
// (409 Consumer Deleted, 503 no responders); the caller backs off.
var errConsumerGone = errors.New("worker: consumer unavailable")

// apiPrefix is the JetStream API prefix of js ("$JS.API.", or a domain's).
func apiPrefix(js jetstream.JetStream) string {
	o := js.Options()
	switch {
	case o.Domain != "":
		return "$JS." + o.Domain + ".API."
	case o.APIPrefix != "":
		return strings.TrimSuffix(o.APIPrefix, ".") + "."
	}
	return jetstream.DefaultAPIPrefix
}

func newPullSub(js jetstream.JetStream, stream, consumer string, capacity int) (*pullSub, error) {
	nc := js.Conn()
	p := &pullSub{
		nc: nc, nextSubj: apiPrefix(js) + "CONSUMER.MSG.NEXT." + stream + "." + consumer,
		inbox: nc.NewRespInbox() + ".", stream: stream, consumer: consumer,
		ch: make(chan *nats.Msg, capacity),
	}
	sub, err := nc.ChanSubscribe(p.inbox+"*", p.ch)
	if err != nil {
		return nil, fmt.Errorf("worker: pull subscription: %w", err)
	}
	// The channel bounds what is buffered (a message beyond it would be
	// dropped, and redelivered after AckWait): requests never ask for more
	// than it holds.
	p.sub = sub
	p.timer = time.NewTimer(time.Hour)
	p.timer.Stop()
	return p, nil
}

// finish waits for request reply to end ("" for none open: the server
// fills an open request, and one it picked a message for before it had an
// unsubscribe is delivered nowhere, to wait out its lease) by its status,
// or at deadline, then closes the subscription; it returns the job
// messages that arrived and were not taken.
func (p *pullSub) finish(reply string, deadline time.Time) []*nats.Msg {
	var out []*nats.Msg
	for reply != "" {
		m, ended, _ := p.next(context.Background(), reply, deadline, true)
		if m != nil {
			out = append(out, m)
		}
		if ended {
			break
		}
	}
	return append(out, p.close()...)
}

// close ends the subscription and returns the job messages that arrived
// and were not taken. The unsubscribe drains: a flush after it means
// everything sent before it is in the channel.
func (p *pullSub) close() []*nats.Msg {
	p.timer.Stop()
	if err := p.sub.Drain(); err != nil {
		_ = p.sub.Unsubscribe()
	}
	_ = p.nc.FlushTimeout(2 * time.Second)
	var out []*nats.Msg
	for {
		select {
		case m := <-p.ch:
			if isJob(m) {
				out = append(out, m)
			}
		default:
			return out
		}
	}
}

// request asks for up to n messages within expires; it returns the reply
// subject that identifies the request.
func (p *pullSub) request(n int, expires time.Duration) (string, error) {
	p.req++
	reply := p.inbox + strconv.FormatUint(p.req, 36)
	b := append(p.body[:0], `{"batch":`...)
	b = strconv.AppendInt(b, int64(n), 10)
	b = append(b, `,"expires":`...)
	b = strconv.AppendInt(b, int64(expires), 10)
	b = append(b, '}')
	p.body = b
	if err := p.nc.PublishRequest(p.nextSubj, reply, b); err != nil {
		return "", err
	}
	return reply, nil
}

// next returns the next message of any request, or ended once the current
// request (reply) has ended: by its status, or at deadline. With wait
// false it only looks at what has arrived: (nil, false, nil) for nothing.
func (p *pullSub) next(ctx context.Context, reply string, deadline time.Time, wait bool) (*nats.Msg, bool, error) {
	for {
		var m *nats.Msg
		select {
		case m = <-p.ch:
		default:
			if !wait {
				return nil, false, nil
			}
			d := time.Until(deadline)
			if d <= 0 {
				return nil, true, nil
			}
			p.timer.Reset(d)
			select {
			case m = <-p.ch:
				p.timer.Stop() // no stale tick after Stop (Go 1.23 timers)
			case <-p.timer.C:
				return nil, true, nil
			case <-ctx.Done():
				p.timer.Stop()
				return nil, true, ctx.Err()
			}
		}
		if isJob(m) {
			return m, false, nil
		}
		if m.Subject != reply {
			continue // a heartbeat, or the end, of an earlier request
		}
		switch status := m.Header.Get("Status"); status {
		case "", "100":
			continue // heartbeat, flow control
		case "404", "408":
			return nil, true, nil // no messages; the request expired
		case "409":
			desc := m.Header.Get("Description")
			if strings.Contains(desc, "Consumer Deleted") {
				return nil, true, fmt.Errorf("%w: %s", errConsumerGone, desc)
			}
			if strings.Contains(desc, "Leadership Change") || strings.Contains(desc, "Server Shutdown") {
				return nil, true, nil // this request is over; the next one goes to who serves now
			}
			// Refused for a limit of the consumer (Exceeded MaxWaiting,
			// MaxRequestBatch, MaxRequestExpires...): an error, so that
			// the puller backs off and says why instead of asking again
			// at once.
			return nil, true, fmt.Errorf("worker: pull request refused: status 409 %s", desc)
		case "503":
			return nil, true, fmt.Errorf("%w: no responders", errConsumerGone)
		default:
			return nil, true, fmt.Errorf("worker: pull request: status %s %s", status, m.Header.Get("Description"))
		}
	}
}

// isJob tells a delivered message (it has an ack subject) from a status.
func isJob(m *nats.Msg) bool { return strings.HasPrefix(m.Reply, "$JS.ACK.") }

// pulled is a JetStream message received by a pullSub: jetstream.Msg over
// the core message, its metadata read from the ack subject at once.
type pulled struct {
	m       *nats.Msg
	nc      *nats.Conn
	meta    jetstream.MsgMetadata
	metaErr error
	acked   atomic.Bool
	// confirm: settle as a request, returning once the server has applied
	// it (or after settleConfirmWait), for a job whose identity key is
	// released after its settle (see process).
	confirm atomic.Bool
	// order: the ackOrder this job's ack waits in (nil: none); ost is its
	// state there, guarded by order.mu.
	order *ackOrder
	ost   uint8
}

// settleConfirmWait bounds a confirmed settle (pulled.confirm).
const settleConfirmWait = 2 * time.Second

var _ jetstream.Msg = (*pulled)(nil)

// wrap makes x the received message m.
func (p *pullSub) wrap(m *nats.Msg, x *pulled) {
	x.m, x.nc = m, p.nc
	x.metaErr = parseAckSubject(m.Reply, p.stream, p.consumer, &x.meta)
	if x.metaErr == nil && p.order != nil {
		p.order.add(x)
	}
}

// parseAckSubject reads the metadata of a JetStream message from its ack
// subject, in either form:
//
//	$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>
//	$JS.ACK.<domain>.<account hash>.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>[.<token>]
//
// stream and consumer are the names the caller knows (the message is of
// its consumer), so that nothing is allocated.
func parseAckSubject(s, stream, consumer string, md *jetstream.MsgMetadata) error {
	const pre = "$JS.ACK."
	if len(s) <= len(pre) || s[:len(pre)] != pre {
		return jetstream.ErrNotJSMessage
	}
	// Token boundaries, then the numbers (digits only) of the five that
	// matter: delivered, stream seq, consumer seq, timestamp, pending.
	var ends [12]int
	n := 0
	for i := len(pre); i < len(s) && n < len(ends); i++ {
		if s[i] == '.' {
			ends[n] = i
			n++
		}
	}
	if n < len(ends) {
		ends[n] = len(s)
		n++
	}
	first, domain := 0, ""
	switch {
	case n == 7:
		first = 2
	case n >= 9:
		first = 4
		if d := s[len(pre):ends[0]]; d != "_" {
			domain = d
		}
	default:
		return jetstream.ErrNotJSMessage
	}
	var v [5]uint64
	for k := range v {
		from := len(pre)
		if first+k > 0 {
			from = ends[first+k-1] + 1
		}
		to := ends[first+k]
		if to <= from || to-from > 20 {
			return jetstream.ErrNotJSMessage
		}
		var x uint64
		for i := from; i < to; i++ {
			c := s[i]
			if c < '0' || c > '9' || x > (math.MaxUint64-uint64(c-'0'))/10 {
				return jetstream.ErrNotJSMessage
			}
			x = x*10 + uint64(c-'0')
		}
		v[k] = x
	}
	*md = jetstream.MsgMetadata{
		Sequence:     jetstream.SequencePair{Stream: v[1], Consumer: v[2]},
		NumDelivered: v[0],
		NumPending:   v[4],
		Timestamp:    time.Unix(0, int64(v[3])),
		Stream:       stream,
		Consumer:     consumer,
		Domain:       domain,
	}
	return nil
}

func (x *pulled) Metadata() (*jetstream.MsgMetadata, error) {
	if x.metaErr != nil {
		return nil, x.metaErr
	}
	return &x.meta, nil
}
func (x *pulled) Data() []byte         { return x.m.Data }
func (x *pulled) Headers() nats.Header { return x.m.Header }
func (x *pulled) Subject() string      { return x.m.Subject }
func (x *pulled) Reply() string        { return x.m.Reply }
func (x *pulled) Ack() error           { return x.settle([]byte(ackBody)) }
func (x *pulled) Nak() error           { return x.settle([]byte("-NAK")) }
func (x *pulled) Term() error          { return x.settle([]byte("+TERM")) }
func (x *pulled) InProgress() error    { return x.send([]byte("+WPI")) }
func (x *pulled) TermWithReason(r string) error {
	return x.settle([]byte("+TERM " + r))
}

func (x *pulled) NakWithDelay(d time.Duration) error {
	return x.settle([]byte(`-NAK {"delay": ` + strconv.FormatInt(int64(d), 10) + `}`))
}

func (x *pulled) DoubleAck(ctx context.Context) error {
	if x.acked.Swap(true) {
		return jetstream.ErrMsgAlreadyAckd
	}
	_, err := x.nc.RequestWithContext(ctx, x.m.Reply, []byte(ackBody))
	if x.order != nil {
		x.order.settled(x, false)
	}
	return err
}

func (x *pulled) settle(body []byte) error {
	if x.acked.Swap(true) {
		return jetstream.ErrMsgAlreadyAckd
	}
	var err error
	switch {
	case x.confirm.Load() && x.m.Reply != "":
		// The server answers an ack, nak or term that has a reply subject
		// once it has applied it (a work queue's message is then gone).
		_, err = x.nc.Request(x.m.Reply, body, settleConfirmWait)
	case x.order != nil && string(body) == ackBody:
		x.order.settled(x, true) // sent in its turn
		return nil
	default:
		err = x.send(body)
	}
	if x.order != nil {
		x.order.settled(x, false)
	}
	return err
}

const ackBody = "+ACK"

// sendAck publishes the ack of x (ackOrder's send).
func sendAck(x *pulled) { _ = x.send([]byte(ackBody)) }

func (x *pulled) send(body []byte) error {
	if x.m.Reply == "" {
		return jetstream.ErrMsgNoReply
	}
	return x.nc.Publish(x.m.Reply, body)
}
