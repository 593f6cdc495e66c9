package events

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"strconv"
	"sync"
	"time"

	"github.com/connector-go/connector/internal/telemetry"
	"github.com/connector-go/connector/internal/wire"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"
)

// Errors of listener registration and running.
var (
	// ErrBadListener: a listener's name, model or event is not valid, or
	// the name is taken.
	ErrBadListener = errors.New("events: invalid listener")
	// ErrRunning: On was called after Run.
	ErrRunning = errors.New("events: listeners already running")
)

// Defaults.
const (
	DefaultPartitions = 8
	DefaultMaxDeliver = 5
	DefaultAckWait    = 30 * time.Second
)

// Listeners runs the listeners of one process. Every process of the fleet
// registers the same listeners (same names, models, events); they share
// the listeners' durable consumers, so the fleet handles each event once
// per listener.
type Listeners struct {
	js      jetstream.JetStream
	rdb     redis.UniversalClient
	names   wire.Names
	log     *zap.Logger
	tracer  trace.Tracer
	ackWait time.Duration
	maxSize int
	worker  string
	mark    *redis.Script
	metrics *telemetry.Metrics
	grace   time.Duration

	mu        sync.Mutex
	running   bool
	listeners []*listener
}

// Option configures Listeners.
type Option func(*Listeners)

// WithTracer traces the handling of each event with a CONSUMER span,
// child of the publisher's span (from the traceparent header).
func WithTracer(tr trace.Tracer) Option { return func(l *Listeners) { l.tracer = tr } }

// WithAckWait sets how long the server waits for an acknowledgement before
// it delivers an event again (default 30 s): the time for which a crashed
// process's event stays blocked. Handlers are kept alive by heartbeats
// (every AckWait/3) however long they run.
func WithAckWait(d time.Duration) Option { return func(l *Listeners) { l.ackWait = d } }

// WithMaxEventSize bounds accepted event bodies (default
// wire.DefaultMaxEnvelope); larger ones are dead-lettered as malformed.
func WithMaxEventSize(n int) Option { return func(l *Listeners) { l.maxSize = n } }

// WithShutdownGrace is how long Run lets running handlers finish after its
// context ends before it cancels their context (default 30 s).
func WithShutdownGrace(d time.Duration) Option { return func(l *Listeners) { l.grace = d } }

// WithWorkerID names this process in dead letters (default host:pid).
func WithWorkerID(id string) Option { return func(l *Listeners) { l.worker = id } }

// WithMetrics counts handled events in m
// (connector.events.handled{event.listener, event.model, event.name,
// event.outcome}, outcome one of succeeded, skipped, retried, dead).
func WithMetrics(m *telemetry.Metrics) Option { return func(l *Listeners) { l.metrics = m } }

// Event outcomes counted by WithMetrics.
const (
	outcomeSucceeded = telemetry.OutcomeSucceeded
	outcomeSkipped   = "skipped"
	outcomeRetried   = telemetry.OutcomeRetried
	outcomeDead      = telemetry.OutcomeDead
)

// ListenOption configures one listener.
type ListenOption func(*listener)

// WithSkipIf skips (acknowledges without calling the handler) the events
// for which any of preds is true.
func WithSkipIf(preds ...Predicate) ListenOption {
	return func(li *listener) { li.skip = append(li.skip, preds...) }
}

// WithPartitions sets how many events of the listener may be handled at
// once across the fleet (default 8): a power of two from 1 to 256. Events
// of one record always fall in the same partition and a partition hands out
// one event at a time, which keeps each record's events in order. The
// number is part of the listener's identity (its consumer names): changing
// it starts new consumers that read the stream from its beginning.
func WithPartitions(n int) ListenOption { return func(li *listener) { li.partitions = n } }

// WithMaxDeliver sets how many times a failing event is delivered before it
// is dead-lettered with reason "error" (default 5; 1 = no retry).
func WithMaxDeliver(n int) ListenOption { return func(li *listener) { li.maxDeliver = n } }

// WithRetryDelay sets the delay before delivering a failed event again,
// given the attempt that failed (default 1 s doubling, at most 1 min). The
// event's partition waits meanwhile: later events of the same records must
// not overtake it.
func WithRetryDelay(f func(attempt int) time.Duration) ListenOption {
	return func(li *listener) { li.retryDelay = f }
}

