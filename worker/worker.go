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
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/connector-go/connector/internal/channels"
	"github.com/connector-go/connector/internal/records"
	"github.com/connector-go/connector/internal/streams"
	"github.com/connector-go/connector/internal/telemetry"
	"github.com/connector-go/connector/internal/wire"
	"github.com/connector-go/connector/job"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
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

	// stuckWait is how long Run still waits, after the grace period has
	// cancelled the running jobs' contexts, before it hands back the jobs
	// whose handlers ignore it.
	stuckWait = 3 * time.Second
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
	// idleStop, idleRemove: an unconfigured channel's consumer is no longer
	// pulled once its subject has been empty this long, and the server
	// removes it after idleRemove without pull requests (InactiveThreshold).
	idleStop, idleRemove time.Duration
	pullers              int
	prefetch             int
	// ackHold, ackSharedFor: the bounds of the acks' order (ackOrder).
	ackHold, ackSharedFor time.Duration
	channels              string
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

// WithConcurrency sets how many jobs this process runs at once (default 256).
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

// WithDeadMaxAge bounds how long dead letters are kept in the dead-letter
// stream this worker provisions (default 0: forever). Every provisioning
// worker should get the same value.
func WithDeadMaxAge(d time.Duration) Option { return func(c *config) { c.streams.DeadMaxAge = d } }

// WithEventsMaxAge bounds how long domain events are kept in the events
// stream this worker provisions (default 7 days): the longest a listener
// may be stopped, or lag behind, without missing events. Every
// provisioning worker should get the same value.
func WithEventsMaxAge(d time.Duration) Option { return func(c *config) { c.streams.EventsMaxAge = d } }

// WithRecordTTL sets how long job records are kept after their last update
// (default 7 days); a job due later (its ETA, a retry's time) keeps its
// record that long after it.
func WithRecordTTL(d time.Duration) Option { return func(c *config) { c.recordTTL = d } }

// WithMaxEnvelope bounds the size of an accepted job message (default 1 MiB).
func WithMaxEnvelope(n int) Option { return func(c *config) { c.maxEnvelope = n } }

// WithUnknownJobRedeliveries sets how many times a job with a name this
// worker does not know is handed back (other workers of a rolling deploy may
// know it) before it is dead-lettered (default 3, one second apart).
func WithUnknownJobRedeliveries(n int, delay time.Duration) Option {
	return func(c *config) { c.unknownRetries, c.unknownDelay = n, delay }
}

// WithMaxAckPending caps the jobs of one queue (a channel's priority band,
// one durable consumer) delivered and not yet finished across the whole
// fleet (default 20000). A channel with a capacity or throttle caps its
// queues at its smallest capacity plus 16 instead, a sequential channel
// at 1.
func WithMaxAckPending(n int) Option { return func(c *config) { c.maxAckPending = n } }

// WithPrefetch fixes how many jobs this process may hold queued beyond the
// running ones. By default it adapts to the jobs' pace: about 50 ms of
// work, between 16 and 4096 jobs, so that fast jobs keep the server's pull
// requests full and slow ones are not hoarded away from the rest of the
// fleet. Queued jobs keep their leases through heartbeats; 0 takes a job
// only when a runner is free.
func WithPrefetch(n int) Option { return func(c *config) { c.prefetch = n } }

// WithChannels configures the channels in the seed's syntax, e.g.
// "root:4,root.magento:2,root.magento.orders:1:sequential,root.slow:2:throttle=5".
// Capacities hold across the whole fleet (they are counted in Redis, so a
// limited channel needs WithRedis); a child's jobs count against its
// parents; a job of an unconfigured channel runs in its nearest configured
// ancestor. Every worker of a deployment should get the same configuration
// (producers need none: a job's channel is its subject).
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

	chans  *channels.Config
	states map[string]*chanState
	specs  []*consumerSpec
	sched  *scheduler
	slots  *slots

	cancelsKey string

	credits   *credits
	pullers   sync.WaitGroup
	sweepDone chan struct{}
	// consumersWarned: the consumer count of the last warning (sweeper only)
	consumersWarned int
	dynamic         map[string]*consumerSpec // consumers of unconfigured channels
}

