// Package bench measures the job runtime against raw JetStream in one run
// on one NATS server: (a) publish-async + Consume + Ack of N messages, and
// (b) the same N no-op jobs enqueued with the dispatcher and run by the
// worker with its default settings. It reports both rates and b/a.
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/connector-go/connector/dispatcher"
	"github.com/connector-go/connector/internal/channels"
	"github.com/connector-go/connector/internal/devenv"
	"github.com/connector-go/connector/internal/streams"
	"github.com/connector-go/connector/internal/wire"
	"github.com/connector-go/connector/job"
	"github.com/connector-go/connector/worker"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
)

// Options of a run.
type Options struct {
	N          int
	Size       int  // argument bytes
	SyncAlways bool // NATS fsync on every write
	Redis      redis.UniversalClient
	// Telemetry, when set, gives the worker and dispatcher these options
	// (tracing and metrics on) for the overhead measurement.
	WorkerOpts     []worker.Option
	DispatcherOpts []dispatcher.Option
	Rounds         int // alternate a/b this many times (default 1)
	// Layout adds (a') to each round: the raw client on the framework's
	// stream layout and message bytes (rawOnLayout), which splits b/a into
	// what the server does more for the framework's layout (a'/a) and what
	// the framework's client does more than the raw client (b/a').
	Layout bool
	// Channels is how many channels the workers configure: root, which
	// the jobs go to, and Channels-1 idle ones beside it (default 1). Each
	// adds its three band consumers to the jobs stream, and the server
	// checks every ack against every consumer of the stream.
	Channels int
}

// withDefaults fills what o leaves unset: 100k jobs of 256 bytes, 1 round.
func (o Options) withDefaults() Options {
	if o.N <= 0 {
		o.N = 100_000
	}
	if o.Size <= 0 {
		o.Size = 256
	}
	if o.Rounds <= 0 {
		o.Rounds = 1
	}
	if o.Channels <= 0 {
		o.Channels = 1
	}
	return o
}

// Result of one phase.
type Result struct {
	Publish time.Duration
	Consume time.Duration
}

// Rate is messages per second over publish + consume.
func (r Result) Rate(n int) float64 { return float64(n) / (r.Publish + r.Consume).Seconds() }

// Payload is the no-op job.
type Payload struct {
	Data []byte `msgpack:"d"`
}

// JobName implements job.Args.
func (Payload) JobName() string { return "bench.noop" }

// Run runs the benchmark and writes a report to out. It returns b/a.
func Run(ctx context.Context, o Options, out io.Writer) (float64, error) {
	o = o.withDefaults()
	js, stop, err := start(ctx, o)
	if err != nil {
		return 0, err
	}
	defer stop()
	fmt.Fprintf(out, "N=%d, %d-byte arguments, file storage, sync_interval=%s, job records: %v",
		o.N, o.Size, map[bool]string{true: "always", false: "default (2m)"}[o.SyncAlways], o.Redis != nil)
	if o.Channels > 1 {
		fmt.Fprintf(out, ", %d channels (%d idle)", o.Channels, o.Channels-1)
	}
	fmt.Fprintln(out)
	var sumA, sumL, sumB float64
	for round := 1; round <= o.Rounds; round++ {
		a, err := raw(ctx, js, o, round)
		if err != nil {
			return 0, fmt.Errorf("raw: %w", err)
		}
		var l Result
		if o.Layout {
			if l, err = rawOnLayout(ctx, js, o, round); err != nil {
				return 0, fmt.Errorf("raw on the jobs layout: %w", err)
			}
		}
		b, err := framework(ctx, js, o, round)
		if err != nil {
			return 0, fmt.Errorf("framework: %w", err)
		}
		ra, rb := a.Rate(o.N), b.Rate(o.N)
		sumA += ra
		sumB += rb
		fmt.Fprintf(out, "round %d: (a) raw jetstream   publish %7.0f/s consume+ack %7.0f/s  => %7.0f msgs/s\n", round,
			float64(o.N)/a.Publish.Seconds(), float64(o.N)/a.Consume.Seconds(), ra)
		if o.Layout {
			rl := l.Rate(o.N)
			sumL += rl
			fmt.Fprintf(out, "round %d: (a') raw on layout  publish %7.0f/s consume+ack %7.0f/s  => %7.0f msgs/s   a'/a = %.2f\n", round,
				float64(o.N)/l.Publish.Seconds(), float64(o.N)/l.Consume.Seconds(), rl, rl/ra)
		}
		fmt.Fprintf(out, "round %d: (b) dispatcher+worker enqueue %7.0f/s run          %7.0f/s  => %7.0f jobs/s   b/a = %.2f\n", round,
			float64(o.N)/b.Publish.Seconds(), float64(o.N)/b.Consume.Seconds(), rb, rb/ra)
	}
	ratio := sumB / sumA
	fmt.Fprintf(out, "mean over %d round(s): a = %.0f msgs/s, b = %.0f jobs/s, b/a = %.2f\n", o.Rounds, sumA/float64(o.Rounds), sumB/float64(o.Rounds), ratio)
	if o.Layout {
		fmt.Fprintf(out, "layout: a' = %.0f msgs/s, a'/a = %.2f (the server's share of the gap), b/a' = %.2f (the framework client's)\n", sumL/float64(o.Rounds), sumL/sumA, sumB/sumL)
	}
	return ratio, nil
}

