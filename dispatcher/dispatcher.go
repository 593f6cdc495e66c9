// Package dispatcher is the producer side of the jobs queue: it enqueues
// typed jobs onto NATS JetStream, one at a time or in bulk, and gives
// operators the job records and the dead letters, with requeue.
//
// A Dispatcher needs a JetStream context and, for job records and identity
// keys, a Redis client:
//
//	d, err := dispatcher.New(js, dispatcher.WithPrefix("connector"), dispatcher.WithRedis(rdb))
//	id, err := d.Enqueue(ctx, ImportProduct{BackendID: "shop1", ExternalID: "42"},
//		job.WithChannel("root.shop"), job.WithMaxRetries(10))
//
// Jobs enqueued with an ETA or a delay wait in a JetStream message schedule
// and hold no worker capacity until then. See docs/protocol.md for the wire
// format that producers in other languages follow.
package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/connector-go/connector/internal/channels"
	"github.com/connector-go/connector/internal/envelope"
	"github.com/connector-go/connector/internal/jspub"
	"github.com/connector-go/connector/internal/records"
	"github.com/connector-go/connector/internal/telemetry"
	"github.com/connector-go/connector/internal/wire"
	"github.com/connector-go/connector/job"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"
)

// ErrNoRedis: the operation needs the Redis client (WithRedis).
var ErrNoRedis = errors.New("dispatcher: no Redis client configured")

// ErrClosed: the Dispatcher was closed; it enqueues nothing more (its job
// records would never be written).
var ErrClosed = errors.New("dispatcher: closed")

// ErrOutcomeUnknown: a job was published but no acknowledgement came (a
// deadline, a broken connection): it may be stored, and run. Enqueue
// returns its id with the error: enqueueing it again with job.WithID(id)
// does not store it twice within the stream's dedup window (2 minutes by
// default). Only jobs that carry their id in Nats-Msg-Id fail so: those
// enqueued with job.WithID or with an identity key. EnqueueMany gives the
// id in the item's Result.
var ErrOutcomeUnknown = errors.New("dispatcher: no acknowledgement, the job may be stored")

// Dispatcher enqueues jobs. It is safe for concurrent use.
type Dispatcher struct {
	js      jetstream.JetStream
	names   wire.Names
	rdb     redis.UniversalClient
	rec     *records.Store
	log     *zap.Logger
	tracer  trace.Tracer
	metrics *telemetry.Metrics
	maxSize int
	// traceHeaders: the trace context goes in headers too (WithTraceHeaders).
	traceHeaders bool

	subjects   atomic.Pointer[map[subjectKey]string]
	subjectsMu sync.Mutex
	pubOnce    sync.Once
	pub        *jspub.Publisher
	closed     atomic.Bool
}

type config struct {
	prefix       string
	rdb          redis.UniversalClient
	log          *zap.Logger
	tp           trace.TracerProvider
	mp           metric.MeterProvider
	recordTTL    time.Duration
	maxSize      int
	traceHeaders bool
}

// Option configures a Dispatcher.
type Option func(*config)

// WithPrefix sets the deployment prefix (default "connector").
func WithPrefix(p string) Option { return func(c *config) { c.prefix = p } }

// WithRedis enables job records and identity keys.
func WithRedis(rdb redis.UniversalClient) Option { return func(c *config) { c.rdb = rdb } }

// WithLogger sets the logger (default: no logs).
func WithLogger(l *zap.Logger) Option { return func(c *config) { c.log = l } }

// WithTracerProvider enables PRODUCER spans on enqueue.
func WithTracerProvider(tp trace.TracerProvider) Option { return func(c *config) { c.tp = tp } }

// WithMeterProvider enables the enqueue counter.
func WithMeterProvider(mp metric.MeterProvider) Option { return func(c *config) { c.mp = mp } }

// WithRecordTTL sets how long job records are kept after their last update
// (default 7 days); a job due later keeps its record that long after its
// ETA.
func WithRecordTTL(d time.Duration) Option { return func(c *config) { c.recordTTL = d } }

// WithMaxEnvelope bounds the size of one job message (default 1 MiB).
func WithMaxEnvelope(n int) Option { return func(c *config) { c.maxSize = n } }

