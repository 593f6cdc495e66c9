// Package worker is the consumer side of the jobs queue: it pulls jobs from
// NATS JetStream, runs their registered handlers with bounded concurrency,
// retries them by their retry pattern without holding capacity, keeps their
// leases alive with progress heartbeats, dead-letters what cannot succeed
// (with its error, type, stack and attempts), records job states in Redis,
// and shuts down gracefully.
//
//	reg := worker.NewRegistry()
//	worker.MustRegister(reg, func(ctx context.Context, j *job.Job[ImportProduct]) (string, error) {
//		...
//	})
//	w, err := worker.New(js, reg, worker.WithRedis(rdb), worker.WithLogger(log))
//	err = w.Run(ctx) // until ctx is cancelled (SIGTERM), then drains
//
// Delivery is at least once: a job whose worker dies mid-run is delivered
// again after its lease (AckWait, 30 s by default) and its next run counts
// as a new attempt. Handlers must be idempotent; the bindings package gives
// the tools (idempotent bind, completion records).
package worker

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

	"github.com/connector-go/connector/internal/channels"
	"github.com/connector-go/connector/internal/graphs"
	"github.com/connector-go/connector/internal/records"
	"github.com/connector-go/connector/internal/streams"
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
	"go.uber.org/zap/zapcore"
)

// Defaults.
const (
	DefaultConcurrency   = 256
	DefaultAckWait       = 30 * time.Second
	DefaultShutdownGrace = 25 * time.Second
	DefaultMaxAckPending = 20000
)

type config struct {
	prefix         string
	rdb            redis.UniversalClient
	log            *zap.Logger
	tp             trace.TracerProvider
	mp             metric.MeterProvider
	linkMode       telemetry.LinkMode
	concurrency    int
	ackWait        time.Duration
	grace          time.Duration
	retry          job.RetryPattern
	name           string
	provision      bool
	streams        streams.Config
	recordTTL      time.Duration
	maxEnvelope    int
	unknownRetries int
	unknownDelay   time.Duration
	maxAckPending  int
	fetchWait      time.Duration
	pullers        int
	prefetch       int
	channels       string
}

// Option configures a Worker.
type Option func(*config)

// WithPrefix sets the deployment prefix (default "connector").
func WithPrefix(p string) Option { return func(c *config) { c.prefix = p } }

// WithRedis enables job records and identity-key release.
func WithRedis(rdb redis.UniversalClient) Option { return func(c *config) { c.rdb = rdb } }

// WithLogger sets the logger (default: none).
func WithLogger(l *zap.Logger) Option { return func(c *config) { c.log = l } }

// WithTracerProvider enables a CONSUMER span per job run.
func WithTracerProvider(tp trace.TracerProvider) Option { return func(c *config) { c.tp = tp } }

// WithLinkedTraces makes each job run a new trace linked to the producer's
// span instead of a child of it.
func WithLinkedTraces() Option { return func(c *config) { c.linkMode = telemetry.LinkedMode } }

// WithMeterProvider enables job metrics.
func WithMeterProvider(mp metric.MeterProvider) Option { return func(c *config) { c.mp = mp } }

// WithConcurrency sets how many jobs this process runs at once (default 64).
func WithConcurrency(n int) Option { return func(c *config) { c.concurrency = n } }

// WithAckWait sets the job lease: a job whose worker stops heartbeating is
// delivered again after it (default 30 s).
func WithAckWait(d time.Duration) Option { return func(c *config) { c.ackWait = d } }

// WithShutdownGrace bounds how long Run waits for running jobs after its
// context is cancelled; jobs still running then are handed back (default 25 s).
func WithShutdownGrace(d time.Duration) Option { return func(c *config) { c.grace = d } }

// WithRetryPattern sets the retry pattern of jobs that give none.
func WithRetryPattern(p job.RetryPattern) Option { return func(c *config) { c.retry = p } }

// WithName names this worker in records and logs (default host-pid).
func WithName(n string) Option { return func(c *config) { c.name = n } }

// WithoutProvisioning makes Run check that the streams exist instead of
// creating or updating them (for workers without the right to).
func WithoutProvisioning() Option { return func(c *config) { c.provision = false } }

// WithStreamReplicas sets the replicas of provisioned streams (3 in production).
func WithStreamReplicas(n int) Option { return func(c *config) { c.streams.Replicas = n } }

// WithMemoryStorage provisions memory-backed streams (tests, benchmarks).
func WithMemoryStorage() Option { return func(c *config) { c.streams.Memory = true } }

// WithRecordTTL sets how long job records are kept (default 7 days).
func WithRecordTTL(d time.Duration) Option { return func(c *config) { c.recordTTL = d } }

// WithMaxEnvelope bounds the size of an accepted job message (default 1 MiB).
func WithMaxEnvelope(n int) Option { return func(c *config) { c.maxEnvelope = n } }

// WithUnknownJobRedeliveries sets how many times a job with a name this
// worker does not know is handed back (other workers of a rolling deploy may
// know it) before it is dead-lettered (default 3, one second apart).
func WithUnknownJobRedeliveries(n int, delay time.Duration) Option {
	return func(c *config) { c.unknownRetries, c.unknownDelay = n, delay }
}