// start starts the embedded NATS server of a run and connects to it.
func start(ctx context.Context, o Options) (jetstream.JetStream, func(), error) {
	srv, err := devenv.StartNATS(devenv.NATSOptions{SyncAlways: o.SyncAlways})
	if err != nil {
		return nil, nil, err
	}
	nc, err := nats.Connect(srv.URL)
	if err != nil {
		srv.Stop()
		return nil, nil, err
	}
	stop := func() { nc.Close(); srv.Stop() }
	js, err := jetstream.New(nc)
	if err != nil {
		stop()
		return nil, nil, err
	}
	// A stream that outlives the rounds: nats-server removes an account's
	// empty streams directory in the background once its last stream is
	// deleted, racing the next round's stream creation ("error creating
	// store for stream", 10049: mkdir of a directory whose parent it just
	// removed).
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "BENCH_ANCHOR", Subjects: []string{"bench.anchor"}}); err != nil {
		stop()
		return nil, nil, err
	}
	return js, stop, nil
}

// Overhead measures what some options (telemetry's, say) cost the
// framework: pairs of framework runs of o.N jobs, one with o's options
// alone ("plain") and one with the extra options as well ("with"), back to
// back on one server. The order alternates from pair to pair (plain first,
// then with first), so that the machine's drift falls on both alike, and
// no raw run stands between them to add its own noise. It reports each
// pair's with/plain rate ratio and returns their median.
func Overhead(ctx context.Context, o Options, withWorker []worker.Option, withDispatcher []dispatcher.Option, pairs int, out io.Writer) (float64, error) {
	o = o.withDefaults()
	js, stop, err := start(ctx, o)
	if err != nil {
		return 0, err
	}
	defer stop()
	with := o
	with.WorkerOpts = append(append([]worker.Option(nil), o.WorkerOpts...), withWorker...)
	with.DispatcherOpts = append(append([]dispatcher.Option(nil), o.DispatcherOpts...), withDispatcher...)
	ratios := make([]float64, 0, pairs)
	run := 0
	rate := func(o Options) (float64, error) {
		run++
		r, err := framework(ctx, js, o, run)
		return r.Rate(o.N), err
	}
	for i := 1; i <= pairs; i++ {
		var plain, traced float64
		var err1, err2 error
		if i%2 == 1 {
			plain, err1 = rate(o)
			traced, err2 = rate(with)
		} else {
			traced, err2 = rate(with)
			plain, err1 = rate(o)
		}
		if err := errors.Join(err1, err2); err != nil {
			return 0, err
		}
		ratios = append(ratios, traced/plain)
		fmt.Fprintf(out, "pair %d: plain %7.0f jobs/s, with %7.0f jobs/s => with/plain %.3f\n", i, plain, traced, traced/plain)
	}
	return Median(ratios), nil
}

