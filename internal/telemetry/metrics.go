package telemetry

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
)

// Attribute keys used on the runtime's metrics (and usable on spans).
const (
	AttrJobName       = attribute.Key("job.name")
	AttrJobChannel    = attribute.Key("job.channel")
	AttrJobOutcome    = attribute.Key("job.outcome")
	AttrEventListener = attribute.Key("event.listener")
	AttrEventModel    = attribute.Key("event.model")
	AttrEventName     = attribute.Key("event.name")
	AttrEventOutcome  = attribute.Key("event.outcome")
	AttrStoreOp       = attribute.Key("store.op")
	AttrStoreOutcome  = attribute.Key("store.outcome")
	AttrConsumer      = attribute.Key("consumer")
)

// Job outcomes passed to JobSeries.Ended.
const (
	OutcomeSucceeded   = "succeeded"
	OutcomeRetried     = "retried"
	OutcomeDead        = "dead"
	OutcomeNothingToDo = "nothing_to_do"
	// Executions that ended without a verdict.
	OutcomeHandedBack  = "handed_back" // given back unfinished, to run again
	OutcomeInterrupted = "interrupted" // stopped by the worker's shutdown
)

// Store operation outcomes (store.outcome) passed to Metrics.StoreOpOutcome.
// Conflict, locked and lost are answers of a store that worked (a refused
// bind, a lock held elsewhere, a lease no longer held); error is a store
// that failed (unreachable, timed out, an unexpected reply).
const (
	StoreOutcomeOK       = "ok"
	StoreOutcomeError    = "error"
	StoreOutcomeConflict = "conflict"
	StoreOutcomeLocked   = "locked"
	StoreOutcomeLost     = "lost"
)

// Metric names, as OpenTelemetry instrument names. The Prometheus exporter
// turns dots into underscores and adds _total to counters and _seconds to
// second-valued histograms: connector.jobs.started ->
// connector_jobs_started_total, connector.job.duration ->
// connector_job_duration_seconds.
const (
	MetricJobsEnqueued    = "connector.jobs.enqueued"
	MetricJobsStarted     = "connector.jobs.started"
	MetricJobsEnded       = "connector.jobs.ended"
	MetricJobsInflight    = "connector.jobs.inflight"
	MetricJobQueueWait    = "connector.job.queue_wait"
	MetricJobDuration     = "connector.job.duration"
	MetricEventsHandled   = "connector.events.handled"
	MetricStoreOpDuration = "connector.store.op.duration"
	MetricConsumerPending = "connector.consumer.pending"
	MetricListenerPending = "connector.listener.pending"
)

// Histogram buckets in seconds. The SDK's default buckets are made for
// milliseconds and would put every job in the first bucket. Jobs run (and
// wait) from milliseconds to hours: 5 ms to 4 h.
var (
	jobBuckets   = []float64{0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 7200, 14400}
	storeBuckets = []float64{0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1}
)

// Metrics records the runtime's metrics through the OpenTelemetry metrics
// API. It is safe for concurrent use.
//
// The hot path (JobSeries.Started and Ended, JobEnqueued, StoreOp, EventHandled)
// does not allocate once a label combination has been seen: the attribute
// sets and the option slices handed to the instruments are built once and
// cached in copy-on-write maps. Keep names and channels bounded (job
// function names, configured channels), never ids: every distinct value is
// a time series.
//
// All methods are no-ops on a nil *Metrics, so callers need no nil checks
// when metrics are disabled.
type Metrics struct {
	enqueued metric.Int64ObservableCounter
	started  metric.Int64ObservableCounter
	ended    metric.Int64ObservableCounter
	inflight metric.Int64ObservableUpDownCounter
	wait     metric.Float64Histogram
	duration metric.Float64Histogram
	events   metric.Int64Counter
	storeOp  metric.Float64Histogram
	meter    metric.Meter

	outcomes cowCache[outcomeKey, *attrOpts] // {job.name, job.channel, job.outcome}
	stores   cowCache[storeKey, *attrOpts]   // {store.op, store.outcome}
	eventsC  cowCache[eventKey, *attrOpts]   // {event.*}

	inflightN cowCache[string, *inflightCount] // by job.channel
	counts    cowCache[countKey, *countCell]
	series    cowCache[jobKey, *JobSeries] // {job.name, job.channel}
}

type (
	jobKey     struct{ name, channel string }
	outcomeKey struct{ name, channel, outcome string }
	storeKey   struct{ op, outcome string }
	eventKey   struct{ listener, model, event, outcome string }
)

// attrOpts holds the ready-made options of one attribute set: passing a
// prebuilt slice to Add/Record does not allocate.
type attrOpts struct {
	add    []metric.AddOption
	record []metric.RecordOption
}