type listener struct {
	name, model, event string
	handler            Handler
	skip               []Predicate
	partitions         int
	maxDeliver         int
	retryDelay         func(int) time.Duration
}

// NewListeners returns an empty set of listeners reading names' events
// stream. rdb keeps, per listener partition, the stream sequence of the
// last event handled, so that an event delivered again after its
// acknowledgement was lost is not handled twice; it may be nil (then such
// an event is handled again: delivery is at least once either way).
func NewListeners(js jetstream.JetStream, rdb redis.UniversalClient, names wire.Names, log *zap.Logger, opts ...Option) *Listeners {
	l := &Listeners{js: js, rdb: rdb, names: names, log: log, ackWait: DefaultAckWait, maxSize: wire.DefaultMaxEnvelope,
		grace: 30 * time.Second,
		mark:  redis.NewScript(markScript)}
	for _, o := range opts {
		o(l)
	}
	if l.log == nil {
		l.log = zap.NewNop()
	}
	if l.ackWait <= 0 {
		l.ackWait = DefaultAckWait
	}
	if l.worker == "" {
		host, _ := os.Hostname()
		l.worker = host + ":" + strconv.Itoa(os.Getpid())
	}
	return l
}

// On registers listener name for the events named event of model (event ""
// for every event of the model). The name identifies the listener across the
// fleet (it names its durable consumers): letters, digits, '_' and '-', and
// every process must register it with the same model and event.
func (l *Listeners) On(name, model, event string, h Handler, opts ...ListenOption) error {
	li := &listener{name: name, model: model, event: event, handler: h,
		partitions: DefaultPartitions, maxDeliver: DefaultMaxDeliver, retryDelay: defaultRetryDelay}
	for _, o := range opts {
		o(li)
	}
	if err := wire.ValidID(name); err != nil || len(name) > 64 {
		return fmt.Errorf("%w: name %q (1-64 letters, digits, '_' or '-')", ErrBadListener, name)
	}
	if err := wire.ValidModel(model); err != nil {
		return fmt.Errorf("%w: %w", ErrBadListener, err)
	}
	if event != "" {
		if err := wire.ValidEventName(event); err != nil {
			return fmt.Errorf("%w: %w", ErrBadListener, err)
		}
	}
	if h == nil {
		return fmt.Errorf("%w: %s: nil handler", ErrBadListener, name)
	}
	if p := li.partitions; p < 1 || p > wire.EventBuckets || p&(p-1) != 0 {
		return fmt.Errorf("%w: %s: partitions %d (a power of two, 1-%d)", ErrBadListener, name, p, wire.EventBuckets)
	}
	if li.retryDelay == nil {
		li.retryDelay = defaultRetryDelay
	}
	if li.maxDeliver < 1 {
		return fmt.Errorf("%w: %s: max deliver %d", ErrBadListener, name, li.maxDeliver)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.running {
		return ErrRunning
	}
	for _, o := range l.listeners {
		if o.name == name {
			return fmt.Errorf("%w: %s registered twice", ErrBadListener, name)
		}
	}
	l.listeners = append(l.listeners, li)
	return nil
}

func defaultRetryDelay(attempt int) time.Duration {
	d := time.Second
	for i := 1; i < attempt && d < time.Minute; i++ {
		d *= 2
	}
	return min(d, time.Minute)
}

// ConsumerName is the durable consumer of partition i of a listener with n
// partitions: ev_<listener>_<i>of<n>.
func ConsumerName(listener string, i, n int) string {
	return fmt.Sprintf("ev_%s_%dof%d", listener, i, n)
}

// partition is one durable consumer of a listener.
type partition struct {
	l      *Listeners
	li     *listener
	index  int
	consum string
	cons   jetstream.Consumer
	seqKey string
	dest   string
}

// Run creates the listeners' consumers (idempotently) and handles events
// until ctx ends; then it stops fetching, waits for the handlers running
// and returns nil. Handlers' context is not cancelled by ctx, only once the
// shutdown grace period (WithShutdownGrace) has passed. It returns an
// error when a consumer cannot be created at start. A consumer that stops
// later (deleted by an operator, connection closed) is created again and
// consumed anew, every second until it works.
func (l *Listeners) Run(ctx context.Context) error {
	l.mu.Lock()
	if l.running {
		l.mu.Unlock()
		return ErrRunning
	}
	l.running = true
	lis := append([]*listener(nil), l.listeners...)
	l.mu.Unlock()

	stream, err := l.js.Stream(ctx, l.names.EventsStream())
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("events: %w", err)
	}
	// The marks are keyed by the stream's creation time: a recreated
	// stream, whose sequences start again at 1, must not inherit them.
	created := strconv.FormatInt(stream.CachedInfo().Created.UnixNano(), 10)

	var parts []*partition
	for _, li := range lis {
		for i := 0; i < li.partitions; i++ {
			p := &partition{l: l, li: li, index: i,
				consum: ConsumerName(li.name, i, li.partitions),
				dest:   l.names.EventsStream(),
			}
			p.seqKey = l.names.RedisKey("events", "seq", p.consum, created)
			cons, err := l.js.CreateOrUpdateConsumer(ctx, l.names.EventsStream(), p.config())
			if err != nil {
				if ctx.Err() != nil {
					return nil // stopped while starting
				}
				return fmt.Errorf("events: listener %s: consumer %s: %w", li.name, p.consum, err)
			}
			p.cons = cons
			parts = append(parts, p)
		}
	}

	g := &gate{}
	hctx, hcancel := context.WithCancel(context.WithoutCancel(ctx))
	defer hcancel()
	var wg sync.WaitGroup
	for _, p := range parts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.supervise(ctx, hctx, g)
		}()
	}
	l.log.Info("events: listening", zap.Int("listeners", len(lis)), zap.Int("consumers", len(parts)))
	<-ctx.Done()
	g.stop()
	grace := time.AfterFunc(l.grace, hcancel)
	defer grace.Stop()
	wg.Wait()
	g.inflight.Wait()
	return nil
}