// Median of xs (sorted in place); 0 when empty.
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	sort.Float64s(xs)
	m := xs[len(xs)/2]
	if len(xs)%2 == 0 {
		m = (xs[len(xs)/2-1] + xs[len(xs)/2]) / 2
	}
	return m
}

func raw(ctx context.Context, js jetstream.JetStream, o Options, round int) (Result, error) {
	name := fmt.Sprintf("RAW%d", round)
	subj := fmt.Sprintf("raw%d.x", round)
	s, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{subj}, Retention: jetstream.WorkQueuePolicy})
	if err != nil {
		return Result{}, err
	}
	defer func() { _ = js.DeleteStream(context.WithoutCancel(ctx), name) }()
	return rawPhases(ctx, js, subj, []byte(strings.Repeat("x", o.Size)), o.N, func() (jetstream.Consumer, error) {
		return s.CreateConsumer(ctx, jetstream.ConsumerConfig{Durable: "raw", AckPolicy: jetstream.AckExplicitPolicy})
	})
}

// rawOnLayout is (a) on the framework's layout: the raw client publishes
// the bytes of a job's envelope on the jobs subject of the default channel
// and priority, into the jobs stream as the framework provisions it
// (wildcard subjects, message schedules), then consumes them from that
// band's consumer, among the three band consumers the worker makes. The
// server does the work it does for the framework; the client does raw's.
func rawOnLayout(ctx context.Context, js jetstream.JetStream, o Options, round int) (Result, error) {
	prefix := fmt.Sprintf("layout%d%s", round, strings.ToLower(wire.NewID()[20:]))
	names := wire.MustNames(prefix)
	if err := streams.Ensure(ctx, js, streams.Config{Names: names}); err != nil {
		return Result{}, err
	}
	defer deleteStreams(ctx, js, names)
	subj, data, err := layoutMessage(names, o.Size)
	if err != nil {
		return Result{}, err
	}
	return rawPhases(ctx, js, subj, data, o.N, func() (jetstream.Consumer, error) {
		w, err := worker.New(js, worker.NewRegistry(), workerOptions(o, prefix)...)
		if err != nil {
			return nil, err
		}
		if err := w.Setup(ctx); err != nil { // the worker's consumers
			return nil, err
		}
		return js.Consumer(ctx, names.JobsStream(), names.JobsConsumer(job.DefaultChannel, channels.Band(job.DefaultPriority)))
	})
}

// workerOptions are the options of the workers of a run: its prefix, and
// its channels (o.Channels).
func workerOptions(o Options, prefix string) []worker.Option {
	opts := []worker.Option{worker.WithPrefix(prefix)}
	if o.Channels > 1 {
		idle := make([]string, 0, o.Channels-1)
		for i := 1; i < o.Channels; i++ {
			idle = append(idle, job.DefaultChannel+".idle"+strconv.Itoa(i))
		}
		opts = append(opts, worker.WithChannels(strings.Join(idle, ",")))
	}
	return opts
}

// layoutMessage is the subject and bytes the dispatcher publishes for the
// benchmark's job (default channel and priority, size argument bytes).
func layoutMessage(names wire.Names, size int) (string, []byte, error) {
	env := wire.Envelope{ID: wire.NewID(), Name: Payload{}.JobName(), Channel: job.DefaultChannel, EnqueuedAt: time.Now().UnixMilli()}
	data, err := wire.EncodeEnvelopeArgs(&env, Payload{Data: []byte(strings.Repeat("x", size))})
	return names.JobsSubject(job.DefaultChannel, channels.Band(job.DefaultPriority)), data, err
}