// New builds a Worker for the handlers in reg.
func New(js jetstream.JetStream, reg *Registry, opts ...Option) (*Worker, error) {
	host, _ := os.Hostname()
	c := config{
		concurrency: DefaultConcurrency, ackWait: DefaultAckWait, grace: DefaultShutdownGrace,
		retry: job.DefaultRetryPattern, provision: true, unknownRetries: 3, unknownDelay: time.Second,
		maxAckPending: DefaultMaxAckPending, fetchWait: time.Second, pullers: 2, prefetch: -1,
		ackHold: defaultAckHold, ackSharedFor: defaultAckSharedFor,
		idleStop: time.Minute, idleRemove: time.Hour,
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
		chans: chans, states: map[string]*chanState{}, sched: newScheduler(),
		cancelsKey: names.CancelsKey()}
	for _, ch := range chans.All() {
		cs := newChanState(chans, ch)
		if cs.limited && c.rdb == nil {
			return nil, fmt.Errorf("worker: channel %s has a capacity or throttle: it needs Redis (WithRedis)", ch.Name)
		}
		w.states[ch.Name] = cs
	}
	if c.rdb != nil {
		w.slots = &slots{rdb: c.rdb, tag: "{" + names.Prefix + ":channels}", lease: c.ackWait, me: c.name + "~" + wire.NewID()}
		for _, cs := range w.states {
			cs.slots = w.slots
		}
	}
	if c.tp != nil {
		w.tracer = c.tp.Tracer("github.com/connector-go/connector/worker")
	}
	if c.mp != nil { // nil metrics: every call is a no-op, at no cost
		if w.metrics, err = telemetry.NewMetrics(c.mp); err != nil {
			return nil, err
		}
	}
	return w, nil
}

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
			filter := w.names.JobsSubject(ch.Name, band)
			if band < 0 {
				// The channel and its unconfigured sub-channels, all bands:
				// one order for the whole subtree.
				filter = w.names.JobsTreeFilter(ch.Name)
			}
			cc := w.jobsConsumer(w.names.JobsConsumer(ch.Name, band), "connector jobs of channel "+ch.Name, filter, cs)
			if band < 0 {
				cc.MaxAckPending = 1 // one at a time, in order, fleet-wide
			}
			found := false
			var err error
			if !w.cfg.provision {
				_, err = w.js.Consumer(ctx, w.names.JobsStream(), cc.Durable)
				found = err == nil
			}
			if !found {
				_, err = w.ensureConsumer(ctx, cc)
			}
			if err != nil {
				return fmt.Errorf("worker: consumer %s on %s: %w", cc.Durable, w.names.JobsStream(), err)
			}
			w.specs = append(w.specs, w.newSpec(cs, band, cc.Durable))
		}
	}
	for _, cs := range w.states {
		if cs.limited {
			return w.slots.check(ctx)
		}
	}
	return nil
}