// WithMaxAckPending caps jobs delivered and not yet finished across the
// whole fleet (default 20000).
func WithMaxAckPending(n int) Option { return func(c *config) { c.maxAckPending = n } }

// WithPrefetch sets how many jobs this process may hold queued beyond the
// running ones (default 256: batches of that size halve the cost of a pull). Queued jobs keep their
// leases through heartbeats; 0 takes a job only when a runner is free.
func WithPrefetch(n int) Option { return func(c *config) { c.prefetch = n } }

// WithChannels configures the channels in the seed's syntax, e.g.
// "root:4,root.magento:2,root.magento.orders:1:sequential,root.slow:2:throttle=5".
// Capacities hold across the whole fleet (they are counted in Redis, so a
// limited channel needs WithRedis); a child's jobs count against its
// parents; a job of an unconfigured channel runs in its nearest configured
// ancestor. Every worker of a deployment should get the same configuration:
// it is published in the <PREFIX>_CHANNELS bucket for producers to route by.
func WithChannels(spec string) Option { return func(c *config) { c.channels = spec } }

// Worker runs jobs. Create it with New and call Run.
type Worker struct {
	js       jetstream.JetStream
	reg      *Registry
	handlers map[string]Handler
	cfg      config
	names    wire.Names
	log      *zap.Logger
	tracer   trace.Tracer
	metrics  *telemetry.Metrics
	rec      *records.Store

	inflight inflightSet
	running  atomic.Int64
	wg       sync.WaitGroup
	hardCtx  context.Context // cancelled when the grace period ends

	chans    *channels.Config
	states   map[string]*chanState
	specs    []*consumerSpec
	sched    *scheduler
	slots    *slots
	released chan struct{}

	credits   chan struct{}
	pullers   sync.WaitGroup
	sweepDone chan struct{}
	dynamic   map[string]*consumerSpec // consumers of unconfigured channels
}

type running struct {
	msg      jetstream.Msg
	received time.Time
}

// New builds a Worker for the handlers in reg.
func New(js jetstream.JetStream, reg *Registry, opts ...Option) (*Worker, error) {
	host, _ := os.Hostname()
	c := config{
		concurrency: DefaultConcurrency, ackWait: DefaultAckWait, grace: DefaultShutdownGrace,
		retry: job.DefaultRetryPattern, provision: true, unknownRetries: 3, unknownDelay: time.Second,
		maxAckPending: DefaultMaxAckPending, fetchWait: 2 * time.Second, pullers: 2, prefetch: -1,
		name: host + "-" + strconv.Itoa(os.Getpid()),
	}
	for _, o := range opts {
		o(&c)
	}
	names, err := wire.NewNames(c.prefix)
	if err != nil {
		return nil, err
	}
	if c.concurrency < 1 {
		return nil, fmt.Errorf("worker: concurrency must be >= 1")
	}
	if c.prefetch < 0 {
		c.prefetch = 256
	}
	if c.ackWait < time.Second {
		return nil, fmt.Errorf("worker: ack wait must be >= 1s")
	}
	if c.log == nil {
		c.log = zap.NewNop()
	}
	// Job failures are reported with their own error and stack; the
	// worker's own stack adds nothing.
	c.log = c.log.WithOptions(zap.AddStacktrace(zapcore.DPanicLevel))
	c.streams.Names = names
	chans, err := channels.Parse(c.channels)
	if err != nil {
		return nil, err
	}
	w := &Worker{js: js, reg: reg, handlers: reg.build(), cfg: c, names: names, log: c.log,
		chans: chans, states: map[string]*chanState{}, sched: newScheduler(), released: make(chan struct{}, 1)}
	for _, ch := range chans.All() {
		cs := &chanState{ch: ch, chain: chans.Chain(ch.Name), limited: chans.Limited(ch.Name)}
		if cs.limited && c.rdb == nil {
			return nil, fmt.Errorf("worker: channel %s has a capacity or throttle: it needs Redis (WithRedis)", ch.Name)
		}
		w.states[ch.Name] = cs
	}
	if c.rdb != nil {
		w.slots = &slots{rdb: c.rdb, tag: "{" + names.Prefix + ":channels}", lease: c.ackWait}
	}
	if c.tp != nil {
		w.tracer = c.tp.Tracer("github.com/connector-go/connector/worker")
	}
	if w.metrics, err = telemetry.NewMetrics(c.mp); err != nil {
		return nil, err
	}
	return w, nil
}

// Names exposes the subjects and streams the worker uses.
func (w *Worker) Names() wire.Names { return w.names }

// Running returns how many jobs this worker runs right now.
func (w *Worker) Running() int { return int(w.running.Load()) }