// gate lets handlers start until stop, and counts those running.
type gate struct {
	mu       sync.RWMutex
	stopping bool
	inflight sync.WaitGroup
}

func (g *gate) enter() bool {
	g.mu.RLock()
	defer g.mu.RUnlock()
	if g.stopping {
		return false
	}
	g.inflight.Add(1)
	return true
}

func (g *gate) stop() {
	g.mu.Lock()
	g.stopping = true
	g.mu.Unlock()
}

// supervise consumes the partition until ctx ends, starting over when the
// consumption stops by itself.
func (p *partition) supervise(ctx, hctx context.Context, g *gate) {
	log := p.l.log.With(zap.String("listener", p.li.name), zap.String("consumer", p.consum))
	cons := p.cons
	for {
		if cons != nil {
			cc, err := cons.Consume(func(msg jetstream.Msg) {
				if !g.enter() {
					// Shutting down: give it back at once rather than
					// blocking the partition for AckWait.
					_ = msg.Nak()
					return
				}
				defer g.inflight.Done()
				p.handle(hctx, msg)
			},
				jetstream.PullMaxMessages(1),
				// Short pulls: a Consume with PullMaxMessages(1) was seen
				// to stall for a whole PullExpiry now and then (facts file).
				jetstream.PullExpiry(2*time.Second),
				jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
					if ctx.Err() == nil {
						log.Warn("events: consume", zap.Error(err))
					}
				}),
			)
			if err != nil {
				log.Warn("events: consume", zap.Error(err))
			} else {
				select {
				case <-ctx.Done():
					// Drain, not Stop: an event already in the client
					// buffer reaches the callback, which gives it back.
					cc.Drain()
					select {
					case <-cc.Closed():
					case <-time.After(5 * time.Second):
					}
					return
				case <-cc.Closed():
					log.Warn("events: consumption stopped; creating the consumer again")
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
		var err error
		cons, err = p.l.js.CreateOrUpdateConsumer(ctx, p.l.names.EventsStream(), p.config())
		if err != nil && ctx.Err() == nil {
			log.Warn("events: create consumer", zap.Error(err))
		}
	}
}

func (p *partition) config() jetstream.ConsumerConfig {
	n := p.li.partitions
	var filters []string
	if n == 1 {
		filters = []string{p.l.names.EventFilter(p.li.model, p.li.event, "")}
	} else {
		for b := p.index; b < wire.EventBuckets; b += n {
			filters = append(filters, p.l.names.EventFilter(p.li.model, p.li.event, fmt.Sprintf("%02x", b)))
		}
	}
	return jetstream.ConsumerConfig{
		Durable:        p.consum,
		Description:    fmt.Sprintf("events listener %s, partition %d of %d", p.li.name, p.index, n),
		FilterSubjects: filters,
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        p.l.ackWait,
		// One event at a time per partition, fleet-wide: per-record order.
		MaxAckPending: 1,
		// Dead-lettering is ours: the server must not silently stop
		// delivering an event we have not dead-lettered yet.
		MaxDeliver: -1,
	}
}

// handle processes one delivery. It never returns an error: every path
// ends in Ack, NakWithDelay or dead letter + Term.
func (p *partition) handle(ctx context.Context, msg jetstream.Msg) {
	log := p.l.log.With(zap.String("listener", p.li.name), zap.String("subject", msg.Subject()))
	meta, err := msg.Metadata()
	if err != nil {
		log.Error("events: no metadata", zap.Error(err))
		_ = msg.Nak()
		return
	}
	seq := meta.Sequence.Stream
	attempt := int(meta.NumDelivered)
	log = log.With(zap.Uint64("seq", seq), zap.Int("attempt", attempt))

	if last, err := p.lastHandled(ctx); err != nil {
		log.Warn("events: read last handled sequence", zap.Error(err))
	} else if seq <= last {
		// Handled before; only the acknowledgement was lost.
		_ = msg.Ack()
		return
	}

	ev, reason, err := p.decode(msg)
	if err != nil {
		log.Warn("events: bad event, dead-lettered", zap.String("reason", reason), zap.String("error", telemetry.Redact(err.Error())))
		if p.dead(ctx, log, msg, seq, attempt, reason, err, "") {
			p.count(ctx, Event{Name: "_invalid"}, outcomeDead)
		}
		return
	}
	ev.Seq, ev.Attempt = seq, attempt

	var skip bool
	if err, stack := protect(func() error { skip = p.skipped(ev); return nil }); err != nil {
		p.fail(ctx, log, msg, ev, err, stack)
		return
	}
	if skip {
		log.Debug("events: skipped", zap.String("event_id", ev.ID))
		p.done(ctx, log, msg, seq)
		p.count(ctx, ev, outcomeSkipped)
		return
	}

	sctx, span := telemetry.StartConsumerSpan(ctx, p.l.tracer, telemetry.ParentMode, p.dest, p.consum, ev.ID, msg.Headers(),
		attribute.String("connector.event.model", ev.Model),
		attribute.String("connector.event.name", ev.Name),
		attribute.String("connector.event.record_id", ev.RecordID),
		attribute.String("connector.listener", p.li.name),
		attribute.Int("messaging.nats.delivery_count", attempt),
	)
	err, stack := p.call(sctx, msg, ev)
	if err == nil {
		span.End()
		p.done(ctx, log, msg, seq)
		p.count(ctx, ev, outcomeSucceeded)
		return
	}
	telemetry.RecordError(span, err)
	span.End()
	p.fail(ctx, log, msg, ev, err, stack)
}

func (p *partition) skipped(ev Event) bool {
	for _, pred := range p.li.skip {
		if pred(ev) {
			return true
		}
	}
	return false
}

// fail retries a failed event after a delay, or dead-letters it on its
// last delivery (reason "panic" when stack is set, else "error").
func (p *partition) fail(ctx context.Context, log *zap.Logger, msg jetstream.Msg, ev Event, err error, stack string) {
	if ev.Attempt >= p.li.maxDeliver {
		reason := wire.ReasonError
		if stack != "" {
			reason = wire.ReasonPanic
		}
		log.Error("events: handler failed for good, dead-lettered", zap.String("event_id", ev.ID), zap.String("error", telemetry.Redact(err.Error())))
		if p.dead(ctx, log, msg, ev.Seq, ev.Attempt, reason, err, stack) {
			p.count(ctx, ev, outcomeDead)
		}
		return
	}
	delay := p.li.retryDelay(ev.Attempt)
	log.Warn("events: handler failed, will retry", zap.String("event_id", ev.ID), zap.Duration("delay", delay), zap.String("error", telemetry.Redact(err.Error())))
	_ = msg.NakWithDelay(delay)
	p.count(ctx, ev, outcomeRetried)
}

func (p *partition) count(ctx context.Context, ev Event, outcome string) {
	p.l.metrics.EventHandled(ctx, p.li.name, p.li.model, ev.Name, outcome)
}

// protect runs f, turning a panic into an error and a stack.
func protect(f func() error) (err error, stack string) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("events: panic: %v", r)
			stack = string(debug.Stack())
		}
	}()
	return f(), ""
}

