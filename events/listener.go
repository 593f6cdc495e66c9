package events

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/connector-go/connector/internal/telemetry"
	"github.com/connector-go/connector/internal/wire"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
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
	// ErrListenerConflict: the events stream holds consumers of the
	// listener's name that filter another model or event than this
	// process registered. Run returns a *ConflictError matching it.
	ErrListenerConflict = errors.New("events: listener defined differently in the stream")
	// ErrNotListening: the listeners do not handle events: Run has not
	// been called, is still creating the consumers, is stopping, or has
	// returned. Ready returns an error matching it.
	ErrNotListening = errors.New("events: listeners not listening")
)

// Defaults.
const (
	DefaultPartitions = 8
	DefaultMaxDeliver = 5
	DefaultAckWait    = 30 * time.Second
	// DefaultShutdownGrace is the worker's (worker.DefaultShutdownGrace):
	// within the 30 s a pod gets to stop.
	DefaultShutdownGrace = 25 * time.Second
)

// Listeners runs the listeners of one process. Every process of the fleet
// registers the same listeners (same names, models, events); they share
// the listeners' durable consumers, so the fleet handles each event once
// per listener.
type Listeners struct {
	shared
	js      jetstream.JetStream
	rdb     redis.UniversalClient
	names   wire.Names
	log     *zap.Logger
	tracer  trace.Tracer
	link    telemetry.LinkMode
	ackWait time.Duration
	maxSize int
	worker  string
	mark    *redis.Script
	metrics *telemetry.Metrics
	mp      metric.MeterProvider
	grace   time.Duration
	retired time.Duration // InactiveThreshold of retired partition consumers

	pollInterval, watchInterval time.Duration

	mu        sync.Mutex
	running   bool
	listeners []*listener
	state     atomic.Int32 // a runState, for Ready
}

// runState is where Run is, as Ready reports it.
type runState int32

const (
	notRun runState = iota
	starting
	listening
	stopping
	stopped
)

// WithRedis keeps, per listener partition, the stream sequence of the
// last event handled, so that an event delivered again after its
// acknowledgement was lost is not handled twice. Without it such an event
// is handled again: delivery is at least once either way.
func WithRedis(rdb redis.UniversalClient) Option {
	return listenersOption(func(l *Listeners) { l.rdb = rdb })
}

// WithLogger sets the listeners' logger (default: none).
func WithLogger(log *zap.Logger) Option { return listenersOption(func(l *Listeners) { l.log = log }) }

// WithMeterProvider counts handled events
// (connector.events.handled{event.listener, event.model, event.name,
// event.outcome}, outcome one of succeeded, skipped, retried, dead).
func WithMeterProvider(mp metric.MeterProvider) Option {
	return listenersOption(func(l *Listeners) { l.mp = mp })
}

// WithLinkedTraces makes the handling of each event start a new trace whose
// root CONSUMER span links to the publisher's span, instead of being its
// child (the default): as the messaging conventions recommend when events
// are handled long after publication or retried, and as
// worker.WithLinkedTraces does for jobs. What the handler does (jobs it
// enqueues) belongs to the new trace. Events without trace context start a
// new trace either way.
func WithLinkedTraces() Option {
	return listenersOption(func(l *Listeners) { l.link = telemetry.LinkedMode })
}

// WithAckWait sets how long the server waits for an acknowledgement before
// it delivers an event again (default 30 s): the time for which a crashed
// process's event stays blocked; at least 1 s. Handlers are kept alive by
// heartbeats (every AckWait/3) however long they run.
func WithAckWait(d time.Duration) Option {
	return listenersOption(func(l *Listeners) { l.ackWait = d })
}

// WithMaxEventSize bounds accepted event bodies (default 1 MiB); larger
// ones are dead-lettered as malformed.
func WithMaxEventSize(n int) Option {
	return listenersOption(func(l *Listeners) { l.maxSize = n })
}