// Setup provisions (or checks) the streams and creates the consumers: one
// per configured channel and priority band (one for a sequential channel).
// Run calls it; it is exported for tools that only provision.
func (w *Worker) Setup(ctx context.Context) error {
	if w.cfg.provision {
		if err := streams.Ensure(ctx, w.js, w.cfg.streams); err != nil {
			return err
		}
	} else if err := streams.Check(ctx, w.js, w.names); err != nil {
		return err
	}
	w.specs = w.specs[:0]
	for _, ch := range w.chans.All() {
		cs := w.states[ch.Name]
		bands := []int{0, 1, 2}
		if ch.Sequential {
			bands = []int{-1}
		}
		for _, band := range bands {
			cc := jetstream.ConsumerConfig{
				Durable:       w.names.JobsConsumer(ch.Name, band),
				Description:   "connector jobs of channel " + ch.Name,
				AckPolicy:     jetstream.AckExplicitPolicy,
				DeliverPolicy: jetstream.DeliverAllPolicy,
				AckWait:       w.cfg.ackWait,
				MaxDeliver:    -1,
				MaxAckPending: w.cfg.maxAckPending,
				MaxWaiting:    4096,
			}
			var base string
			if band < 0 {
				base = w.names.JobsChannelFilter(ch.Name)
				cc.MaxAckPending = 1 // one at a time, in order, fleet-wide
			} else {
				base = w.names.JobsSubject(ch.Name, band)
				if cs.limited {
					// Fetched-but-waiting jobs stay few: capacity plus a margin.
					cc.MaxAckPending = minCapacity(cs.chain) + 16
				}
			}
			cc.FilterSubject = base
			var cons jetstream.Consumer
			var err error
			if !w.cfg.provision {
				cons, err = w.js.Consumer(ctx, w.names.JobsStream(), cc.Durable)
			}
			if cons == nil {
				cons, err = w.js.CreateOrUpdateConsumer(ctx, w.names.JobsStream(), cc)
			}
			if err != nil {
				return fmt.Errorf("worker: consumer %s on %s: %w", cc.Durable, w.names.JobsStream(), err)
			}
			w.specs = append(w.specs, &consumerSpec{cs: cs, band: band, cons: cons, name: cc.Durable})
		}
	}
	return nil
}

func minCapacity(chain []channels.Channel) int {
	m := 0
	for _, c := range chain {
		if c.Capacity > 0 && (m == 0 || c.Capacity < m) {
			m = c.Capacity
		}
	}
	if m == 0 {
		m = 1 // throttled only
	}
	return m
}

// Run consumes jobs until ctx is cancelled, then stops pulling, lets running
// jobs finish within the grace period and hands the others back for
// redelivery. It returns nil after a clean shutdown.
func (w *Worker) Run(ctx context.Context) error {
	if err := w.Setup(ctx); err != nil {
		return err
	}
	if w.cfg.rdb != nil {
		w.rec = records.New(w.cfg.rdb, w.names, w.cfg.recordTTL, w.log)
	}
	hard, cancelHard := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelHard()
	w.hardCtx = hard

	w.log.Info("worker started", zap.String("worker", w.cfg.name), zap.String("stream", w.names.JobsStream()),
		zap.Int("concurrency", w.cfg.concurrency), zap.Duration("ack_wait", w.cfg.ackWait))

	hbDone := make(chan struct{})
	go w.heartbeats(hard, hbDone)

	// Pullers fetch batches into the local scheduler; `concurrency` runners
	// take the best job. Every message is under heartbeat from the moment it
	// is received, so a job waiting locally keeps its lease too. Credits
	// bound what this process holds: running + waiting <= concurrency + prefetch.
	credits := make(chan struct{}, w.cfg.concurrency+w.cfg.prefetch)
	w.credits = credits
	var runners sync.WaitGroup
	for i := 0; i < w.cfg.concurrency; i++ {
		runners.Add(1)
		go func() {
			defer runners.Done()
			for {
				it := w.sched.next()
				if it == nil {
					return
				}
				w.runItem(ctx, it, credits)
			}
		}()
	}
	for _, spec := range w.specs {
		w.startPullers(ctx, spec)
	}
	w.sweepDone = make(chan struct{})
	go func() {
		defer close(w.sweepDone)
		w.sweep(ctx)
	}()
	<-w.sweepDone
	w.pullers.Wait()
	w.sched.close()
	// Jobs still waiting for a channel slot go back.
	for _, cs := range w.states {
		for _, it := range cs.drainBlocked() {
			_ = it.r.msg.Nak()
			w.inflight.del(it)
			<-credits
		}
	}
	w.wg.Add(1)
	go func() { runners.Wait(); w.wg.Done() }()

	// Drain: wait for running jobs up to the grace period.
	drained := make(chan struct{})
	go func() { w.wg.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(w.cfg.grace):
		w.log.Warn("shutdown grace period over: handing running jobs back", zap.Int64("running", w.running.Load()))
		cancelHard()
		<-drained
	}
	cancelHard()
	<-hbDone
	if w.rec != nil {
		fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := w.rec.Close(fctx); err != nil {
			w.log.Warn("job records not flushed at shutdown", zap.Error(err))
		}
		cancel()
	}
	w.log.Info("worker stopped", zap.String("worker", w.cfg.name))
	return nil
}

func (w *Worker) startPullers(ctx context.Context, spec *consumerSpec) {
	for i := 0; i < w.pullersOf(spec); i++ {
		w.pullers.Add(1)
		go func() {
			defer w.pullers.Done()
			w.fetchLoop(ctx, spec, w.credits)
		}()
	}
}

// pullersOf: unlimited channels get several pullers so pulls overlap.
func (w *Worker) pullersOf(spec *consumerSpec) int {
	if !spec.cs.limited && spec.band >= 0 {
		return w.cfg.pullers
	}
	return 1
}