// WithTraceHeaders writes a job's trace context in W3C headers
// (lower-case "traceparent", "tracestate", "baggage") as well as in its
// envelope, where workers read it. By default it is in the envelope only:
// headers cost nats-server and nats.go a tenth of a job's throughput
// (docs/benchmarks.md). Turn it on for tools that read the headers, such
// as nats-server's own message tracing (an account's msg_trace sampling
// follows a sampled "traceparent").
func WithTraceHeaders() Option { return func(c *config) { c.traceHeaders = true } }

// New builds a Dispatcher. It does not create streams: workers (or
// `connector streams provision`) do.
func New(js jetstream.JetStream, opts ...Option) (*Dispatcher, error) {
	c := config{}
	for _, o := range opts {
		o(&c)
	}
	names, err := wire.NewNames(c.prefix)
	if err != nil {
		return nil, err
	}
	if c.log == nil {
		c.log = zap.NewNop()
	}
	if c.maxSize <= 0 {
		c.maxSize = wire.DefaultMaxEnvelope
	}
	d := &Dispatcher{js: js, names: names, rdb: c.rdb, log: c.log, maxSize: c.maxSize, traceHeaders: c.traceHeaders}

	if c.tp != nil {
		d.tracer = c.tp.Tracer("github.com/connector-go/connector/dispatcher")
	}
	if c.mp != nil { // nil metrics: every call is a no-op, at no cost
		m, err := telemetry.NewMetrics(c.mp)
		if err != nil {
			return nil, err
		}
		d.metrics = m
	}
	if c.rdb != nil {
		d.rec = records.New(c.rdb, names, c.recordTTL, c.log)
	}
	return d, nil
}

// Close flushes pending job records and ends the bulk publisher's
// subscription. Enqueues after it fail with ErrClosed.
func (d *Dispatcher) Close(ctx context.Context) error {
	d.closed.Store(true)
	d.pubOnce.Do(func() {}) // none made after this
	if d.pub != nil {
		_ = d.pub.Close()
	}
	if d.rec != nil {
		return d.rec.Close(ctx)
	}
	return nil
}

// publisher is the bulk publisher, made on first use: it subscribes to
// the acknowledgements of its batches on the JetStream context's
// connection. It is nil when the Dispatcher was closed before its first
// use.
func (d *Dispatcher) publisher() *jspub.Publisher {
	d.pubOnce.Do(func() { d.pub = jspub.New(d.js.Conn(), window, 0) })
	return d.pub
}

// window is how many acknowledgements a bulk enqueue keeps outstanding.
const window = 4096

var _ job.Enqueuer = (*Dispatcher)(nil)

// prepared is one job ready to publish.
type prepared struct {
	msg      *nats.Msg
	env      *wire.Envelope
	identity string
	eta      time.Time
	span     trace.Span
	ctx      context.Context
}

type preparedJob struct {
	p   prepared
	env wire.Envelope
	msg nats.Msg
}

// batchTrace is the trace context of a bulk enqueue's span (or of the
// caller's context), shared read-only by the batch's jobs, which have no
// span of their own.
type batchTrace struct {
	env wire.TraceContext
	hdr nats.Header // with WithTraceHeaders
}

// prepare makes the message of one job; bt is non-nil in a bulk enqueue.
func (d *Dispatcher) prepare(ctx context.Context, args job.Args, opts []job.Option, bt *batchTrace) (*prepared, error) {
	if args == nil {
		return nil, fmt.Errorf("dispatcher: nil job args")
	}
	var o job.Options
	if _, own := args.(job.ArgsWithOptions); own || len(opts) > 0 {
		o = job.Apply(args, opts...)
	}
	if o.IdentityFunc != nil {
		// The identity key is a function of the encoded arguments, and
		// goes in the envelope: encode them first, in canonical form
		// (equal arguments, equal bytes, whatever their maps' order).
		raw, err := wire.MarshalArgs(args)
		if err != nil {
			return nil, fmt.Errorf("dispatcher: %w: encode %s args: %w", job.ErrInvalid, args.JobName(), err)
		}
		return d.build(ctx, args.JobName(), raw, nil, o, bt)
	}
	return d.build(ctx, args.JobName(), nil, args, o, bt)
}

func (d *Dispatcher) prepareRaw(ctx context.Context, name string, raw []byte, o job.Options) (*prepared, error) {
	return d.build(ctx, name, raw, nil, o, nil)
}

