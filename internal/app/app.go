// Package app assembles a worker process from configuration: connections
// (with auth and TLS), telemetry, health endpoints, the job worker and the
// event listeners. cmd/connector is a thin shell around it.
package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/connector-go/connector/dispatcher"
	"github.com/connector-go/connector/events"
	"github.com/connector-go/connector/internal/channels"
	"github.com/connector-go/connector/internal/connect"
	"github.com/connector-go/connector/internal/records"
	"github.com/connector-go/connector/internal/streams"
	"github.com/connector-go/connector/internal/telemetry"
	"github.com/connector-go/connector/internal/wire"
	"github.com/connector-go/connector/worker"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel"
	"go.uber.org/zap"
)

// Config is everything a worker process reads from flags and environment.
type Config struct {
	NATS          connect.NATSConfig
	Redis         connect.RedisConfig
	Prefix        string
	Replicas      int
	Concurrency   int
	AckWait       time.Duration
	ShutdownGrace time.Duration
	HTTPAddr      string
	LogLevel      string
	LogFormat     string
	Provision     bool
	ServiceName   string
	LinkedTraces  bool
	// TraceHeaders: enqueued jobs carry their trace context in W3C
	// headers too (dispatcher.WithTraceHeaders).
	TraceHeaders bool
	Channels     string
	// RecordTTL is how long job records are kept in Redis after their last
	// update (worker.WithRecordTTL, dispatcher.WithRecordTTL).
	RecordTTL time.Duration
	// DeadMaxAge bounds how long dead letters are kept (0: forever).
	DeadMaxAge time.Duration
	// EventsMaxAge bounds how long domain events are kept (default 7 days).
	EventsMaxAge time.Duration
	// RegisterSchedules lets the process register periodic jobs at start
	// (the example connector's imports). Least-privilege workers may not:
	// an operator registers them (shop-schedule), and this is false.
	RegisterSchedules bool
	// StartWait is how long the start waits for NATS, Redis and the
	// streams (0: one attempt each). Long-running processes bind its flag
	// with a default (BindStartWait), `streams provision` without one; the
	// other operations commands fail at once.
	StartWait time.Duration
	startBy   time.Time // StartWait from the first StartDeadline call
	// channelsErr: CONNECTOR_CHANNELS_FILE could not be read; envErrs:
	// variables whose values do not parse (Check).
	channelsErr error
	envErrs     []error
	// HTTPListener, when set, serves /livez, /readyz and /metrics instead
	// of listening on HTTPAddr (no flag: for callers that pick the port).
	HTTPListener net.Listener
}

func envOr(getenv func(string) string, k, def string) string {
	if v := getenv(k); v != "" {
		return v
	}
	return def
}

// envInt, envBool and envDur read a variable of the environment, def when
// it is unset; a value that does not parse is def too, and an error that
// Check reports (a typo in a Deployment must not silently mean the default).
func (c *Config) envInt(getenv func(string) string, k string, def int) int {
	return envParse(c, getenv, k, def, "an integer", strconv.Atoi)
}

func (c *Config) envBool(getenv func(string) string, k string, def bool) bool {
	return envParse(c, getenv, k, def, "true or false", strconv.ParseBool)
}

func (c *Config) envDur(getenv func(string) string, k string, def time.Duration) time.Duration {
	return envParse(c, getenv, k, def, "a duration such as 30s, 5m or 168h", time.ParseDuration)
}

func envParse[T any](c *Config, getenv func(string) string, k string, def T, want string, parse func(string) (T, error)) T {
	v := getenv(k)
	if v == "" {
		return def
	}
	x, err := parse(v)
	if err != nil {
		c.envErrs = append(c.envErrs, fmt.Errorf("app: %s=%q: want %s", k, v, want))
		return def
	}
	return x
}