// WithShutdownGrace is how long Run lets running handlers finish after its
// context ends before it cancels their context (default
// DefaultShutdownGrace, 25 s).
func WithShutdownGrace(d time.Duration) Option {
	return listenersOption(func(l *Listeners) { l.grace = d })
}

// DefaultRetiredConsumerTTL is how long a retired partition consumer stays
// after its last pull request, by default.
const DefaultRetiredConsumerTTL = 24 * time.Hour

// WithRetiredConsumerTTL sets how long the consumers of a listener's
// retired partitioning (after a change of WithPartitions) stay in the
// stream once nothing pulls from them (default DefaultRetiredConsumerTTL):
// a takeover gives them this InactiveThreshold, and the server deletes
// them when it passes, as an operator may do by hand. Taking a set back
// clears it. 0 keeps them until deleted by hand.
func WithRetiredConsumerTTL(d time.Duration) Option {
	return listenersOption(func(l *Listeners) { l.retired = max(d, 0) })
}

// WithWorkerID names this process in dead letters (default host:pid).
func WithWorkerID(id string) Option {
	return listenersOption(func(l *Listeners) { l.worker = id })
}

// Event outcomes counted by WithMeterProvider.
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
//
// A skipped event is done for the listener, as a handled one: its name
// keeps its place in the stream (its consumers and Redis marks), so
// changing the predicates under the same name applies to the events from
// then on, and the events skipped before are not considered again (Replay
// or a new listener name does that).
func WithSkipIf(preds ...Predicate) ListenOption {
	return func(li *listener) { li.skip = append(li.skip, preds...) }
}

// WithPartitions sets how many events of the listener may be handled at
// once across the fleet (default 8): a power of two from 1 to 256. Events
// of one record always fall in the same partition and a partition hands out
// one event at a time, which keeps each record's events in order. The
// number does not depend on how many processes run: each process pulls
// from every partition.
//
// Every process should register the listener with the same number. A
// process configured with another number than the consumers the fleet is
// running does not consume (no event is handled twice): it waits until no
// process runs the other number any more, then takes the listener over
// where the old consumers stopped, so a rolling deploy changes the number
// without replaying or skipping events (docs/events.md, "Changing the
// partitions").
func WithPartitions(n int) ListenOption { return func(li *listener) { li.partitions = n } }

// WithMaxDeliver sets how many times a failing event is delivered before it
// is dead-lettered with reason "error" ("panic" when the handler panicked
// on the last delivery) (default 5; 1 = no retry).
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

// NewListeners returns an empty set of listeners reading the events stream
// of the deployment named by WithPrefix (default "connector"); add
// listeners with On, then Run them. It fails only on a prefix that cannot
// name subjects, an ack wait under 1 s, or a meter provider that refuses
// the events' counter.
func NewListeners(js jetstream.JetStream, opts ...Option) (*Listeners, error) {
	l := &Listeners{js: js, ackWait: DefaultAckWait, maxSize: wire.DefaultMaxEnvelope,
		grace: DefaultShutdownGrace, retired: DefaultRetiredConsumerTTL,
		mark:         redis.NewScript(markScript),
		pollInterval: defaultPollInterval, watchInterval: defaultWatchInterval}
	for _, o := range opts {
		o.applyListeners(l)
	}
	names, err := wire.NewNames(l.prefix)
	if err != nil {
		return nil, fmt.Errorf("events: %w", err)
	}
	l.names, l.tracer = names, l.newTracer()
	if l.mp != nil {
		if l.metrics, err = telemetry.NewMetrics(l.mp); err != nil {
			return nil, fmt.Errorf("events: metrics: %w", err)
		}
	}
	if l.log == nil {
		l.log = zap.NewNop()
	}
	if l.ackWait <= 0 {
		l.ackWait = DefaultAckWait
	}
	if l.ackWait < time.Second {
		// As the worker's: heartbeats every AckWait/3 (a zero tick panics).
		return nil, fmt.Errorf("events: ack wait must be >= 1s (got %s)", l.ackWait)
	}
	if l.worker == "" {
		host, _ := os.Hostname()
		l.worker = host + ":" + strconv.Itoa(os.Getpid())
	}
	return l, nil
}