// build makes the message of one job: its arguments are raw (encoded
// already) or args (encoded in place into the envelope).
func (d *Dispatcher) build(ctx context.Context, name string, raw []byte, args job.Args, o job.Options, bt *batchTrace) (*prepared, error) {
	if d.closed.Load() {
		return nil, ErrClosed
	}
	now := time.Now()
	// One allocation for the job's envelope, message and what is prepared.
	a := new(preparedJob)
	env := &a.env
	if err := envelope.Fill(env, name, raw, &o, now.UnixMilli()); err != nil {
		return nil, fmt.Errorf("dispatcher: %w", err)
	}
	eta := o.ETA
	if o.Delay > 0 {
		eta = now.Add(o.Delay)
	}
	if !eta.IsZero() && eta.After(now) {
		env.ETA = eta.UnixMilli()
	} else {
		eta = time.Time{}
	}
	identity := env.Identity
	// The job's id goes in Nats-Msg-Id (build's end says why).
	msgID := o.ID != "" || identity != ""
	p := &a.p
	*p = prepared{msg: &a.msg, env: env, identity: identity, eta: eta, ctx: ctx}
	// The trace context goes in the envelope, and in headers only with
	// WithTraceHeaders: a message without headers costs the server much
	// less (docs/benchmarks.md).
	switch {
	case bt != nil:
		env.Trace = bt.env
	case d.tracer != nil:
		p.ctx, p.span = telemetry.StartProducerSpan(ctx, d.tracer, d.names.JobsStream(), env.ID, nil,
			attribute.String("connector.job.name", name), attribute.String("connector.job.channel", env.Channel))
		env.Trace = telemetry.TraceOf(p.ctx)
	default:
		env.Trace = telemetry.TraceOf(ctx)
	}
	var data []byte
	var err error
	if args != nil {
		data, err = wire.EncodeEnvelopeArgs(env, args)
	} else {
		data, err = wire.EncodeEnvelope(env)
	}
	if err != nil {
		err = fmt.Errorf("dispatcher: %w: %s: %w", job.ErrInvalid, name, err)
	} else if serr := envelope.CheckSize(name, data, d.maxSize); serr != nil {
		err = fmt.Errorf("dispatcher: %w", serr)
	}
	if err != nil {
		d.endSpan(p, err)
		return nil, err
	}
	// Headers only when there is something to say: a message without any
	// is cheaper for the server to store.
	msg := p.msg
	*msg = nats.Msg{Subject: d.subject(env.Channel, env.Priority), Data: data}
	if !eta.IsZero() {
		msg.Header = nats.Header{
			wire.HeaderSchedule:  []string{"@at " + eta.UTC().Format(time.RFC3339Nano)},
			wire.HeaderSchTarget: []string{msg.Subject},
		}
		msg.Subject = d.names.ScheduleSubject(env.ID)
	}
	switch {
	case bt != nil && bt.hdr != nil && msg.Header == nil && !msgID && len(o.Headers) == 0:
		msg.Header = bt.hdr // shared by the batch's messages, read only
	case d.traceHeaders && len(env.Trace) > 0:
		if msg.Header == nil {
			msg.Header = nats.Header{}
		}
		setTraceHeaders(msg.Header, env.Trace)
	case msg.Header == nil && (msgID || len(o.Headers) > 0):
		msg.Header = nats.Header{}
	}
	if msgID {
		// A caller-chosen id may be published again (a retry after a
		// timeout, a replayed request): JetStream drops the repeat within
		// its dedup window. So may a job with an identity key whose
		// acknowledgement was lost: the dispatcher publishes it again
		// to learn whether it was stored, rather than free its key for a
		// second job. Any other generated id is new by construction and
		// needs no dedup, whose bookkeeping costs the server about a fifth
		// of its publish rate (docs/benchmarks.md).
		msg.Header[wire.HeaderMsgID] = []string{env.ID}
	}
	for k, v := range o.Headers {
		msg.Header[k] = []string{v}
	}
	return p, nil
}

// setTraceHeaders writes a trace context into h, keys as given (lower case).
func setTraceHeaders(h nats.Header, tc wire.TraceContext) {
	for i := 0; i+1 < len(tc); i += 2 {
		h[tc[i]] = []string{tc[i+1]}
	}
}