// jobsConsumer is the configuration of a durable consumer of the jobs
// stream for the jobs of cs on filter.
func (w *Worker) jobsConsumer(name, description, filter string, cs *chanState) jetstream.ConsumerConfig {
	cc := jetstream.ConsumerConfig{
		Durable:       name,
		Description:   description,
		FilterSubject: filter,
		AckPolicy:     jetstream.AckExplicitPolicy,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckWait:       w.cfg.ackWait,
		MaxDeliver:    -1,
		MaxAckPending: w.cfg.maxAckPending,
		MaxWaiting:    4096,
	}
	if cs.limited {
		// Fetched-but-waiting jobs stay few: capacity plus a margin.
		cc.MaxAckPending = minCapacity(cs.chain) + 16
	}
	return cc
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
		if ctx.Err() != nil {
			return nil // stopped before it started: nothing to drain
		}
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

	if w.slots != nil && w.capped() {
		go w.listenFreed(hard)
	}
	// The heartbeats outlast the grace: a handler that ignores its
	// cancelled context still holds its job through the last wait
	// (stuckWait), until the job is handed back.
	hb, stopHeartbeats := context.WithCancel(context.WithoutCancel(ctx))
	defer stopHeartbeats()
	hbDone := make(chan struct{})
	go w.heartbeats(hb, hbDone)
	stDone := make(chan struct{})
	if w.rec != nil {
		go w.startedRecords(hard, stDone)
	} else {
		close(stDone)
	}
	wcDone := make(chan struct{})
	if w.cfg.rdb != nil {
		go w.watchCancels(hard, wcDone)
	} else {
		close(wcDone)
	}

	// Pullers fetch batches into the local scheduler; `concurrency` runners
	// take the best job. Every message is under heartbeat from the moment it
	// is received, so a job waiting locally keeps its lease too. Credits
	// bound what this process holds: running + waiting <= concurrency + prefetch.
	credits := newCredits(w.cfg.concurrency, w.cfg.prefetch)
	w.credits = credits
	go credits.adapt(hard)
	var runners sync.WaitGroup
	for i := 0; i < w.cfg.concurrency; i++ {
		runners.Add(1)
		go w.runner(ctx, &runners, credits)
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
	// Jobs received and not started go back at once, not counted as
	// attempts: those queued for a runner and those waiting for a slot.
	queued := w.sched.closeAndDrain()
	w.handBack(queued, 0)
	// Their slots go back together: each release waits up to
	// releaseTimeout when Redis hangs, which one after the other would add
	// up past the grace period.
	var released sync.WaitGroup
	for _, it := range queued {
		if it.slotHeld.Load() {
			released.Add(1)
			go func() {
				defer released.Done()
				_ = w.releaseSlot(it)
			}()
		}
		credits.give(1)
	}
	released.Wait()
	for _, cs := range w.states {
		blocked := cs.drainBlocked()
		w.handBack(blocked, 0)
		credits.give(len(blocked))
	}
	w.wg.Add(1)
	go func() { runners.Wait(); w.wg.Done() }()

	// Drain: wait for running jobs up to the grace period, then cancel their
	// contexts; a handler that ignores its context gets a last short wait,
	// then its job is handed back and Run returns anyway.
	drained := make(chan struct{})
	go func() { w.wg.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(w.cfg.grace):
		w.log.Warn("shutdown grace period over: interrupting running jobs", zap.Int64("running", w.running.Load()))
		cancelHard()
		select {
		case <-drained:
		case <-time.After(stuckWait):
			stuck := w.inflight.snapshot()
			for _, it := range stuck {
				if it.settle() {
					// No wait per job (a confirmed settle): its identity
					// key is released when its handler returns, if ever.
					it.pulled.confirm.Store(false)
					_ = it.msg.Nak() // it ran: a counted attempt
				}
			}
			w.log.Error("jobs ignore their cancelled context after the grace period; handed back for redelivery",
				zap.Int("jobs", len(stuck)))
		}
	}
	cancelHard()
	w.closeAckOrders()
	stopHeartbeats()
	<-hbDone
	<-stDone
	<-wcDone
	if w.rec != nil {
		fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := w.rec.Close(fctx); err != nil {
			w.log.Warn("job records not flushed at shutdown", telemetry.ErrField(err))
		}
		cancel()
	}
	w.log.Info("worker stopped", zap.String("worker", w.cfg.name))
	return nil
}

// runner runs the jobs the scheduler hands out until it closes. A
// handler that ends the goroutine (runtime.Goexit) ends the runner too:
// another takes its place.
func (w *Worker) runner(ctx context.Context, runners *sync.WaitGroup, credits *credits) {
	closed := false
	defer func() {
		if !closed {
			runners.Add(1)
			go w.runner(ctx, runners, credits)
		}
		runners.Done()
	}()
	wake := make(chan struct{}, 1)
	for {
		it := w.sched.next(wake)
		if it == nil {
			closed = true
			return
		}
		w.runItem(ctx, it, credits)
	}
}

// ensureConsumer creates or updates a jobs consumer. When its filter
// overlaps a stale jobs consumer (a channel that became sequential, or a
// sub-channel now covered by a sequential parent), JetStream refuses it on
// a work-queue stream (error 10100): the stale consumers whose filters
// overlap go, and it is created again. Every worker of a deployment shares
// the channel configuration, so a stale consumer has no reader left once
// the fleet runs the new one.
func (w *Worker) ensureConsumer(ctx context.Context, cc jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	cons, err := w.js.CreateOrUpdateConsumer(ctx, w.names.JobsStream(), cc)
	var apiErr *jetstream.APIError
	if err == nil || !errors.As(err, &apiErr) || apiErr.ErrorCode != jsErrConsumerNotUnique {
		return cons, err
	}
	s, serr := w.js.Stream(ctx, w.names.JobsStream())
	if serr != nil {
		return nil, err
	}
	lister := s.ListConsumers(ctx)
	for info := range lister.Info() {
		if info.Name == cc.Durable || !strings.HasPrefix(info.Name, "jobs~") {
			continue
		}
		filters := append([]string{info.Config.FilterSubject}, info.Config.FilterSubjects...)
		for _, f := range filters {
			if f != "" && filtersOverlap(f, cc.FilterSubject) {
				if derr := s.DeleteConsumer(ctx, info.Name); derr != nil {
					return nil, fmt.Errorf("%w (removing stale consumer %s: %v)", err, info.Name, derr)
				}
				w.log.Warn("stale jobs consumer removed: its filter overlaps the channel configuration",
					zap.String("consumer", info.Name), zap.String("filter", f), zap.String("for", cc.Durable))
				break
			}
		}
	}
	if lerr := lister.Err(); lerr != nil {
		return nil, fmt.Errorf("%w (listing consumers: %v)", err, lerr)
	}
	return w.js.CreateOrUpdateConsumer(ctx, w.names.JobsStream(), cc)
}

// jsErrConsumerNotUnique: "filtered consumer not unique on workqueue stream".
const jsErrConsumerNotUnique = 10100

// filtersOverlap reports whether some subject matches both filters.
func filtersOverlap(a, b string) bool {
	at, bt := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; ; i++ {
		switch {
		case i == len(at) || i == len(bt):
			return len(at) == len(bt)
		case at[i] == ">":
			return len(bt) > i
		case bt[i] == ">":
			return len(at) > i
		case at[i] != "*" && bt[i] != "*" && at[i] != bt[i]:
			return false
		}
	}
}

// consumerSpans prepares the CONSUMER spans of one consumer (nil untraced).
func (w *Worker) consumerSpans(consumer string) *telemetry.ConsumerSpans {
	if w.tracer == nil {
		return nil
	}
	return telemetry.NewConsumerSpans(w.tracer, w.cfg.linkMode, w.names.JobsStream(), consumer)
}

// capped reports whether a channel of this worker counts slots (has a
// capacity in its chain): only those are announced when freed.
func (w *Worker) capped() bool {
	for _, cs := range w.states {
		if len(cs.capped) > 0 {
			return true
		}
	}
	return false
}

// listenFreed wakes the blocked loops of a channel whenever a process of
// the fleet announces a released slot of its chain, until ctx ends.
// Without the announcements (a Redis user without Pub/Sub rights, a
// connection lost) the loops poll.
func (w *Worker) listenFreed(ctx context.Context) {
	var ps *redis.PubSub
	for backoff := 100 * time.Millisecond; ; {
		ps = w.cfg.rdb.Subscribe(ctx, w.slots.freedChannel())
		_, err := ps.Receive(ctx)
		if err == nil {
			break
		}
		_ = ps.Close()
		if ctx.Err() != nil {
			return
		}
		if strings.Contains(err.Error(), "NOPERM") {
			w.log.Warn("released channel slots are not announced to this worker (the Redis user may not subscribe; see docs/security.md): its waiting jobs poll",
				zap.String("channel", w.slots.freedChannel()), telemetry.ErrField(err))
			return
		}
		if !sleep(ctx, &backoff) {
			return
		}
	}
	defer ps.Close()
	ch := ps.Channel()
	for {
		select {
		case <-ctx.Done():
			return
		case m, ok := <-ch:
			if !ok {
				return
			}
			w.wakeFor(strings.Fields(m.Payload))
		}
	}
}