// runItem runs one job, first taking its channel slot when its channel
// chain is limited; without a free slot the job waits in its channel's
// blocked list (keeping its credit and its lease).
func (w *Worker) runItem(ctx context.Context, it *item, credits chan struct{}) {
	if ctx.Err() != nil {
		// Shutting down: a job not started yet goes straight back.
		_ = it.r.msg.Nak()
		w.inflight.del(it)
		if it.token != "" {
			_ = w.slots.release(context.Background(), it.ch, it.token)
		}
		<-credits
		return
	}
	if it.ch.limited && it.token == "" {
		it.token = wire.NewID()
		ok, _, err := w.slots.acquire(ctx, it.ch, it.band, it.token)
		if err != nil || !ok {
			if err != nil {
				w.log.Warn("channel slot not acquired; waiting", zap.String("channel", it.ch.ch.Name), zap.Error(err))
			}
			w.block(ctx, it)
			return
		}
	}
	w.running.Add(1)
	w.process(it)
	w.running.Add(-1)
	if it.token != "" {
		if err := w.slots.release(context.Background(), it.ch, it.token); err != nil {
			w.log.Warn("channel slot not released; it expires with its lease", zap.Error(err))
		}
		select {
		case w.released <- struct{}{}:
		default:
		}
	}
	<-credits
}

// fetchLoop pulls batches of up to maxBatch jobs, as many as there are
// credits, and queues them for the runners.
func (w *Worker) fetchLoop(ctx context.Context, spec *consumerSpec, credits chan struct{}) {
	maxBatch := 256
	if spec.cs.limited || spec.band < 0 {
		maxBatch = min(16, minCapacity(spec.cs.chain)+1)
	}
	cons := spec.cons
	backoff := 100 * time.Millisecond
	// The batch adapts: an idle puller long-polls for one job and holds no
	// credit meanwhile (it takes one when the job arrives, the job already
	// under heartbeat); a busy one reserves credits and doubles its batch up
	// to maxBatch.
	want := 1
	for ctx.Err() == nil {
		// A band whose jobs wait for a slot pulls no more until they start.
		for spec.cs.limited && spec.cs.hasBlocked(spec.band) {
			select {
			case <-ctx.Done():
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
		reserved := 0
		if want > 1 {
			select {
			case credits <- struct{}{}:
				reserved = 1
			case <-ctx.Done():
				return
			}
		more:
			for reserved < want {
				select {
				case credits <- struct{}{}:
					reserved++
				default:
					break more
				}
			}
		}
		n := max(reserved, 1)
		fctx, cancel := context.WithTimeout(ctx, w.cfg.fetchWait)
		batch, err := cons.Fetch(n, jetstream.FetchContext(fctx))
		if err != nil {
			cancel()
			for i := 0; i < reserved; i++ {
				<-credits
			}
			if ctx.Err() != nil {
				return
			}
			w.log.Warn("fetch failed; retrying", zap.Error(err), zap.String("consumer", spec.name), zap.Duration("backoff", backoff))
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return
			}
			backoff = min(backoff*2, 5*time.Second)
			continue
		}
		got := 0
		for msg := range batch.Messages() {
			got++
			band := spec.band
			if band < 0 {
				band = channels.BandNormal // sequential: one band, in order
			}
			it := &item{r: &running{msg: msg, received: time.Now()}, ch: spec.cs, band: band, group: spec.name}
			w.inflight.add(it) // under heartbeat from now on
			if got > reserved {
				select {
				case credits <- struct{}{}:
				case <-ctx.Done():
					// Shutting down without a credit for it: hand it back.
					_ = msg.Nak()
					w.inflight.del(it)
					continue
				}
			}
			if ctx.Err() != nil {
				_ = msg.Nak() // shutting down: hand it straight back
				w.inflight.del(it)
				<-credits
				continue
			}
			w.sched.push(it)
		}
		cancel()
		for i := got; i < reserved; i++ {
			<-credits
		}
		if got >= n && n > 0 {
			want = min(2*n, maxBatch)
		} else {
			want = max(1, got)
		}
		if berr := batch.Error(); berr != nil && !errors.Is(berr, context.DeadlineExceeded) &&
			!errors.Is(berr, context.Canceled) && !errors.Is(berr, nats.ErrTimeout) && got == 0 {
			w.log.Warn("fetch ended with an error", zap.Error(berr), zap.String("consumer", spec.name))
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return
			}
			backoff = min(backoff*2, 5*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
	}
}

// heartbeats sends InProgress for jobs running longer than a third of the
// lease, so long jobs keep it and dead workers lose it within AckWait.
func (w *Worker) heartbeats(ctx context.Context, done chan struct{}) {
	defer close(done)
	every := w.cfg.ackWait / 3
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			var leased []*item
			w.inflight.each(func(it *item) bool {
				if now.Sub(it.r.received) >= every/2 {
					if err := it.r.msg.InProgress(); err != nil {
						w.log.Debug("heartbeat failed", zap.Error(err))
					}
				}
				if it.token != "" {
					leased = append(leased, it)
				}
				return true
			})
			if w.slots != nil && len(leased) > 0 {
				if err := w.slots.renew(ctx, leased); err != nil {
					w.log.Warn("channel slot leases not renewed", zap.Error(err))
				}
			}
		}
	}
}