// subject is where a job of channel and priority is published:
// <prefix>.jobs.<channel>.<band>. Workers attach unconfigured channels to
// the consumer of their nearest configured ancestor. Subjects are few:
// they are built once and remembered.
func (d *Dispatcher) subject(channel string, priority *int) string {
	p := job.DefaultPriority
	if priority != nil {
		p = *priority
	}
	k := subjectKey{channel, channels.Band(p)}
	if m := d.subjects.Load(); m != nil {
		if s, ok := (*m)[k]; ok {
			return s
		}
	}
	s := d.names.JobsSubject(channel, k.band)
	d.subjectsMu.Lock()
	defer d.subjectsMu.Unlock()
	old := d.subjects.Load()
	next := make(map[subjectKey]string, 1)
	if old != nil {
		if len(*old) >= 4096 { // channels are few; never grow without bound
			return s
		}
		for kk, v := range *old {
			next[kk] = v
		}
	}
	next[k] = s
	d.subjects.Store(&next)
	return s
}

type subjectKey struct {
	channel string
	band    int
}

// Enqueue publishes one job and waits for JetStream to store it. It returns
// the job id; when an identity key matches a job that has not started yet,
// it returns that job's id and enqueues nothing.
//
// A job with an identity key whose acknowledgement does not come (ctx's
// deadline passes, the connection breaks) may be stored all the same: its
// key is kept only if publishing it again (the same Nats-Msg-Id, for up to
// 2 s past ctx) shows it is, and Enqueue then returns its id, with no
// error. Otherwise the key is freed (the job may never have been stored)
// and the error is ErrOutcomeUnknown, with the job's id.
func (d *Dispatcher) Enqueue(ctx context.Context, args job.Args, opts ...job.Option) (string, error) {
	p, err := d.prepare(ctx, args, opts, nil)
	if err != nil {
		return "", err
	}
	return d.publish(p)
}

// EnqueueRaw enqueues a job from its name and msgpack-encoded arguments
// (tools and bridges that do not have the Go type). With an identity
// function (job.WithIdentityExact), the arguments are put in canonical
// form first (every map's keys in order, docs/protocol.md), as Enqueue
// encodes them, so that both compute the same key for the same arguments.
func (d *Dispatcher) EnqueueRaw(ctx context.Context, name string, args []byte, opts ...job.Option) (string, error) {
	var o job.Options
	for _, f := range opts {
		f(&o)
	}
	if o.IdentityFunc != nil && o.IdentityKey == "" {
		if c, err := wire.Canonical(args); err == nil {
			args = c
		}
	}
	p, err := d.prepareRaw(ctx, name, args, o)
	if err != nil {
		return "", err
	}
	return d.publish(p)
}

func (d *Dispatcher) publish(p *prepared) (id string, err error) {
	defer func() { d.endSpan(p, err) }()
	if p.identity != "" {
		existing, claimed, err := d.claimIdentity(p.ctx, p.identity, p.env.ID, p.eta)
		if err != nil {
			return "", err
		}
		if !claimed {
			return existing, nil
		}
	}
	ack, err := d.js.PublishMsg(p.ctx, p.msg)
	if err != nil {
		return d.publishFailed(p, err)
	}
	if ack.Duplicate {
		d.settleDuplicateClaim(p, ack.Sequence)
	}
	d.recordEnqueued(p, ack.Sequence)
	return p.env.ID, nil
}

// confirmTimeout bounds the second publish of a job with an identity key
// whose acknowledgement was lost (past the caller's deadline).
const confirmTimeout = 2 * time.Second

// publishFailed settles an Enqueue whose publish failed. A job the stream
// refused, or that no stream received, was not stored: its identity key is
// freed. A job whose acknowledgement did not come may have been stored:
// freed, its key would let the caller's retry store a second job with it,
// both pending at once (what the key exists to prevent); kept, it would
// name a job that may not exist, answered to every enqueue with the key,
// which then enqueues nothing. So the job is published again under the
// same Nats-Msg-Id: the stream stores it once, and answers whether it has
// it. Acknowledged, the job is enqueued and its key kept; if not, the key
// is freed (a possible duplicate is better than a job lost) and the error
// says the outcome is unknown, with the job's id to retry with.
func (d *Dispatcher) publishFailed(p *prepared, err error) (string, error) {
	if !maybeStored(err) || p.msg.Header.Get(wire.HeaderMsgID) == "" {
		if p.identity != "" {
			d.releaseIdentity(context.WithoutCancel(p.ctx), p.identity, p.env.ID)
		}
		return "", fmt.Errorf("dispatcher: publish %s: %w", p.env.Name, err)
	}
	if p.identity != "" {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(p.ctx), confirmTimeout)
		seq, dup, cerr := d.publishAgain(ctx, p, err)
		cancel()
		if cerr == nil {
			// Stored, by the first publish (a duplicate) or this one: the
			// key names it, as it should. Its worker frees it. A duplicate
			// may be of an earlier publish of a chosen id, run already:
			// checked as any duplicate is.
			if dup {
				d.settleDuplicateClaim(p, seq)
			}
			d.recordEnqueued(p, seq)
			return p.env.ID, nil
		}
		d.releaseIdentity(context.WithoutCancel(p.ctx), p.identity, p.env.ID)
		err = cerr
	}
	return p.env.ID, fmt.Errorf("dispatcher: publish %s, job %s: %w: %w", p.env.Name, p.env.ID, ErrOutcomeUnknown, err)
}