func newAttrOpts(kvs ...attribute.KeyValue) *attrOpts {
	set := attribute.NewSet(kvs...)
	return &attrOpts{
		add:    []metric.AddOption{metric.WithAttributeSet(set)},
		record: []metric.RecordOption{metric.WithAttributeSet(set)},
	}
}

// cowCache is a read-mostly map: lock-free, allocation-free reads; writers
// copy the map under a mutex. Label sets are few and stable, so copies are
// rare and small.
type cowCache[K comparable, V any] struct {
	mu sync.Mutex
	m  atomic.Pointer[map[K]V]
}

func (c *cowCache[K, V]) get(k K, build func() V) V {
	if p := c.m.Load(); p != nil {
		if v, ok := (*p)[k]; ok {
			return v
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var old map[K]V
	if p := c.m.Load(); p != nil {
		old = *p
	}
	if v, ok := old[k]; ok {
		return v
	}
	v := build()
	next := make(map[K]V, len(old)+1)
	for kk, vv := range old {
		next[kk] = vv
	}
	next[k] = v
	c.m.Store(&next)
	return v
}

// NewMetrics creates the instruments on the meter
// "github.com/connector-go/connector" of mp. A nil mp means a noop provider
// (nothing recorded, nothing allocated).
func NewMetrics(mp metric.MeterProvider) (*Metrics, error) {
	if mp == nil {
		mp = metricnoop.NewMeterProvider()
	}
	mt := mp.Meter("github.com/connector-go/connector")
	m := &Metrics{meter: mt}
	var errs []error
	check := func(name string, err error) {
		if err != nil {
			errs = append(errs, fmt.Errorf("telemetry: instrument %s: %w", name, err))
		}
	}
	var err error
	// The job counters (and in flight) are kept with atomics and observed
	// at collection: per job, a few atomic adds instead of instrument calls.
	m.enqueued, err = mt.Int64ObservableCounter(MetricJobsEnqueued, metric.WithUnit("{job}"),
		metric.WithDescription("Jobs enqueued (published to the job stream)."))
	check(MetricJobsEnqueued, err)
	m.started, err = mt.Int64ObservableCounter(MetricJobsStarted, metric.WithUnit("{job}"),
		metric.WithDescription("Job executions started (one per delivery)."))
	check(MetricJobsStarted, err)
	m.ended, err = mt.Int64ObservableCounter(MetricJobsEnded, metric.WithUnit("{job}"),
		metric.WithDescription("Job executions ended, by job.outcome: succeeded, retried, dead, nothing_to_do."))
	check(MetricJobsEnded, err)
	m.inflight, err = mt.Int64ObservableUpDownCounter(MetricJobsInflight, metric.WithUnit("{job}"),
		metric.WithDescription("Jobs executing now, by job.channel."))
	check(MetricJobsInflight, err)
	m.wait, err = mt.Float64Histogram(MetricJobQueueWait, metric.WithUnit("s"),
		metric.WithDescription("Time from enqueue (or eta) to execution start."),
		metric.WithExplicitBucketBoundaries(jobBuckets...))
	check(MetricJobQueueWait, err)
	m.duration, err = mt.Float64Histogram(MetricJobDuration, metric.WithUnit("s"),
		metric.WithDescription("Job execution time, by job.outcome."),
		metric.WithExplicitBucketBoundaries(jobBuckets...))
	check(MetricJobDuration, err)
	m.events, err = mt.Int64Counter(MetricEventsHandled, metric.WithUnit("{event}"),
		metric.WithDescription("Event listener invocations, by listener, model, event and outcome."))
	check(MetricEventsHandled, err)
	m.storeOp, err = mt.Float64Histogram(MetricStoreOpDuration, metric.WithUnit("s"),
		metric.WithDescription("Latency of binding, lock and idempotency store operations, by store.op and store.outcome (ok, error, conflict, locked, lost)."),
		metric.WithExplicitBucketBoundaries(storeBuckets...))
	check(MetricStoreOpDuration, err)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if _, err := mt.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		if p := m.inflightN.m.Load(); p != nil {
			for _, r := range *p {
				o.ObserveInt64(m.inflight, r.n.Load(), r.attrs)
			}
		}
		if p := m.counts.m.Load(); p != nil {
			for k, c := range *p {
				o.ObserveInt64(m.counter(k.inst), c.n.Load(), c.attrs)
			}
		}
		return nil
	}, m.inflight, m.enqueued, m.started, m.ended); err != nil {
		return nil, fmt.Errorf("telemetry: register job counters callback: %w", err)
	}
	return m, nil
}