// jobCtxKey carries the per-job logger.
type jobCtxKey struct{}

// jobCtx holds the job's log fields; the logger itself is built only when
// something logs (most successful jobs log nothing at production levels).
type jobCtx struct {
	base   *zap.Logger
	m      *Message
	sc     trace.SpanContext
	labels []zap.Field // backend, model
	log    *zap.Logger
}

func (jc *jobCtx) fields() []zap.Field {
	f := make([]zap.Field, 0, 8)
	f = append(f, zap.String("job_id", jc.m.ID), zap.String("job_name", jc.m.Name),
		zap.String("channel", jc.m.Channel), zap.Int("attempt", jc.m.Attempt))
	if jc.sc.IsValid() {
		f = append(f, zap.String("trace_id", jc.sc.TraceID().String()))
	}
	return append(f, jc.labels...)
}

func (jc *jobCtx) logger() *zap.Logger {
	if jc.log == nil {
		jc.log = jc.base.With(jc.fields()...)
	}
	return jc.log
}

// Logger returns the logger of the running job (with job_id, job_name,
// channel, attempt, trace_id, and backend/model when the arguments tell
// them through a JobLabels() (backend, model string) method), or a no-op
// logger outside a job.
func Logger(ctx context.Context) *zap.Logger {
	if jc, ok := ctx.Value(jobCtxKey{}).(*jobCtx); ok {
		return jc.logger()
	}
	return zap.NewNop()
}

func withLabels(ctx context.Context, backend, model string) context.Context {
	if jc, ok := ctx.Value(jobCtxKey{}).(*jobCtx); ok {
		jc.labels = append(jc.labels, zap.String("backend", backend), zap.String("model", model))
		jc.log = nil
	}
	return ctx
}

func (w *Worker) process(it *item) {
	defer w.inflight.del(it)
	msg, received := it.r.msg, it.r.received
	meta, err := msg.Metadata()
	if err != nil {
		w.log.Error("message without JetStream metadata; terminating it", zap.Error(err))
		_ = msg.Term()
		return
	}
	env, err := wire.DecodeEnvelope(msg.Data(), w.cfg.maxEnvelope)
	if err != nil {
		w.dead(msg, meta, nil, 0, wire.ReasonMalformed, fmt.Errorf("%w: %v", job.ErrBadEnvelope, err), "", time.Time{})
		return
	}
	if env.Template {
		// A firing of a periodic schedule: a new job of its own, named by
		// its tick, so that a tick is never run twice.
		tick := strconv.FormatUint(meta.Sequence.Stream, 10)
		if next, err := time.Parse(time.RFC3339Nano, msg.Headers().Get("Nats-Schedule-Next")); err == nil {
			tick = "t" + strconv.FormatInt(next.Unix(), 10)
		}
		env.ID = env.ID + "-" + tick
		env.Template = false
		env.EnqueuedAt = meta.Timestamp.UnixMilli()
		if w.cfg.rdb != nil && meta.NumDelivered == 1 && !w.claimTick(env.ID) {
			_ = msg.Ack()
			w.log.Warn("periodic tick fired twice; second one dropped", zap.String("job_id", env.ID))
			return
		}
	} else if w.cfg.rdb != nil && len(msg.Headers()[headerScheduler]) > 0 && w.cancelled(env.ID) {
		// Fired by a schedule (ETA or retry) just as the job was cancelled.
		_ = msg.Ack()
		w.record(records.Update{ID: env.ID, State: job.StateCancelled, EndedAt: time.Now()})
		w.log.Info("cancelled job dropped", zap.String("job_id", env.ID), zap.String("job_name", env.Name))
		return
	}
	attempt := env.Attempt + int(meta.NumDelivered)
	h := w.handlers[env.Name]
	if h == nil {
		if int(meta.NumDelivered) <= w.cfg.unknownRetries {
			w.log.Warn("unknown job name; handing it back for another worker", zap.String("job_id", env.ID),
				zap.String("job_name", env.Name), zap.Uint64("delivered", meta.NumDelivered))
			_ = msg.NakWithDelay(w.cfg.unknownDelay)
			return
		}
		w.dead(msg, meta, env, attempt, wire.ReasonUnknownJob,
			fmt.Errorf("%w: %q is not registered on worker %s", job.ErrUnknownJob, env.Name, w.cfg.name), "", time.Time{})
		return
	}
	maxRetries := job.DefaultMaxRetries
	if env.MaxRetries != nil {
		maxRetries = *env.MaxRetries
	}
	channel := env.Channel
	if channel == "" {
		channel = job.DefaultChannel
	}
	if maxRetries > 0 && attempt > maxRetries {
		// Redelivered after its worker died on the last allowed attempt.
		w.dead(msg, meta, env, attempt-1, wire.ReasonMaxRetries,
			fmt.Errorf("%w: attempt %d of %d was lost (worker died or lease expired)", job.ErrMaxRetries, attempt-1, maxRetries), "", time.Time{})
		return
	}
	if env.Identity != "" {
		w.releaseIdentity(env.Identity, env.ID)
	}

	m := &Message{
		Meta: job.Meta{
			ID: env.ID, Name: env.Name, Attempt: attempt, MaxRetries: maxRetries, Channel: channel,
			Priority: job.DefaultPriority, Description: env.Description, IdentityKey: env.Identity,
			EnqueuedAt: wire.FromMillis(env.EnqueuedAt), Timeout: time.Duration(env.TimeoutMS) * time.Millisecond,
		},
		Args: env.Args, Header: msg.Headers(), StreamSeq: meta.Sequence.Stream, Delivered: int(meta.NumDelivered),
	}
	if env.Priority != nil {
		m.Priority = *env.Priority
	}
	pattern := w.cfg.retry
	if len(env.Retry) > 0 {
		pattern = make(job.RetryPattern, len(env.Retry))
		for k, v := range env.Retry {
			pattern[k] = time.Duration(v) * time.Millisecond
		}
	}
	m.RetryPattern = pattern

	ctx := w.hardCtx
	var span trace.Span
	if w.tracer != nil {
		ctx, span = telemetry.StartConsumerSpan(ctx, w.tracer, w.cfg.linkMode, w.names.JobsStream(), it.group, env.ID, msg.Headers(),
			attribute.String("connector.job.name", env.Name), attribute.String("connector.job.channel", channel),
			attribute.Int("connector.job.attempt", attempt))
		defer span.End()
	} else {
		ctx = telemetry.Extract(ctx, msg.Headers())
	}
	jc := &jobCtx{base: w.log, m: m, sc: trace.SpanContextFromContext(ctx)}
	ctx = context.WithValue(ctx, jobCtxKey{}, jc)

	if !m.EnqueuedAt.IsZero() {
		w.metrics.JobStarted(ctx, env.Name, channel, received.Sub(m.EnqueuedAt))
	} else {
		w.metrics.JobStarted(ctx, env.Name, channel, 0)
	}
	m.graph = env.Graph
	st := w.base(m, received)
	st.State = job.StateStarted
	w.record(st)

	runCtx := ctx
	var cancel context.CancelFunc
	if m.Timeout > 0 {
		runCtx, cancel = context.WithTimeout(ctx, m.Timeout)
	}
	result, herr := safeCall(runCtx, h, m)
	if cancel != nil {
		if herr != nil && errors.Is(runCtx.Err(), context.DeadlineExceeded) && w.hardCtx.Err() == nil {
			herr = job.Retry(fmt.Errorf("%w after %s: %w", job.ErrTimeout, m.Timeout, herr))
		}
		cancel()
	}
	w.finish(ctx, it, meta, env, m, result, herr, received, jc, span)
}