// call runs the handler with heartbeats, turning a panic into an error.
func (p *partition) call(ctx context.Context, msg jetstream.Msg, ev Event) (err error, stack string) {
	stop := make(chan struct{})
	var hb sync.WaitGroup
	hb.Add(1)
	go func() {
		defer hb.Done()
		t := time.NewTicker(p.l.ackWait / 3)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				_ = msg.InProgress()
			}
		}
	}()
	defer func() {
		close(stop)
		hb.Wait()
	}()
	return protect(func() error { return p.li.handler(ctx, ev) })
}

// decode turns a message into an Event, or says why it cannot.
func (p *partition) decode(msg jetstream.Msg) (Event, string, error) {
	body, err := wire.DecodeEvent(msg.Data(), p.l.maxSize)
	if err != nil {
		return Event{}, wire.ReasonMalformed, fmt.Errorf("%w: %w", ErrInvalidEvent, err)
	}
	model, event, bucket, err := p.l.names.ParseEventSubject(msg.Subject())
	if err != nil {
		return Event{}, wire.ReasonUnknownModel, fmt.Errorf("%w: %w", ErrInvalidEvent, err)
	}
	if model != body.Model || model != p.li.model || event != body.Event || bucket != wire.EventBucket(body.RecordID) {
		return Event{}, wire.ReasonUnknownModel, fmt.Errorf("%w: body (%s %s of %q) does not match subject %s",
			ErrInvalidEvent, body.Model, body.Event, body.RecordID, msg.Subject())
	}
	return Event{
		ID: body.ID, Model: body.Model, Name: body.Event, RecordID: body.RecordID,
		Fields: body.Fields, Origin: body.Origin, Time: wire.FromMillis(body.Time), Data: body.Data,
		Subject: msg.Subject(), Headers: msg.Headers(),
	}, "", nil
}