// Bind registers the flags on fs, with defaults from the environment.
func (c *Config) Bind(fs *flag.FlagSet, getenv func(string) string) {
	c.NATS.Bind(fs, getenv)
	c.Redis.Bind(fs, getenv)
	fs.StringVar(&c.Prefix, "prefix", envOr(getenv, "CONNECTOR_PREFIX", wire.DefaultPrefix), "prefix of subjects, streams and Redis keys (env CONNECTOR_PREFIX)")
	fs.IntVar(&c.Replicas, "replicas", c.envInt(getenv, "CONNECTOR_STREAM_REPLICAS", 1), "replicas of provisioned streams; 3 in production (env CONNECTOR_STREAM_REPLICAS)")
	fs.IntVar(&c.Concurrency, "concurrency", c.envInt(getenv, "CONNECTOR_CONCURRENCY", worker.DefaultConcurrency), "jobs run at once by this process (env CONNECTOR_CONCURRENCY)")
	fs.DurationVar(&c.AckWait, "ack-wait", c.envDur(getenv, "CONNECTOR_ACK_WAIT", worker.DefaultAckWait), "job lease; a dead worker's jobs restart after it (env CONNECTOR_ACK_WAIT)")
	fs.DurationVar(&c.ShutdownGrace, "shutdown-grace", c.envDur(getenv, "CONNECTOR_SHUTDOWN_GRACE", worker.DefaultShutdownGrace), "time running jobs get to finish on SIGTERM (env CONNECTOR_SHUTDOWN_GRACE)")
	fs.StringVar(&c.HTTPAddr, "http", envOr(getenv, "CONNECTOR_HTTP_ADDR", ":8080"), "address of /livez, /readyz and /metrics; empty disables (env CONNECTOR_HTTP_ADDR)")
	fs.StringVar(&c.LogLevel, "log-level", envOr(getenv, "CONNECTOR_LOG_LEVEL", "info"), "debug, info, warn or error (env CONNECTOR_LOG_LEVEL)")
	fs.StringVar(&c.LogFormat, "log-format", envOr(getenv, "CONNECTOR_LOG_FORMAT", "json"), "json or console (env CONNECTOR_LOG_FORMAT)")
	fs.BoolVar(&c.Provision, "provision", c.envBool(getenv, "CONNECTOR_PROVISION", true), "create/update streams at start; false only checks they exist (env CONNECTOR_PROVISION)")
	fs.BoolVar(&c.LinkedTraces, "linked-traces", c.envBool(getenv, "CONNECTOR_LINKED_TRACES", false), "job runs start new traces linked to the producer instead of child spans (env CONNECTOR_LINKED_TRACES)")
	fs.BoolVar(&c.TraceHeaders, "trace-headers", c.envBool(getenv, "CONNECTOR_TRACE_HEADERS", false), "enqueued jobs carry their trace context in W3C headers too, not only in their envelope (for nats-server message tracing) (env CONNECTOR_TRACE_HEADERS)")
	fs.DurationVar(&c.DeadMaxAge, "dead-max-age", c.envDur(getenv, "CONNECTOR_DEAD_MAX_AGE", 0), "how long dead letters are kept in the dead-letter stream; 0 keeps them until requeued or removed (env CONNECTOR_DEAD_MAX_AGE)")
	fs.DurationVar(&c.EventsMaxAge, "events-max-age", c.envDur(getenv, "CONNECTOR_EVENTS_MAX_AGE", streams.DefaultEventsMaxAge), "how long domain events are kept in the events stream: the longest a listener may be stopped or lag behind without missing events (env CONNECTOR_EVENTS_MAX_AGE)")
	fs.DurationVar(&c.RecordTTL, "record-ttl", c.envDur(getenv, "CONNECTOR_RECORD_TTL", records.DefaultTTL), "how long job records (connector jobs show) are kept in Redis after their last update, or after the job's ETA when later (env CONNECTOR_RECORD_TTL)")
	fs.BoolVar(&c.RegisterSchedules, "register-schedules", c.envBool(getenv, "CONNECTOR_REGISTER_SCHEDULES", true), "register periodic jobs at start; false where only an operator may (least privilege: docs/security.md) (env CONNECTOR_REGISTER_SCHEDULES)")
	fs.StringVar(&c.Channels, "channels", envOr(getenv, "CONNECTOR_CHANNELS", ""), `channel capacities, e.g. "root:4,root.shop:2,root.shop.orders:1:sequential" (env CONNECTOR_CHANNELS)`)
	fs.Func("channels-file", "file holding the channel configuration, one entry per line (env CONNECTOR_CHANNELS_FILE)", func(p string) error {
		b, err := os.ReadFile(p)
		c.Channels = string(b)
		return err
	})
	if p := getenv("CONNECTOR_CHANNELS_FILE"); p != "" && c.Channels == "" {
		// Bind cannot fail: an unreadable file is reported by Check (and
		// RunWorker), unless a flag gives the channels instead.
		if b, err := os.ReadFile(p); err == nil {
			c.Channels = string(b)
		} else {
			c.channelsErr = fmt.Errorf("app: CONNECTOR_CHANNELS_FILE: %w", err)
		}
	}
	c.ServiceName = envOr(getenv, "OTEL_SERVICE_NAME", "connector-worker")
}