func safeCall(ctx context.Context, h Handler, m *Message) (result string, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = &panicError{value: p, stack: string(debug.Stack())}
		}
	}()
	return h(ctx, m)
}

type panicError struct {
	value any
	stack string
}

func (e *panicError) Error() string { return fmt.Sprintf("%v: %v", job.ErrPanic, e.value) }
func (e *panicError) Unwrap() error { return job.ErrPanic }

func (w *Worker) finish(ctx context.Context, it *item, meta *jetstream.MsgMetadata, env *wire.Envelope, m *Message,
	result string, herr error, started time.Time, jc *jobCtx, span trace.Span) {
	msg := it.r.msg
	took := time.Since(started)
	var nothing *job.NothingToDoError
	switch {
	case herr == nil || errors.As(herr, &nothing):
		outcome := "succeeded"
		if herr != nil {
			result, outcome = nothing.Msg, "nothing_to_do"
		}
		if env.Graph != "" && w.cfg.rdb != nil {
			if err := w.releaseChildren(ctx, env); err != nil {
				// Not acked: the job comes back and the release repeats.
				jc.logger().Warn("job done but its graph children not released; retrying", zap.Error(err))
				_ = msg.NakWithDelay(5 * time.Second)
				return
			}
		}
		if err := msg.Ack(); err != nil {
			jc.logger().Warn("ack failed; the job may run again", zap.Error(err))
		}
		w.metrics.JobEnded(ctx, m.Name, m.Channel, outcome, took)
		u := w.base(m, started)
		u.State, u.Result, u.EndedAt, u.ClearError = job.StateDone, result, time.Now(), m.Attempt > 1
		w.record(u)
		if ce := w.log.Check(zap.InfoLevel, "job done"); ce != nil {
			ce.Write(append(jc.fields(), zap.String("result", result), zap.Duration("took", took))...)
		}
		return
	case w.hardCtx.Err() != nil && errors.Is(herr, context.Canceled):
		// Shutdown grace over: hand it back, unfinished.
		_ = msg.Nak()
		jc.logger().Warn("job interrupted by shutdown; handed back", zap.Duration("took", took))
		w.metrics.JobEnded(ctx, m.Name, m.Channel, "interrupted", took)
		return
	}
	if span != nil {
		telemetry.RecordError(span, herr)
	}
	if r, ok := job.AsRetryable(herr); ok {
		exhausted := !r.NoCount && m.MaxRetries > 0 && m.Attempt >= m.MaxRetries
		if !exhausted {
			delay := r.Delay
			if delay <= 0 {
				delay = m.RetryPattern.Delay(m.Attempt)
			}
			next := m.Attempt
			if r.NoCount {
				next = m.Attempt - 1
			}
			if it.ch.ch.Sequential {
				// A sequential channel waits for its head job: the retry
				// stays in place (MaxAckPending 1 holds the channel), and
				// the next delivery counts as the next attempt.
				_ = msg.NakWithDelay(delay)
				w.metrics.JobEnded(ctx, m.Name, m.Channel, "retried", took)
				u := w.base(m, started)
				u.State, u.Error, u.ErrorType, u.ETA, u.EndedAt = job.StateWaiting, herr.Error(), errorType(herr), time.Now().Add(delay), time.Now()
				w.record(u)
				jc.logger().Info("job failed; retrying in place (sequential channel)", redactedErr(herr), zap.Duration("delay", delay))
				return
			}
			if err := w.scheduleRetry(ctx, msg, env, next, delay); err != nil {
				// Could not schedule: keep the message and retry it in place.
				jc.logger().Warn("retry not scheduled; retrying in place", zap.Error(err))
				_ = msg.NakWithDelay(delay)
				return
			}
			w.metrics.JobEnded(ctx, m.Name, m.Channel, "retried", took)
			u := w.base(m, started)
			u.State, u.Error, u.ErrorType, u.ETA, u.EndedAt = job.StateWaiting, herr.Error(), errorType(herr), time.Now().Add(delay), time.Now()
			w.record(u)
			jc.logger().Info("job failed; retry scheduled", redactedErr(herr), zap.Duration("delay", delay), zap.Bool("counted", !r.NoCount))
			return
		}
		reason := wire.ReasonMaxRetries
		if errors.Is(herr, job.ErrTimeout) {
			reason = wire.ReasonTimeout
		}
		w.dead(msg, meta, env, m.Attempt, reason,
			fmt.Errorf("%w (%d): %w", job.ErrMaxRetries, m.MaxRetries, herr), "", started)
		return
	}
	reason, stack := wire.ReasonError, ""
	var pe *panicError
	switch {
	case errors.As(herr, &pe):
		reason, stack = wire.ReasonPanic, pe.stack
	case errors.Is(herr, job.ErrBadArgs):
		reason = wire.ReasonBadArgs
	default:
		stack = fmt.Sprintf("%+v", herr)
	}
	w.dead(msg, meta, env, m.Attempt, reason, herr, stack, started)
}