// publishAgain publishes p again, under the Nats-Msg-Id of its first
// publish, which failed with err and may have been stored: the stream
// stores it once, and answers with its sequence either way, and whether
// it was a duplicate. It returns err, with the second publish's error,
// when no answer comes again.
func (d *Dispatcher) publishAgain(ctx context.Context, p *prepared, err error) (uint64, bool, error) {
	ack, cerr := d.js.PublishMsg(ctx, p.msg)
	if cerr != nil {
		return 0, false, fmt.Errorf("%w (published again: %v)", err, cerr)
	}
	return ack.Sequence, ack.Duplicate, nil
}

// maybeStored tells whether a failed publish may have been stored: not if
// the stream answered (a refusal) or no stream received it.
func maybeStored(err error) bool {
	var api *jetstream.APIError
	return !errors.As(err, &api) && !errors.Is(err, jetstream.ErrNoStreamResponse) &&
		!errors.Is(err, nats.ErrNoResponders) && !errors.Is(err, nats.ErrMaxPayload) &&
		!errors.Is(err, nats.ErrBadSubject) && !errors.Is(err, nats.ErrInvalidConnection)
}

// duplicateCheckTimeout bounds the read of the message a duplicate
// acknowledgement names (settleDuplicateClaim), past the caller's context.
const duplicateCheckTimeout = 2 * time.Second

// settleDuplicateClaim settles the identity key p claimed for a job whose
// chosen id the stream had already (its dedup window): nothing was
// enqueued, and seq, the acknowledgement's sequence, is the message
// stored first. The key is kept only if that message is still in the
// stream and is this job with this key: the job is pending (or running,
// or waiting for its ETA in its schedule message, which holds the same
// envelope), as after an enqueue whose acknowledgements were lost (it
// freed the key) retried with job.WithID; freed, the key would let a
// second job with it be stored beside it. Its worker releases the key
// when it starts, and again once its run settles (after the ack), which
// frees a claim made while it ran. Otherwise the key is freed: the job ran
// already (a work queue drops a message once acked: its worker released
// the key before this claim), or was enqueued without this key, or its
// schedule fired (the message it made has another sequence: a second job
// with the key may then be stored beside it, as before), or the message
// could not be read; no run would release the key, which would answer
// that job's id to every enqueue with it, enqueueing nothing, for its
// whole TTL.
func (d *Dispatcher) settleDuplicateClaim(p *prepared, seq uint64) {
	if p.identity == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(p.ctx), duplicateCheckTimeout)
	defer cancel()
	if d.storedWithKey(ctx, seq, p.env.ID, p.identity) {
		return
	}
	d.releaseIdentity(ctx, p.identity, p.env.ID)
}

// storedWithKey tells whether the jobs stream's message seq is job id
// with identity key key (false when it cannot tell).
func (d *Dispatcher) storedWithKey(ctx context.Context, seq uint64, id, key string) bool {
	if seq == 0 {
		return false
	}
	s, err := d.stream(ctx, d.names.JobsStream())
	if err != nil {
		d.log.Warn("duplicate job not checked; its identity key is freed", zapKey(key), zapErr(err))
		return false
	}
	raw, err := s.GetMsg(ctx, seq)
	if err != nil {
		if !errors.Is(err, jetstream.ErrMsgNotFound) {
			d.log.Warn("duplicate job not checked; its identity key is freed", zapKey(key), zapErr(err))
		}
		return false
	}
	// Stored already: bounded by the stream, not by this producer's limit.
	env, err := wire.DecodeEnvelope(raw.Data, max(len(raw.Data), 1))
	return err == nil && env.ID == id && env.Identity == key
}