// Check reports the settings taken from the environment that Bind could
// not use: a value that does not parse (CONNECTOR_CONCURRENCY=abc), a
// CONNECTOR_CHANNELS_FILE that cannot be read (when no flag gives the
// channels instead). The commands call it once their flags are parsed;
// RunWorker calls it first.
func (c *Config) Check() error {
	errs := append([]error(nil), c.envErrs...)
	if c.channelsErr != nil && c.Channels == "" {
		errs = append(errs, c.channelsErr)
	}
	// Values that parse but that the process cannot use fail here, named,
	// rather than once connected (or never: a substitute in silence).
	bad := func(ok bool, flag, env string, v any, want string) {
		if !ok {
			errs = append(errs, fmt.Errorf("app: -%s (env %s) %v: want %s", flag, env, v, want))
		}
	}
	bad(c.Concurrency >= 1, "concurrency", "CONNECTOR_CONCURRENCY", c.Concurrency, "1 or more")
	bad(c.Replicas >= 1 && c.Replicas <= 5, "replicas", "CONNECTOR_STREAM_REPLICAS", c.Replicas, "1 to 5")
	bad(c.AckWait >= time.Second, "ack-wait", "CONNECTOR_ACK_WAIT", c.AckWait, "1s or more")
	bad(c.ShutdownGrace >= 0, "shutdown-grace", "CONNECTOR_SHUTDOWN_GRACE", c.ShutdownGrace, "0 or more")
	bad(c.StartWait >= 0, "start-wait", "CONNECTOR_START_WAIT", c.StartWait, "0 or more")
	bad(c.RecordTTL >= 0, "record-ttl", "CONNECTOR_RECORD_TTL", c.RecordTTL, "0 (the default) or more")
	bad(c.DeadMaxAge >= 0, "dead-max-age", "CONNECTOR_DEAD_MAX_AGE", c.DeadMaxAge, "0 (forever) or more")
	bad(c.EventsMaxAge >= 0, "events-max-age", "CONNECTOR_EVENTS_MAX_AGE", c.EventsMaxAge, "0 (the default) or more")
	if _, err := wire.NewNames(c.Prefix); err != nil {
		errs = append(errs, fmt.Errorf("app: -prefix (env CONNECTOR_PREFIX): %w", err))
	}
	if _, err := channels.Parse(c.Channels); err != nil {
		errs = append(errs, fmt.Errorf("app: -channels, -channels-file (env CONNECTOR_CHANNELS, CONNECTOR_CHANNELS_FILE): %w", err))
	}
	return errors.Join(errs...)
}

// BindStartWait registers --start-wait, with default def unless
// CONNECTOR_START_WAIT is set: connect.DefaultStartWait for long-running
// processes, 0 for a one-shot command that a deployment may still want to
// wait (the provisioning job).
func (c *Config) BindStartWait(fs *flag.FlagSet, getenv func(string) string, def time.Duration) {
	fs.DurationVar(&c.StartWait, "start-wait", c.envDur(getenv, "CONNECTOR_START_WAIT", def), "how long to wait at start for NATS and Redis to be reachable (refused, closed, unresolved, timing out) and for the streams (with -provision=false) before exiting; authentication and TLS errors exit at once; 0 tries once (env CONNECTOR_START_WAIT)")
}