// releaseChildren marks a graph job done and publishes the children whose
// parents are now all done (deduplicated by their job ids).
func (w *Worker) releaseChildren(ctx context.Context, env *wire.Envelope) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	kids, err := graphs.Done(ctx, w.cfg.rdb, w.names, env.Graph, env.ID)
	if err != nil {
		return err
	}
	for _, k := range kids {
		m := nats.NewMsg(k.Subject)
		for h, v := range k.Header {
			m.Header[h] = v
		}
		m.Data = k.Data
		ack, err := w.js.PublishMsg(ctx, m)
		if err != nil {
			return fmt.Errorf("release %s: %w", k.ID, err)
		}
		u := records.Update{ID: k.ID, Queued: job.StateEnqueued, Seq: ack.Sequence, Graph: env.Graph}
		if kenv, err := wire.DecodeEnvelope(k.Data, 0); err == nil {
			u.Name, u.Channel, u.EnqueuedAt, u.Description = kenv.Name, kenv.Channel, wire.FromMillis(kenv.EnqueuedAt), kenv.Description
		}
		w.record(u)
	}
	return nil
}

// scheduleRetry puts the next attempt in a message schedule: the current
// message is acked, so no capacity is held while waiting.
func (w *Worker) scheduleRetry(ctx context.Context, msg jetstream.Msg, env *wire.Envelope, attempt int, delay time.Duration) error {
	next := *env
	next.Attempt = attempt
	data, err := wire.EncodeEnvelope(&next)
	if err != nil {
		return err
	}
	out := nats.NewMsg(w.names.ScheduleSubject(env.ID))
	for k, v := range msg.Headers() {
		if len(k) >= 5 && k[:5] == "Nats-" {
			continue
		}
		out.Header[k] = v
	}
	out.Header[wire.HeaderMsgID] = []string{env.ID + "." + strconv.Itoa(attempt) + "." + strconv.FormatInt(time.Now().UnixNano(), 36)}
	out.Header[wire.HeaderSchedule] = []string{"@at " + time.Now().Add(delay).UTC().Format(time.RFC3339Nano)}
	out.Header[wire.HeaderSchTarget] = []string{msg.Subject()} // same channel and band
	out.Data = data
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if _, err := w.js.PublishMsg(pctx, out); err != nil {
		return err
	}
	return msg.Ack()
}