// rawPhases publishes n messages of data on subj with PublishAsync, then
// consumes and acks them from the consumer made once all are stored.
func rawPhases(ctx context.Context, js jetstream.JetStream, subj string, data []byte, n int, consumer func() (jetstream.Consumer, error)) (Result, error) {
	var r Result
	start := time.Now()
	for i := 0; i < n; i++ {
		if _, err := js.PublishAsync(subj, data, jetstream.WithStallWait(time.Minute)); err != nil {
			return r, err
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-ctx.Done():
		return r, ctx.Err()
	}
	r.Publish = time.Since(start)
	cons, err := consumer()
	if err != nil {
		return r, err
	}
	var got atomic.Int64
	done := make(chan struct{})
	start = time.Now()
	// PullExpiry bounds the stall nats.go's Consume shows now and then (a
	// pull request lost for its whole 30 s expiry), which would make the
	// baseline, not the framework, the thing measured.
	cc, err := cons.Consume(func(m jetstream.Msg) {
		_ = m.Ack()
		if got.Add(1) == int64(n) {
			close(done)
		}
	}, jetstream.PullExpiry(2*time.Second))
	if err != nil {
		return r, err
	}
	defer cc.Stop()
	select {
	case <-done:
	case <-ctx.Done():
		return r, ctx.Err()
	}
	r.Consume = time.Since(start)
	return r, nil
}

// deleteStreams removes the streams of a run.
func deleteStreams(ctx context.Context, js jetstream.JetStream, names wire.Names) {
	for _, s := range []string{names.JobsStream(), names.DeadStream(), names.EventsStream()} {
		_ = js.DeleteStream(context.WithoutCancel(ctx), s)
	}
}

func framework(ctx context.Context, js jetstream.JetStream, o Options, round int) (Result, error) {
	prefix := fmt.Sprintf("bench%d%s", round, strings.ToLower(wire.NewID()[20:]))
	sc := streams.Config{Names: wire.MustNames(prefix)}
	if err := streams.Ensure(ctx, js, sc); err != nil {
		return Result{}, err
	}
	defer deleteStreams(ctx, js, sc.Names)
	dopts := append([]dispatcher.Option{dispatcher.WithPrefix(prefix)}, o.DispatcherOpts...)
	if o.Redis != nil {
		dopts = append(dopts, dispatcher.WithRedis(o.Redis), dispatcher.WithRecordTTL(10*time.Minute))
	}
	d, err := dispatcher.New(js, dopts...)
	if err != nil {
		return Result{}, err
	}
	payload := Payload{Data: []byte(strings.Repeat("x", o.Size))}
	items := make([]dispatcher.Item, 0, 10_000)
	var r Result
	start := time.Now()
	for sent := 0; sent < o.N; {
		items = items[:0]
		for i := 0; i < 10_000 && sent < o.N; i++ {
			items = append(items, dispatcher.Item{Args: payload})
			sent++
		}
		if _, err := d.EnqueueMany(ctx, items); err != nil {
			return r, err
		}
	}
	if err := d.Close(ctx); err != nil {
		return r, err
	}
	r.Publish = time.Since(start)

	reg := worker.NewRegistry()
	var n atomic.Int64
	done := make(chan struct{})
	worker.MustRegister(reg, func(ctx context.Context, j *job.Job[Payload]) (string, error) {
		if n.Add(1) == int64(o.N) {
			close(done)
		}
		return "", nil
	})
	wopts := append(workerOptions(o, prefix), o.WorkerOpts...)
	if o.Redis != nil {
		wopts = append(wopts, worker.WithRedis(o.Redis), worker.WithRecordTTL(10*time.Minute))
	}
	w, err := worker.New(js, reg, wopts...)
	if err != nil {
		return r, err
	}
	if err := w.Setup(ctx); err != nil {
		return r, err
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	start = time.Now()
	errc := make(chan error, 1)
	go func() { errc <- w.Run(wctx) }()
	select {
	case <-done:
	case err := <-errc:
		return r, fmt.Errorf("worker stopped: %v", err)
	case <-ctx.Done():
		return r, ctx.Err()
	}
	r.Consume = time.Since(start)
	cancel()
	<-errc
	if o.Redis != nil {
		// remove the bench's job records
		iter := o.Redis.Scan(context.WithoutCancel(ctx), 0, prefix+":j*", 5000).Iterator()
		var keys []string
		for iter.Next(ctx) {
			keys = append(keys, iter.Val())
			if len(keys) == 5000 {
				o.Redis.Unlink(ctx, keys...)
				keys = keys[:0]
			}
		}
		if len(keys) > 0 {
			o.Redis.Unlink(ctx, keys...)
		}
	}
	return r, nil
}