// StartDeadline is when waiting at start ends: StartWait after its first
// call, shared by every wait of the start (connections, streams); zero
// (one attempt each) without StartWait.
func (c *Config) StartDeadline() time.Time {
	if c.StartWait <= 0 {
		return time.Time{}
	}
	if c.startBy.IsZero() {
		c.startBy = time.Now().Add(c.StartWait)
	}
	return c.startBy
}

// Streams returns the stream provisioning config.
func (c *Config) Streams() (streams.Config, error) {
	n, err := wire.NewNames(c.Prefix)
	if err != nil {
		return streams.Config{}, err
	}
	return streams.Config{Names: n, Replicas: c.Replicas, DeadMaxAge: c.DeadMaxAge, EventsMaxAge: c.EventsMaxAge}, nil
}

// Conns are the live connections and telemetry of a process.
type Conns struct {
	Log       *zap.Logger
	NC        *nats.Conn
	JS        jetstream.JetStream
	Redis     redis.UniversalClient
	Telemetry *telemetry.Providers
}

// Open connects to NATS and Redis and sets up telemetry. It also sends
// go-redis's and OpenTelemetry's own log lines to log (telemetry.RedisLogs,
// telemetry.OTelErrors: process-wide settings, which Open makes for the
// process it assembles).
func Open(ctx context.Context, cfg *Config, log *zap.Logger) (*Conns, error) {
	redis.SetLogger(telemetry.RedisLogs(log))
	otel.SetErrorHandler(telemetry.OTelErrors(log))
	c, err := OpenNATS(ctx, cfg, log)
	if err != nil {
		return nil, err
	}
	if c.Redis, err = connect.Retry(ctx, cfg.StartDeadline(), log, "Redis", connect.Transient, func(ctx context.Context) (redis.UniversalClient, error) {
		return connect.ConnectRedis(ctx, cfg.Redis, log)
	}); err != nil {
		c.Close()
		return nil, err
	}
	log.Info("connected", zap.String("nats", cfg.NATS.String()), zap.String("redis", cfg.Redis.String()))
	return c, nil
}

// OpenNATS is Open without Redis (Conns.Redis nil): for the operations
// JetStream alone answers, which so keep working while Redis is down.
func OpenNATS(ctx context.Context, cfg *Config, log *zap.Logger) (*Conns, error) {
	tp, err := telemetry.Setup(ctx, telemetry.Config{ServiceName: cfg.ServiceName, Prometheus: true})
	if err != nil {
		return nil, err
	}
	c := &Conns{Log: log, Telemetry: tp}
	if cfg.NATS.Name == "" {
		cfg.NATS.Name = cfg.ServiceName
	}
	if c.NC, err = connect.Retry(ctx, cfg.StartDeadline(), log, "NATS", connect.Transient, func(ctx context.Context) (*nats.Conn, error) {
		return connect.ConnectNATS(ctx, cfg.NATS, log)
	}); err != nil {
		c.Close()
		return nil, err
	}
	if c.JS, err = jetstream.New(c.NC); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// drainWait bounds how long Close waits for the NATS connection to drain.
const drainWait = 10 * time.Second

// Close releases everything Open made. It drains the NATS connection
// (subscriptions end, everything buffered is flushed) and waits for that,
// at most drainWait.
func (c *Conns) Close() {
	if c.NC != nil {
		connect.DrainNATS(c.NC, drainWait)
	}
	if c.Redis != nil {
		_ = c.Redis.Close()
	}
	if c.Telemetry != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = c.Telemetry.Shutdown(ctx)
		cancel()
	}
}

// Dispatcher builds a dispatcher on the connections.
func (c *Conns) Dispatcher(cfg *Config) (*dispatcher.Dispatcher, error) {
	opts := []dispatcher.Option{dispatcher.WithPrefix(cfg.Prefix), dispatcher.WithRedis(c.Redis),
		dispatcher.WithLogger(c.Log), dispatcher.WithTracerProvider(c.Telemetry.TracerProvider),
		dispatcher.WithMeterProvider(c.Telemetry.MeterProvider), dispatcher.WithRecordTTL(cfg.RecordTTL)}
	if cfg.TraceHeaders {
		opts = append(opts, dispatcher.WithTraceHeaders())
	}
	return dispatcher.New(c.JS, opts...)
}