// dead copies the message to the dead-letter stream with why it died, and
// only then removes it from the jobs stream. If the copy fails the message
// stays and comes back later: nothing is dropped.
func (w *Worker) dead(msg jetstream.Msg, meta *jetstream.MsgMetadata, env *wire.Envelope, attempts int, reason string, cause error, stack string, started time.Time) {
	dl := wire.DeadLetter{
		V: 1, Reason: reason, Error: cause.Error(), ErrorType: errorType(cause), Stack: stack,
		Attempts: attempts, Subject: msg.Subject(), StreamSeq: meta.Sequence.Stream, DiedAt: time.Now().UnixMilli(),
		Worker: w.cfg.name, Headers: msg.Headers(), Data: msg.Data(),
	}
	subject := w.names.DeadMalformedSubject(meta.Sequence.Stream)
	msgID := "dead.seq." + strconv.FormatUint(meta.Sequence.Stream, 10)
	log := w.log.With(zap.Uint64("stream_seq", meta.Sequence.Stream))
	if env != nil {
		dl.JobID, dl.JobName, dl.Channel, dl.EnqueuedAt = env.ID, env.Name, env.Channel, env.EnqueuedAt
		subject = w.names.DeadJobSubject(env.ID)
		msgID = "dead." + env.ID + "." + strconv.FormatUint(meta.Sequence.Stream, 10)
		log = log.With(zap.String("job_id", env.ID), zap.String("job_name", env.Name), zap.Int("attempt", attempts))
	}
	data, err := wire.Marshal(&dl)
	if err == nil {
		out := nats.NewMsg(subject)
		out.Header[wire.HeaderMsgID] = []string{msgID}
		out.Header[wire.HeaderDeadWhy] = []string{reason}
		if env != nil {
			out.Header[wire.HeaderJobID] = []string{env.ID}
			out.Header[wire.HeaderJobName] = []string{env.Name}
		}
		out.Data = data
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err = w.js.PublishMsg(ctx, out)
		cancel()
	}
	if err != nil {
		log.Error("dead letter not stored; the job stays queued and comes back", zap.Error(err))
		_ = msg.NakWithDelay(5 * time.Second)
		return
	}
	if err := msg.TermWithReason(reason); err != nil {
		log.Warn("term failed after dead-lettering; a duplicate letter may follow", zap.Error(err))
	}
	name, channel := "", ""
	if env != nil {
		name, channel = env.Name, env.Channel
		if env.Identity != "" {
			w.releaseIdentity(env.Identity, env.ID)
		}
		w.record(records.Update{ID: env.ID, State: job.StateDead, Name: env.Name, Channel: env.Channel, Attempts: attempts,
			Error: cause.Error(), ErrorType: errorType(cause), Stack: stack, EndedAt: time.Now(), Worker: w.cfg.name,
			Graph: env.Graph, EnqueuedAt: wire.FromMillis(env.EnqueuedAt)})
	}
	if channel == "" && env != nil {
		channel = job.DefaultChannel
	}
	if !started.IsZero() { // a run that JobStarted counted
		w.metrics.JobEnded(context.Background(), name, channel, "dead", time.Since(started))
	} else {
		w.metrics.JobRejected(context.Background(), name, channel, "dead")
	}
	log.Error("job dead-lettered", zap.String("reason", reason), redactedErr(cause))
}

// base is what every record update of a run carries, so that any single
// write holds the whole picture.
func (w *Worker) base(m *Message, started time.Time) records.Update {
	mr, prio := m.MaxRetries, m.Priority
	return records.Update{ID: m.ID, Name: m.Name, Channel: m.Channel, Priority: &prio, Attempts: m.Attempt,
		MaxRetries: &mr, Description: m.Description, Worker: w.cfg.name, StartedAt: started,
		EnqueuedAt: m.EnqueuedAt, Identity: m.IdentityKey, Graph: m.graph}
}

// redactedErr logs a job's error with URLs' passwords and tokens masked:
// handlers' errors often quote the URL they failed on.
func redactedErr(err error) zap.Field { return zap.String("error", telemetry.Redact(err.Error())) }

func (w *Worker) record(u records.Update) {
	if w.rec != nil {
		w.rec.Record(u)
	}
}

// headerScheduler is set by the server on messages fired by a schedule.
const headerScheduler = "Nats-Scheduler"

// claimTick records that a periodic tick's job exists (false if it did).
func (w *Worker) claimTick(id string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ok, err := w.cfg.rdb.SetNX(ctx, w.names.RedisKey("tick", id), "1", 24*time.Hour).Result()
	return ok || err != nil // without Redis, run it rather than lose it
}

func (w *Worker) cancelled(id string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n, err := w.cfg.rdb.Exists(ctx, w.names.RedisKey("cancelled", id)).Result()
	return err == nil && n == 1
}

var releaseIdentityScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`)

// releaseIdentity frees a job's identity key once it starts (or dies), so a
// new job with the same key may be enqueued.
func (w *Worker) releaseIdentity(key, id string) {
	if w.cfg.rdb == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := releaseIdentityScript.Run(ctx, w.cfg.rdb, []string{w.names.RedisKey("identity", key)}, id).Err(); err != nil {
		w.log.Warn("identity key not released", zap.String("identity_key", key), zap.Error(err))
	}
}

// errorType names the type of the error that caused a failure, looking
// through the wrappers the runtime and fmt add.
func errorType(err error) string {
	for err != nil {
		switch e := err.(type) {
		case *job.RetryableError:
			err = e.Err
			continue
		case *panicError:
			return "panic"
		case interface{ Unwrap() []error }:
			errs := e.Unwrap()
			if len(errs) == 0 {
				break
			}
			err = errs[len(errs)-1]
			continue
		case interface{ Unwrap() error }:
			if t := fmt.Sprintf("%T", err); t == "*fmt.wrapError" {
				err = e.Unwrap()
				continue
			}
		}
		break
	}
	return fmt.Sprintf("%T", err)
}