func (d *Dispatcher) endSpan(p *prepared, err error) {
	if p.span == nil {
		return
	}
	if err != nil {
		telemetry.RecordError(p.span, err)
	}
	p.span.End()
}

func (d *Dispatcher) recordEnqueued(p *prepared, seq uint64) {
	d.metrics.JobEnqueued(p.ctx, p.env.Name, p.env.Channel)
	if d.rec == nil {
		return
	}
	st := job.StateEnqueued
	if !p.eta.IsZero() {
		st = job.StateWaiting
	}
	// Unset priority and max retries (nil) read back as the defaults.
	d.rec.Record(&records.Update{
		ID: p.env.ID, Queued: st, Name: p.env.Name, Channel: p.env.Channel,
		Priority: p.env.Priority, MaxRetries: p.env.MaxRetries, Description: p.env.Description,
		EnqueuedAt: wire.FromMillis(p.env.EnqueuedAt), ETA: p.eta, Seq: seq, Identity: p.identity, Graph: p.env.Graph,
	})
}

// Item is one job of a bulk enqueue.
type Item struct {
	Args    job.Args
	Options []job.Option
}

// Result is the outcome of one job of a bulk enqueue: its id, or an
// error. Both, when Err matches ErrOutcomeUnknown: the job may be stored;
// enqueueing it again with job.WithID(ID) does not store it twice.
type Result struct {
	ID  string
	Err error
}