// On registers listener name for the events named event of model (event ""
// for every event of the model). The name identifies the listener across the
// fleet (it names its durable consumers): 1-64 letters, digits, '_' or '-'
// (GuardName is reserved), and every process must register it with the
// same model and event: Run refuses, with ErrListenerConflict, a listener
// whose consumers in the stream filter another model or event. Once those
// consumers are deleted, the name with another model or event is a new
// listener: it reads every event of its definition still in the stream
// (the marks of WithRedis are per definition).
func (l *Listeners) On(name, model, event string, h Handler, opts ...ListenOption) error {
	li := &listener{name: name, model: model, event: event, handler: h,
		partitions: DefaultPartitions, maxDeliver: DefaultMaxDeliver, retryDelay: defaultRetryDelay}
	for _, o := range opts {
		o(li)
	}
	if name == GuardName {
		return badName(name)
	}
	if err := checkName(name); err != nil {
		return err
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

// partition is one durable consumer of a listener, as consumed by this
// process during one term of its runner.
type partition struct {
	l      *Listeners
	li     *listener
	r      *runner
	index  int
	consum string
	seqKey string
	// markTTL and created (the stream's creation time, keying the
	// hand-back counts) are the runner's when the term began: a handler
	// may outlive its term, while the runner reads the stream again.
	markTTL time.Duration
	created string
	dest    string
	spans   *telemetry.ConsumerSpans // built once per partition

	// cons is the consumer; last its configuration as last seen, used to
	// create it again (same start, same floors) if it is deleted.
	cons jetstream.Consumer
	last jetstream.ConsumerConfig
	// floors are the handover floors of the partition's buckets: an event
	// of bucket b at or below floors[b] was handled by the listener's
	// previous partitioning (see takeOver). Reloaded by use while a
	// callback of the previous consumption may still be running.
	floors atomic.Pointer[map[int]uint64]
}

// Run creates the listeners' consumers (idempotently) and handles events
// until ctx ends; then it stops fetching, waits for the handlers running
// and returns nil. Handlers' context is not cancelled by ctx, only once the
// shutdown grace period (WithShutdownGrace) has passed.
//
// Run returns an error when a consumer cannot be created at start, and an
// error matching ErrListenerConflict when the stream holds consumers of a
// listener's name filtered on another model or event (another definition
// of the listener). A listener whose consumers exist with another
// partition count is not an error: this process waits until no process
// consumes them any more, then takes the listener over (docs/events.md,
// "Changing the partitions"). A consumer that stops later (deleted by an
// operator, connection closed) is created again and consumed anew, every
// second until it works.
func (l *Listeners) Run(ctx context.Context) error {
	l.mu.Lock()
	if l.running {
		l.mu.Unlock()
		return ErrRunning
	}
	l.running = true
	lis := append([]*listener(nil), l.listeners...)
	l.mu.Unlock()
	l.state.Store(int32(starting))
	defer l.state.Store(int32(stopped))

	stream, err := l.js.Stream(ctx, l.names.EventsStream())
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("events: %w", err)
	}
	created, markTTL := streamMarks(stream.CachedInfo())

	runners := make([]*runner, 0, len(lis))
	for _, li := range lis {
		r := newRunner(l, li, created, markTTL)
		if err := r.start(ctx); err != nil {
			if ctx.Err() != nil {
				return nil // stopped while starting
			}
			return err
		}
		runners = append(runners, r)
	}
	var guard *guard
	if len(lis) > 0 {
		if guard, err = l.newGuard(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}

	g := &gate{}
	hctx, hcancel := context.WithCancel(context.WithoutCancel(ctx))
	defer hcancel()
	var wg sync.WaitGroup
	for _, r := range runners {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.run(ctx, hctx, g)
		}()
	}
	if guard != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			guard.run(ctx)
		}()
	}
	l.state.Store(int32(listening))
	l.log.Info("events: listening", zap.Int("listeners", len(lis)))
	<-ctx.Done()
	l.state.Store(int32(stopping))
	g.stop()
	grace := time.AfterFunc(l.grace, hcancel)
	defer grace.Stop()
	done := make(chan struct{})
	go func() {
		wg.Wait()
		g.inflight.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-hctx.Done():
		// Grace over, handlers cancelled: one that ignores its context
		// gets stuckWait more, then Run returns anyway (as the worker's
		// does); its event is not settled and comes back after its ack
		// wait, to this listener in another process.
		select {
		case <-done:
		case <-time.After(stuckWait):
			l.log.Warn("events: handlers still running past the shutdown grace; their events come back after their ack wait")
		}
	}
	return nil
}