// Stopped is err, or nil when err comes from ctx's cancellation: a
// process asked to stop (SIGTERM) while it was still starting (waiting
// for its servers, provisioning) stops gracefully, as it does later.
func Stopped(ctx context.Context, err error) error {
	if err != nil && ctx.Err() != nil && errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// Part is something RunWorker runs beside the worker until ctx ends: a
// Service, or a ReadyService.
type Part interface {
	Run(ctx context.Context) error
}

// Service is a Part that is ready as soon as it runs (a demo producer).
type Service func(ctx context.Context) error

// Run calls s.
func (s Service) Run(ctx context.Context) error { return s(ctx) }

// ReadyService is a Service that takes time to be ready: RunWorker adds
// Ready to the checks of /readyz, under Name, so that the process does not
// count as ready while Ready fails. The event listeners are one, ready once
// they listen (events.Listeners.Ready).
type ReadyService struct {
	Service
	Name  string
	Ready func(ctx context.Context) error
}

// RunWorker runs the job worker for reg, the health/metrics endpoint and the
// extra parts until ctx is cancelled, then shuts them down gracefully.
// /readyz answers once the worker has set up its streams and consumers,
// and fails while NATS, the streams or Redis do not answer, while a
// ReadyService among extra is not ready, and from the start of the stop.
func RunWorker(ctx context.Context, cfg *Config, c *Conns, reg *worker.Registry, extra ...Part) error {
	if err := cfg.Check(); err != nil {
		return err
	}
	sc, err := cfg.Streams()
	if err != nil {
		return err
	}
	// The health and metrics address is listened on before anything runs:
	// one that cannot be (taken, malformed) stops the start, rather than a
	// worker running without /livez, /readyz and /metrics.
	ln := cfg.HTTPListener
	var unserved net.Listener // ours, closed if RunWorker returns before serving it
	defer func() {
		if unserved != nil {
			_ = unserved.Close()
		}
	}()
	if ln == nil && cfg.HTTPAddr != "" {
		if ln, err = net.Listen("tcp", cfg.HTTPAddr); err != nil {
			return fmt.Errorf("app: health and metrics address (-http, CONNECTOR_HTTP_ADDR): %w", err)
		}
		unserved = ln
	}
	opts := []worker.Option{
		worker.WithPrefix(cfg.Prefix), worker.WithRedis(c.Redis), worker.WithLogger(c.Log),
		worker.WithTracerProvider(c.Telemetry.TracerProvider), worker.WithMeterProvider(c.Telemetry.MeterProvider),
		worker.WithConcurrency(cfg.Concurrency), worker.WithAckWait(cfg.AckWait),
		worker.WithShutdownGrace(cfg.ShutdownGrace), worker.WithStreamReplicas(cfg.Replicas),
		worker.WithChannels(cfg.Channels), worker.WithRecordTTL(cfg.RecordTTL), worker.WithDeadMaxAge(cfg.DeadMaxAge),
		worker.WithEventsMaxAge(cfg.EventsMaxAge),
	}
	if !cfg.Provision {
		opts = append(opts, worker.WithoutProvisioning())
	}
	if cfg.LinkedTraces {
		opts = append(opts, worker.WithLinkedTraces())
	}
	w, err := worker.New(c.JS, reg, opts...)
	if err != nil {
		return err
	}
	// The streams may not be there yet (an operator's provisioning job
	// running beside a worker that may not create them), or JetStream not
	// answering yet (a cluster electing its leader): wait for them too.
	if err := connect.Wait(ctx, cfg.StartDeadline(), c.Log, "JetStream streams and consumers", streams.Unavailable, w.Setup); err != nil {
		return err
	}
	metrics, err := telemetry.NewMetrics(c.Telemetry.MeterProvider)
	if err != nil {
		return err
	}
	if err := metrics.ObserveBacklog(Backlog(c.JS, sc.Names)); err != nil {
		return err
	}
	ops, err := events.NewPublisher(c.JS, events.WithPrefix(sc.Names.Prefix))
	if err != nil {
		return err
	}
	if err := metrics.ObserveListenerBacklog(ops.Lag); err != nil {
		return err
	}
	health := telemetry.NewHealth(c.Log)
	health.AddCheck("nats", telemetry.NATSCheck(c.NC))
	health.AddCheck("streams", telemetry.StreamsCheck(c.JS, sc.Names.JobsStream(), sc.Names.DeadStream(), sc.Names.EventsStream()))
	health.AddCheck("redis", telemetry.RedisCheck(c.Redis))
	for _, p := range extra {
		if r, ok := p.(ReadyService); ok && r.Ready != nil {
			health.AddCheck(r.Name, r.Ready)
		}
	}

	g, gctx := newGroup(ctx)
	if ln != nil {
		// The health server outlives the worker's drain (not ready, still
		// live), and RunWorker returns only once it has shut down: a caller
		// that then closes its listener or exits finds it stopped.
		hctx, cancelHTTP := context.WithCancel(context.WithoutCancel(ctx))
		stopped := make(chan struct{})
		defer func() { cancelHTTP(); <-stopped }()
		addr := ln.Addr().String()
		unserved = nil // Serve closes it
		go func() {
			defer close(stopped)
			if err := health.Serve(hctx, ln, c.Telemetry.MetricsHandler); err != nil && !errors.Is(err, context.Canceled) {
				c.Log.Error("health endpoint stopped", telemetry.ErrField(err))
			}
		}()
		c.Log.Info("health and metrics", zap.String("addr", addr), zap.Strings("paths", []string{"/livez", "/readyz", "/metrics"}))
	}
	g.Go(func() error {
		<-gctx.Done()
		health.Drain() // not ready while draining
		return nil
	})
	g.Go(func() error { return w.Run(gctx) })
	g.Go(func() error { return watchClosed(gctx, c.NC) })
	for _, p := range extra {
		g.Go(func() error { return p.Run(gctx) })
	}
	err = g.Wait()
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		err = nil // the graceful stop; a part's own cancellation, ctx live, is a failure
	}
	return err
}