// EnqueueMany publishes many jobs with asynchronous publishes, keeping up to
// window (default 4096) acknowledgements outstanding, so a batch of 10k
// jobs costs a handful of round trips rather than 10k. Results are in the
// order of items; err is non-nil if any item failed. An item whose
// identity key names a job not started yet answers that job's id, as
// Enqueue does; when that job is an earlier item's of the same call, and
// that item fails, the item fails too (no id). An item with an identity
// key whose acknowledgement does not come is handled as Enqueue handles
// one (published again, the second publishes of a call sharing one 2 s
// deadline). After Close, EnqueueMany fails with ErrClosed (no results).
//
// Traced, the batch is one PRODUCER span ("send <stream>", with
// messaging.batch.message_count), as the messaging conventions have it for
// batch sends: every job carries its context, and their runs are its
// children (or linked to it).
func (d *Dispatcher) EnqueueMany(ctx context.Context, items []Item) (_ []Result, err error) {
	if d.closed.Load() {
		return nil, ErrClosed
	}
	results := make([]Result, len(items))
	var bt batchTrace
	if d.tracer != nil {
		var span trace.Span
		ctx, span = telemetry.StartProducerBatchSpan(ctx, d.tracer, d.names.JobsStream(), len(items))
		defer func() {
			telemetry.RecordError(span, err)
			span.End()
		}()
	}
	// Injected once for the batch (the caller's context, or the span's).
	bt.env = telemetry.TraceOf(ctx)
	if d.traceHeaders && len(bt.env) > 0 {
		bt.hdr = nats.Header{}
		setTraceHeaders(bt.hdr, bt.env)
	}
	var failed int
	var first error
	fail := func(i int, err error) {
		results[i].Err = err
		failed++
		if first == nil {
			first = err
		}
	}
	pub := d.publisher()
	if pub == nil { // closed meanwhile, before any bulk enqueue made it
		return nil, ErrClosed
	}
	batch, err := pub.NewBatch(len(items))
	if errors.Is(err, jspub.ErrClosed) {
		return nil, ErrClosed
	}
	if err != nil {
		return nil, fmt.Errorf("dispatcher: %w", err)
	}
	sent := make([]*prepared, len(items))
	// An item whose identity key names a job of an earlier item of the
	// batch answers that job's id: it fails if that item does. claimed
	// finds the item of a job id (items that claimed a key), answered the
	// later items that answered its id before it settled.
	var claimed map[string]int
	var answered map[int][]int
	// Outcomes are handled in order as their acknowledgements arrive, while
	// the rest are published: records and spans do not wait for the batch.
	next := 0
	var confirm context.Context // the deadline of second publishes
	cancelConfirm := context.CancelFunc(func() {})
	defer func() { cancelConfirm() }()
	finish := func(i int, a jspub.Ack) {
		p := sent[i]
		if p == nil {
			return
		}
		if a.Err != nil && !a.Unsent && maybeStored(a.Err) && p.msg.Header.Get(wire.HeaderMsgID) != "" {
			// Its acknowledgement lost, it may be stored: as Enqueue does
			// (publishFailed), a job with an identity key is published
			// again (all of a call's under one deadline), and the error
			// of one still unknown comes with its id.
			if p.identity != "" {
				if confirm == nil {
					confirm, cancelConfirm = context.WithTimeout(context.WithoutCancel(ctx), confirmTimeout)
				}
				if seq, dup, err := d.publishAgain(confirm, p, a.Err); err == nil {
					a = jspub.Ack{Seq: seq, Dup: dup} // a duplicate is checked below
				} else {
					a.Err = err
				}
			}
			if a.Err != nil {
				a.Err = fmt.Errorf("%w: %w", ErrOutcomeUnknown, a.Err)
				results[i].ID = p.env.ID // to retry with, as job.WithID
			}
		}
		if a.Err != nil {
			var err error
			if ctx.Err() != nil && errors.Is(a.Err, ctx.Err()) {
				// Unknown whether it was stored: the identity key goes (a
				// duplicate is better than a key blocking the job for weeks).
				err = a.Err
			} else if errors.Is(a.Err, jspub.ErrClosed) {
				// Closed while the batch ran: its acknowledgement never came.
				err = fmt.Errorf("dispatcher: publish %s: %w", p.env.Name, ErrClosed)
			} else {
				err = fmt.Errorf("dispatcher: publish %s: %w", p.env.Name, a.Err)
			}
			fail(i, err)
			for _, j := range answered[i] {
				results[j].ID = ""
				fail(j, fmt.Errorf("dispatcher: same identity key as item %d, not enqueued: %w", i, err))
			}
			if p.identity != "" {
				d.releaseIdentity(context.WithoutCancel(ctx), p.identity, p.env.ID)
			}
			d.endSpan(p, a.Err)
			return
		}
		results[i].ID = p.env.ID
		if a.Dup {
			d.settleDuplicateClaim(p, a.Seq)
		}
		d.recordEnqueued(p, a.Seq)
		d.endSpan(p, nil)
	}
	for i, it := range items {
		for ; next < i; next++ {
			a, ok := batch.Settled(next)
			if !ok && sent[next] != nil {
				break
			}
			finish(next, a)
		}
		p, err := d.prepare(ctx, it.Args, it.Options, &bt)
		if err != nil {
			fail(i, err)
			continue
		}
		if p.identity != "" {
			existing, ok, err := d.claimIdentity(p.ctx, p.identity, p.env.ID, p.eta)
			if err != nil || !ok {
				d.endSpan(p, err)
				if err != nil {
					fail(i, err)
					continue
				}
				if k, in := claimed[existing]; in {
					if k >= next { // not settled yet
						if answered == nil {
							answered = map[int][]int{}
						}
						answered[k] = append(answered[k], i)
					} else if results[k].Err != nil {
						fail(i, fmt.Errorf("dispatcher: same identity key as item %d, not enqueued: %w", k, results[k].Err))
						continue
					}
				}
				results[i].ID = existing
				continue
			}
			if claimed == nil {
				claimed = map[string]int{}
			}
			claimed[p.env.ID] = i
		}
		sent[i] = p
		if err := batch.Publish(ctx, i, p.msg); err != nil && (ctx.Err() != nil || errors.Is(err, jspub.ErrAckTimeout) || errors.Is(err, jspub.ErrClosed)) {
			// Its Ack has the error; the rest are not sent, and fail with
			// it (none may read as enqueued: no id and no error).
			switch {
			case ctx.Err() != nil:
			case errors.Is(err, jspub.ErrClosed):
				err = fmt.Errorf("dispatcher: not published: %w", ErrClosed)
			default:
				err = fmt.Errorf("dispatcher: not published: %w", err)
			}
			for j := i + 1; j < len(items); j++ {
				fail(j, err)
			}
			break
		}
	}
	acks := batch.Wait(ctx)
	for ; next < len(items); next++ {
		finish(next, acks[next])
	}
	if failed > 0 {
		return results, fmt.Errorf("dispatcher: %d of %d jobs not enqueued, first: %w", failed, len(items), first)
	}
	return results, nil
}