// Ready returns nil while Run listens: every listener's consumers exist
// and Run handles their events. Before Run, while Run gets the events
// stream and creates the consumers, once its context ends (while it waits
// for the handlers running) and after it has returned, Ready returns an
// error matching ErrNotListening that says which. A Run that fails at
// start (ErrListenerConflict, a consumer it cannot create) leaves it
// failing for good. Listeners with no listener registered are ready once
// Run has found the events stream.
//
// Ready is a readiness check. A process answering a readiness probe
// (Kubernetes' /readyz) adds it to its checks, so that a new pod does not
// count as ready, and a rolling update does not stop the old pods, before
// its listeners run, or when they cannot start:
//
//	health.AddCheck("events", func(context.Context) error { return l.Ready() })
//
// It makes no request and answers at once. It reports Run's progress, not
// the server's: a listener waiting to take over another partitioning
// from the processes still consuming it (docs/events.md, "Changing the
// partitions") is listening, as that wait must not hold a rolling update;
// a consumer deleted later, while Run creates it again, does not make it
// fail (a check of the NATS connection and the streams does).
func (l *Listeners) Ready() error {
	switch runState(l.state.Load()) {
	case listening:
		return nil
	case notRun:
		return fmt.Errorf("%w: Run has not been called", ErrNotListening)
	case starting:
		return fmt.Errorf("%w: Run is creating the consumers", ErrNotListening)
	case stopping:
		return fmt.Errorf("%w: Run is stopping", ErrNotListening)
	default:
		return fmt.Errorf("%w: Run has returned", ErrNotListening)
	}
}

// stuckWait is how long Run still waits, once the shutdown grace is over,
// for handlers that ignore their cancelled context.
const stuckWait = 3 * time.Second