// closedPoll is how often RunWorker looks at its NATS connection.
const closedPoll = 500 * time.Millisecond

// ErrNATSClosed: the NATS connection was closed for good while the worker
// ran. nats.go gives up on a connection only in a few cases (two identical
// authorization errors in a row with a password or token given as a value,
// not a file; a server error it does not know), and never reconnects it:
// the process stops, so that its supervisor starts it again, rather than
// stay live (/livez) and never ready again.
var ErrNATSClosed = errors.New("app: the NATS connection is closed for good")

// watchClosed returns ErrNATSClosed once nc is closed while ctx lives.
func watchClosed(ctx context.Context, nc *nats.Conn) error {
	t := time.NewTicker(closedPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if nc.IsClosed() && ctx.Err() == nil {
				return fmt.Errorf("%w (last error: %v); stopping, to be started again", ErrNATSClosed, nc.LastError())
			}
		}
	}
}

// Backlog reports, per consumer of the jobs stream, the jobs not
// acknowledged yet (the connector.consumer.pending gauge, read at each
// scrape).
func Backlog(js jetstream.JetStream, names wire.Names) func(ctx context.Context) (map[string]int64, error) {
	return func(ctx context.Context) (map[string]int64, error) {
		s, err := js.Stream(ctx, names.JobsStream())
		if err != nil {
			return nil, fmt.Errorf("backlog: %w", err)
		}
		out := map[string]int64{}
		lister := s.ListConsumers(ctx)
		for info := range lister.Info() {
			out[info.Name] = int64(info.NumPending) + int64(info.NumAckPending)
		}
		if err := lister.Err(); err != nil {
			return nil, fmt.Errorf("backlog: %w", err)
		}
		return out, nil
	}
}

// group runs functions until the first fails or ctx ends, cancelling the
// others (the errgroup pattern, without the dependency).
type group struct {
	wg     sync.WaitGroup
	cancel context.CancelFunc
	once   sync.Once
	err    error
}

func newGroup(ctx context.Context) (*group, context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	return &group{cancel: cancel}, ctx
}

func (g *group) Go(f func() error) {
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		if err := f(); err != nil {
			g.once.Do(func() { g.err = err; g.cancel() })
		}
	}()
}

func (g *group) Wait() error {
	g.wg.Wait()
	g.cancel()
	return g.err
}