// Job counters kept locally.
const (
	countEnqueued = iota
	countStarted
	countEnded
)

type countKey struct {
	inst                   int
	name, channel, outcome string
}

type countCell struct {
	n     atomic.Int64
	attrs metric.ObserveOption
}

func (m *Metrics) counter(inst int) metric.Int64Observable {
	switch inst {
	case countEnqueued:
		return m.enqueued
	case countStarted:
		return m.started
	}
	return m.ended
}

// count adds one to a job counter.
func (m *Metrics) count(inst int, name, channel, outcome string) {
	m.countCell(inst, name, channel, outcome).n.Add(1)
}

// countCell is the cell of one job counter series.
func (m *Metrics) countCell(inst int, name, channel, outcome string) *countCell {
	return m.counts.get(countKey{inst, name, channel, outcome}, func() *countCell {
		kvs := []attribute.KeyValue{AttrJobName.String(name), AttrJobChannel.String(channel)}
		if inst == countEnded {
			kvs = append(kvs, AttrJobOutcome.String(outcome))
		}
		return &countCell{attrs: metric.WithAttributeSet(attribute.NewSet(kvs...))}
	})
}

// inflightCount is the number of jobs of one channel running now.
type inflightCount struct {
	n     atomic.Int64
	attrs metric.ObserveOption
}

func (m *Metrics) running(channel string) *inflightCount {
	return m.inflightN.get(channel, func() *inflightCount {
		return &inflightCount{attrs: metric.WithAttributeSet(attribute.NewSet(AttrJobChannel.String(channel)))}
	})
}

// JobEnqueued counts one job published (connector.jobs.enqueued{job.name,
// job.channel}).
func (m *Metrics) JobEnqueued(ctx context.Context, name, channel string) {
	if m == nil {
		return
	}
	m.count(countEnqueued, name, channel, "")
}

// JobSeries is the metric series of one job name in one channel, looked up
// once per execution (Metrics.Job) instead of once per instrument: the
// started and ended counters, the queue-wait and duration histograms and
// the channel's in-flight count. Its methods are no-ops on a nil
// *JobSeries (metrics off).
type JobSeries struct {
	m       *Metrics
	name    string
	channel string
	wait    *attrOpts
	started *countCell
	running *inflightCount
	ended   [len(knownOutcomes)]atomic.Pointer[endedSeries]
}

// endedSeries is one outcome's counter cell and duration attributes.
type endedSeries struct {
	count *countCell
	opts  *attrOpts
}

// knownOutcomes are the outcomes a JobSeries keeps at hand; others are
// looked up in the caches.
var knownOutcomes = [...]string{OutcomeSucceeded, OutcomeRetried, OutcomeDead, OutcomeNothingToDo, OutcomeHandedBack, OutcomeInterrupted}

// Job returns the series of name in channel (nil on a nil *Metrics).
func (m *Metrics) Job(name, channel string) *JobSeries {
	if m == nil {
		return nil
	}
	return m.series.get(jobKey{name, channel}, func() *JobSeries {
		return &JobSeries{
			m: m, name: name, channel: channel,
			wait:    newAttrOpts(AttrJobName.String(name), AttrJobChannel.String(channel)),
			started: m.countCell(countStarted, name, channel, ""),
			running: m.running(channel),
		}
	})
}

// Started records the start of one execution: connector.jobs.started
// {job.name, job.channel} +1, connector.job.queue_wait (seconds since the
// job was enqueued or due; not recorded when sinceEnqueue <= 0) and
// connector.jobs.inflight{job.channel} +1. Every Started must be followed by
// exactly one Ended of the same series.
func (j *JobSeries) Started(ctx context.Context, sinceEnqueue time.Duration) {
	if j == nil {
		return
	}
	j.started.n.Add(1)
	if sinceEnqueue > 0 {
		j.m.wait.Record(ctx, sinceEnqueue.Seconds(), j.wait.record...)
	}
	j.running.n.Add(1)
}

// Ended records the end of one execution: connector.jobs.ended {job.name,
// job.channel, job.outcome} +1, connector.job.duration (seconds, same
// attributes) and connector.jobs.inflight{job.channel} -1. outcome is one
// of the Outcome* constants.
func (j *JobSeries) Ended(ctx context.Context, outcome string, d time.Duration) {
	if j == nil {
		return
	}
	e := j.endedOf(outcome)
	e.count.n.Add(1)
	j.m.duration.Record(ctx, d.Seconds(), e.opts.record...)
	j.running.n.Add(-1)
}