// streamMarks is how the Redis marks of the events stream described by
// info are kept: their key's stream part and their TTL.
func streamMarks(info *jetstream.StreamInfo) (created string, markTTL time.Duration) {
	// The marks are keyed by the stream's creation time: a recreated
	// stream, whose sequences start again at 1, must not inherit them.
	created = strconv.FormatInt(info.Created.UnixNano(), 10)
	// A mark outlives its last update by the stream's MaxAge and a day:
	// by then every event it covers is gone from the stream, and the marks
	// of retired consumers and of replaced streams do not pile up.
	if age := info.Config.MaxAge; age > 0 {
		markTTL = age + 24*time.Hour
	}
	return created, markTTL
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

// supervise consumes the partition until tctx (the runner's term) ends,
// starting over when the consumption stops by itself. It ends the term
// (endTerm) when the partition's consumer turns out to be retired.
func (p *partition) supervise(tctx, hctx context.Context, g *gate, endTerm context.CancelFunc) {
	log := p.l.log.With(zap.String("listener", p.li.name), zap.String("consumer", p.consum))
	cons := p.cons
	for {
		if cons != nil {
			handle := func(msg jetstream.Msg) {
				if tctx.Err() != nil || !g.enter() {
					// Shutting down, or the listener is no longer ours:
					// give it back at once rather than blocking the
					// partition for AckWait.
					p.handBack(log, msg)
					return
				}
				defer g.inflight.Done()
				p.handle(hctx, msg)
			}
			if consume(tctx, log, cons, handle,
				jetstream.PullMaxMessages(1),
				// Short pulls: a Consume with PullMaxMessages(1) was seen
				// to stall for a whole PullExpiry now and then (facts file).
				// The takeover's idle check (idleWindow) relies on it too.
				jetstream.PullExpiry(pullExpiry)) {
				return
			}
		}
		select {
		case <-tctx.Done():
			return
		case <-time.After(time.Second):
		}
		var err error
		cons, err = p.r.recreate(tctx, p)
		switch {
		case errors.Is(err, errRetired):
			log.Warn("events: consumer retired by another process; stopping this partitioning")
			endTerm()
			return
		case errors.Is(err, errStreamReplaced):
			// Its sequences start again: the consumer's last
			// configuration (start, floors) and the marks of the old
			// stream say nothing about the new one.
			log.Warn("events: the events stream was replaced; starting the listener over on the new stream")
			endTerm()
			return
		case err != nil && tctx.Err() == nil:
			log.Warn("events: create consumer", telemetry.ErrField(err))
		}
	}
}

// handle processes one delivery. It never returns an error: every path
// ends in Ack, NakWithDelay or dead letter + Term.
func (p *partition) handle(ctx context.Context, msg jetstream.Msg) {
	log := p.l.log.With(zap.String("listener", p.li.name), zap.String("subject", msg.Subject()))
	meta, err := msg.Metadata()
	if err != nil {
		log.Error("events: no metadata", telemetry.ErrField(err))
		_ = msg.Nak()
		return
	}
	seq := meta.Sequence.Stream
	attempt := int(meta.NumDelivered)
	if attempt > 1 {
		// Deliveries handed back unrun, or interrupted by a shutdown,
		// are not attempts.
		attempt = max(1, attempt-p.handbacks(ctx, log, seq))
	}
	log = log.With(zap.Uint64("seq", seq), zap.Int("attempt", attempt))

	if f, ok := (*p.floors.Load())[subjectBucket(msg.Subject())]; ok && seq <= f {
		// Handled under the listener's previous partitioning.
		_ = msg.Ack()
		return
	}
	if last, err := p.lastHandled(ctx); err != nil {
		log.Warn("events: read last handled sequence", telemetry.ErrField(err))
	} else if seq <= last {
		// Handled before; only the acknowledgement was lost.
		_ = msg.Ack()
		return
	}

	if target := msg.Headers().Get(wire.HeaderReplayFor); target != "" && target != p.li.name {
		// Replayed from another listener's dead letter: not ours.
		log.Debug("events: replay for another listener", zap.String("replay_for", target))
		p.done(ctx, log, msg, seq)
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
	if stack, err := protect(func() error { skip = p.skipped(ev); return nil }); err != nil {
		p.fail(ctx, log, msg, ev, err, stack)
		return
	}
	if skip {
		log.Debug("events: skipped", zap.String("event_id", ev.ID))
		p.done(ctx, log, msg, seq)
		p.count(ctx, ev, outcomeSkipped)
		return
	}

	sctx, span := p.spans.Start(ctx, ev.ID, telemetry.HeaderCarrier(msg.Headers()),
		attribute.String("connector.event.model", ev.Model),
		attribute.String("connector.event.name", ev.Name),
		attribute.String("connector.event.record_id", ev.RecordID),
		attribute.String("connector.listener", p.li.name),
		attribute.Int("messaging.nats.delivery_count", attempt),
	)
	stack, err := p.call(sctx, msg, ev)
	if err == nil {
		span.End()
		p.done(ctx, log, msg, seq)
		p.count(ctx, ev, outcomeSucceeded)
		return
	}
	if ctx.Err() != nil && stack == "" && errors.Is(err, context.Canceled) {
		// The shutdown's grace period ended and the handler gave up: not
		// the event's fault, nor an attempt (on its last one, it would
		// be dead-lettered). Another process takes it at once.
		span.End()
		log.Warn("events: handler stopped by the shutdown; handed back", zap.String("event_id", ev.ID))
		p.handBack(log, msg)
		return
	}
	telemetry.RecordError(span, err)
	span.End()
	p.fail(ctx, log, msg, ev, err, stack)
}

// handBack gives msg back for another delivery at once, and counts it in
// Redis so that this delivery is not taken for an attempt (handbacks).
// Without Redis, or when the count fails, it counts as one.
func (p *partition) handBack(log *zap.Logger, msg jetstream.Msg) {
	if meta, err := msg.Metadata(); err == nil && p.l.rdb != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		k := p.handbackKey(meta.Sequence.Stream)
		ttl := p.markTTL
		if ttl <= 0 {
			ttl = 7 * 24 * time.Hour
		}
		pipe := p.l.rdb.Pipeline()
		pipe.Incr(ctx, k)
		pipe.PExpire(ctx, k, ttl)
		if _, err := pipe.Exec(ctx); err != nil {
			log.Warn("events: hand-back not counted: the next delivery counts as an attempt", telemetry.ErrField(err))
		}
		cancel()
	}
	_ = msg.Nak()
}

// handbacks is how many deliveries of the event at seq were handed back
// (0 without Redis or on error).
func (p *partition) handbacks(ctx context.Context, log *zap.Logger, seq uint64) int {
	if p.l.rdb == nil {
		return 0
	}
	n, err := p.l.rdb.Get(ctx, p.handbackKey(seq)).Int()
	if err != nil && !errors.Is(err, redis.Nil) {
		log.Warn("events: read hand-backs: this delivery counts as an attempt", telemetry.ErrField(err))
	}
	return n
}

// handbackKey counts the hand-backs of the event at seq by this partition's
// consumer (whose deliveries NumDelivered counts) in this events stream.
func (p *partition) handbackKey(seq uint64) string {
	return p.l.names.RedisKey("events", "handback", p.consum, p.created, strconv.FormatUint(seq, 10))
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
func protect(f func() error) (stack string, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("events: panic: %v", r)
			stack = string(debug.Stack())
		}
	}()
	return "", f()
}