// done records seq as handled and acknowledges the event.
func (p *partition) done(ctx context.Context, log *zap.Logger, msg jetstream.Msg, seq uint64) {
	p.markHandled(ctx, log, seq)
	if err := msg.Ack(); err != nil {
		log.Warn("events: ack", zap.Error(err))
	}
}

// dead keeps a letter of the event in the dead-letter stream, then
// terminates it. If the letter cannot be written the event is delivered
// again later rather than lost, and dead returns false.
func (p *partition) dead(ctx context.Context, log *zap.Logger, msg jetstream.Msg, seq uint64, attempt int, reason string, cause error, stack string) bool {
	letter := &wire.DeadLetter{
		V: 1, Reason: reason, Error: cause.Error(), ErrorType: fmt.Sprintf("%T", cause), Stack: stack,
		Attempts: attempt, Subject: msg.Subject(), StreamSeq: seq, DiedAt: time.Now().UnixMilli(),
		Worker: p.l.worker, Headers: msg.Headers(), Data: msg.Data(),
	}
	data, err := wire.Marshal(letter)
	if err == nil {
		m := nats.NewMsg(p.l.names.DeadEventSubject(p.li.name, seq))
		m.Header.Set(wire.HeaderMsgID, "event-"+p.li.name+"-"+strconv.FormatUint(seq, 10))
		m.Header.Set(wire.HeaderDeadWhy, reason)
		m.Data = data
		_, err = p.l.js.PublishMsg(ctx, m)
	}
	if err != nil {
		log.Error("events: cannot write dead letter, will retry", zap.Error(err))
		_ = msg.NakWithDelay(p.li.retryDelay(attempt))
		return false
	}
	p.markHandled(ctx, log, seq)
	if err := msg.TermWithReason(reason); err != nil {
		log.Warn("events: term", zap.Error(err))
	}
	return true
}

const markScript = `local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > cur then redis.call('SET', KEYS[1], ARGV[1]) end
return cur`

func (p *partition) markHandled(ctx context.Context, log *zap.Logger, seq uint64) {
	if p.l.rdb == nil {
		return
	}
	if err := p.l.mark.Run(ctx, p.l.rdb, []string{p.seqKey}, seq).Err(); err != nil {
		log.Warn("events: record last handled sequence", zap.Error(err))
	}
}

func (p *partition) lastHandled(ctx context.Context) (uint64, error) {
	if p.l.rdb == nil {
		return 0, nil
	}
	v, err := p.l.rdb.Get(ctx, p.seqKey).Uint64()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	return v, err
}