func (j *JobSeries) endedOf(outcome string) *endedSeries {
	i := 0
	for i < len(knownOutcomes) && knownOutcomes[i] != outcome {
		i++
	}
	if i < len(knownOutcomes) {
		if e := j.ended[i].Load(); e != nil {
			return e
		}
	}
	e := &endedSeries{
		count: j.m.countCell(countEnded, j.name, j.channel, outcome),
		opts: j.m.outcomes.get(outcomeKey{j.name, j.channel, outcome}, func() *attrOpts {
			return newAttrOpts(AttrJobName.String(j.name), AttrJobChannel.String(j.channel), AttrJobOutcome.String(outcome))
		}),
	}
	if i < len(knownOutcomes) {
		j.ended[i].Store(e) // a racing store holds the same cached cells
	}
	return e
}

// JobRejected counts a message that ended without running (not a valid
// envelope, unknown job, last attempt lost): outcome without duration, and
// the in-flight gauge is not touched since Started never counted it.
func (m *Metrics) JobRejected(ctx context.Context, name, channel, outcome string) {
	if m == nil {
		return
	}
	m.count(countEnded, name, channel, outcome)
}

// EventHandled counts one event listener invocation
// (connector.events.handled{event.listener, event.model, event.name,
// event.outcome}).
func (m *Metrics) EventHandled(ctx context.Context, listener, model, event, outcome string) {
	if m == nil {
		return
	}
	a := m.eventsC.get(eventKey{listener, model, event, outcome}, func() *attrOpts {
		return newAttrOpts(AttrEventListener.String(listener), AttrEventModel.String(model),
			AttrEventName.String(event), AttrEventOutcome.String(outcome))
	})
	m.events.Add(ctx, 1, a.add...)
}

// StoreOp records the latency of one binding or lock store operation
// (connector.store.op.duration{store.op, store.outcome}); store.outcome is
// "error" when err != nil, else "ok". See StoreOpOutcome for the other
// outcomes.
func (m *Metrics) StoreOp(ctx context.Context, op string, d time.Duration, err error) {
	outcome := StoreOutcomeOK
	if err != nil {
		outcome = StoreOutcomeError
	}
	m.StoreOpOutcome(ctx, op, outcome, d)
}

// StoreOpOutcome records the latency of one store operation
// (connector.store.op.duration{store.op, store.outcome}) with outcome, one
// of the StoreOutcome* constants. op and outcome must be bounded (operation
// names, never keys or ids).
func (m *Metrics) StoreOpOutcome(ctx context.Context, op, outcome string, d time.Duration) {
	if m == nil {
		return
	}
	a := m.stores.get(storeKey{op, outcome}, func() *attrOpts {
		return newAttrOpts(AttrStoreOp.String(op), AttrStoreOutcome.String(outcome))
	})
	m.storeOp.Record(ctx, d.Seconds(), a.record...)
}

// ObserveBacklog registers the observable gauge
// connector.consumer.pending{consumer}: f is called at each collection (each
// Prometheus scrape) and returns pending message counts by consumer name
// (for example ConsumerInfo.NumPending + NumAckPending). An error from f
// skips that collection. Call it once per Metrics.
func (m *Metrics) ObserveBacklog(f func(ctx context.Context) (map[string]int64, error)) error {
	return m.observeCounts(MetricConsumerPending, "Messages not yet acknowledged, by JetStream consumer.", AttrConsumer, f)
}

// ObserveListenerBacklog registers the observable gauge
// connector.listener.pending{event.listener}: f (events.Publisher.Lag) is
// called at each collection and returns, per event listener, the events
// it has not acknowledged yet. Call it once per Metrics.
func (m *Metrics) ObserveListenerBacklog(f func(ctx context.Context) (map[string]int64, error)) error {
	return m.observeCounts(MetricListenerPending, "Events not yet acknowledged, by event listener.", AttrEventListener, f)
}

// observeCounts registers the gauge name, observed at each collection as
// f's counts, each under key.
func (m *Metrics) observeCounts(name, desc string, key attribute.Key, f func(ctx context.Context) (map[string]int64, error)) error {
	if m == nil {
		return nil
	}
	g, err := m.meter.Int64ObservableGauge(name, metric.WithUnit("{message}"), metric.WithDescription(desc))
	if err != nil {
		return fmt.Errorf("telemetry: instrument %s: %w", name, err)
	}
	_, err = m.meter.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		counts, err := f(ctx)
		if err != nil {
			return err
		}
		for k, n := range counts {
			o.ObserveInt64(g, n, metric.WithAttributes(key.String(k)))
		}
		return nil
	}, g)
	if err != nil {
		return fmt.Errorf("telemetry: register %s callback: %w", name, err)
	}
	return nil
}