// call runs the handler with heartbeats, turning a panic into an error.
// The handler runs on a goroutine of its own: one that ends it
// (runtime.Goexit; t.FailNow in a test's handler does) fails the event
// like a panic instead of ending the goroutine that delivers the
// partition's messages.
func (p *partition) call(ctx context.Context, msg jetstream.Msg, ev Event) (stack string, err error) {
	done := make(chan struct{})
	go func() {
		returned := false
		defer func() {
			if !returned {
				stack, err = string(debug.Stack()), errors.New("events: panic: the handler called runtime.Goexit")
			}
			close(done)
		}()
		stack, err = protect(func() error { return p.li.handler(ctx, ev) })
		returned = true
	}()
	t := time.NewTicker(p.l.ackWait / 3)
	defer t.Stop()
	for {
		select {
		case <-done:
			return stack, err
		case <-t.C:
			_ = msg.InProgress()
		}
	}
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
		log.Warn("events: ack", telemetry.ErrField(err))
	}
}

// dead keeps a letter of the event in the dead-letter stream, then
// terminates it. If the letter cannot be written the event is delivered
// again later rather than lost, and dead returns false.
func (p *partition) dead(ctx context.Context, log *zap.Logger, msg jetstream.Msg, seq uint64, attempt int, reason string, cause error, stack string) bool {
	if err := p.l.deadLetter(ctx, p.li.name, msg, attempt, reason, cause, stack); err != nil {
		log.Error("events: cannot write dead letter, will retry", telemetry.ErrField(err))
		_ = msg.NakWithDelay(p.li.retryDelay(attempt))
		return false
	}
	p.markHandled(ctx, log, seq)
	if err := msg.TermWithReason(reason); err != nil {
		log.Warn("events: term", telemetry.ErrField(err))
	}
	return true
}

// deadLetter writes listener's letter of msg to the dead-letter stream and
// waits for the stream's acknowledgement.
//
// The letter's Nats-Msg-Id is derived from listener, the event's stream
// sequence and the time the events stream stored it: the same for every
// delivery of that stored message, so writing the letter twice (a crash
// before the event is terminated) keeps one letter, and a publish
// acknowledged as a duplicate is that earlier letter. The time tells apart
// the events of a recreated events stream, whose sequences start again at
// 1: by sequence alone, the letter of the new stream's event would be
// dropped as a duplicate of the old one's within the dedup window, and the
// event terminated with no letter.
//
// The letter carries the event's body and headers, so it is larger than
// the event. When that is more than the server takes (max_payload), the
// letter is written without them: the event stays in the events stream at
// StreamSeq (stored at EnqueuedAt), where Replay reads it. Otherwise such
// an event could never be dead-lettered, and would block its partition.
func (l *Listeners) deadLetter(ctx context.Context, listener string, msg jetstream.Msg, attempt int, reason string, cause error, stack string) error {
	meta, err := msg.Metadata()
	if err != nil {
		return fmt.Errorf("events: dead letter: %w", err)
	}
	seq, stored := meta.Sequence.Stream, meta.Timestamp
	letter := &wire.DeadLetter{
		V: 1, Reason: reason, Error: cause.Error(), ErrorType: fmt.Sprintf("%T", cause), Stack: stack,
		Attempts: attempt, Subject: msg.Subject(), StreamSeq: seq, EnqueuedAt: stored.UnixMilli(),
		DiedAt: time.Now().UnixMilli(), Worker: l.worker, Headers: msg.Headers(), Data: msg.Data(),
	}
	m := nats.NewMsg(l.names.DeadEventSubject(listener, seq))
	m.Header.Set(wire.HeaderMsgID, "event-"+listener+"-"+strconv.FormatUint(seq, 10)+"-"+strconv.FormatInt(stored.UnixNano(), 10))
	m.Header.Set(wire.HeaderDeadWhy, reason)
	err = l.publishLetter(ctx, m, letter)
	if errors.Is(err, nats.ErrMaxPayload) {
		letter.Headers, letter.Data = nil, nil
		err = l.publishLetter(ctx, m, letter)
	}
	if err != nil {
		return fmt.Errorf("events: dead letter: %w", err)
	}
	return nil
}

// publishLetter publishes m with letter as its body.
func (l *Listeners) publishLetter(ctx context.Context, m *nats.Msg, letter *wire.DeadLetter) error {
	data, err := wire.Marshal(letter)
	if err != nil {
		return err
	}
	m.Data = data
	_, err = l.js.PublishMsg(ctx, m)
	return err
}

// markScript raises a mark to ARGV[1] and (ARGV[2] > 0) sets it to expire
// ARGV[2] ms from now.
const markScript = `local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > cur then redis.call('SET', KEYS[1], ARGV[1]) end
local ttl = tonumber(ARGV[2])
if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) end
return cur`

func (p *partition) markHandled(ctx context.Context, log *zap.Logger, seq uint64) {
	if p.l.rdb == nil {
		return
	}
	if err := p.l.mark.Run(ctx, p.l.rdb, []string{p.seqKey}, seq, p.markTTL.Milliseconds()).Err(); err != nil {
		log.Warn("events: record last handled sequence", telemetry.ErrField(err))
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
