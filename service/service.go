// Package service runs a connector of your own as a worker process, the way
// "connector worker" runs the stock one: flags and CONNECTOR_* environment
// (the same as "connector worker -h" lists), connections to NATS and Redis
// (credentials, TLS, reconnects; at start it waits for them, -start-wait),
// stream provisioning, OpenTelemetry traces
// and Prometheus metrics, /livez, /readyz and /metrics, the job worker for
// your registry, your event listeners, and a graceful shutdown on SIGTERM.
//
// A connector's main is its registry and a setup:
//
//	func main() {
//		reg := worker.NewRegistry()
//		worker.MustRegister(reg, exportPartner)
//		service.Main(reg, func(ctx context.Context, env *service.Env) error {
//			l, err := env.Listeners()
//			if err != nil {
//				return err
//			}
//			return l.On("shop1_export_partner", "res.partner", "", func(ctx context.Context, ev events.Event) error {
//				_, err := env.Dispatcher.Enqueue(ctx, ExportPartner{ID: ev.RecordID})
//				return err
//			}, events.WithSkipIf(events.SkipOrigin("shop-1")))
//		})
//	}
//
// Build it into an image and run it as the deploy/ manifests run the stock
// worker; every flag has its environment variable.
package service

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sync"

	"github.com/connector-go/connector/dispatcher"
	"github.com/connector-go/connector/events"
	"github.com/connector-go/connector/internal/app"
	"github.com/connector-go/connector/internal/connect"
	"github.com/connector-go/connector/internal/streams"
	"github.com/connector-go/connector/internal/telemetry"
	"github.com/connector-go/connector/worker"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"
)

// Setup prepares what the process runs beside the jobs of its registry,
// once it is connected and the streams are provisioned (with -provision,
// the default), before anything runs: event listeners (Env.Listeners),
// periodic jobs (Env.Dispatcher.Schedule), other services (Env.Go). It
// may still register handlers in the registry (a connector's jobs often
// need the process's connections). An error stops the process before it
// starts.
type Setup func(ctx context.Context, env *Env) error

// Env is the process as a Setup sees it: its configuration and
// connections, ready to use. It is valid for the process's lifetime.
type Env struct {
	// Prefix is the deployment prefix (-prefix, CONNECTOR_PREFIX).
	Prefix string
	// Log is the process's logger (-log-level, -log-format).
	Log *zap.Logger
	// JS is the process's JetStream context, Redis its Redis client.
	JS    jetstream.JetStream
	Redis redis.UniversalClient
	// Dispatcher enqueues jobs, traced and counted with the process's
	// telemetry.
	Dispatcher *dispatcher.Dispatcher
	// TracerProvider and MeterProvider are the process's OpenTelemetry
	// providers (OTEL_* environment; metrics on /metrics).
	TracerProvider trace.TracerProvider
	MeterProvider  metric.MeterProvider
	// RegisterSchedules says whether the process may register periodic
	// jobs (-register-schedules, CONNECTOR_REGISTER_SCHEDULES; default
	// true). It is false where the worker's NATS user may not: an
	// operator registers them instead (docs/security.md).
	RegisterSchedules bool

	cfg       *app.Config
	mu        sync.Mutex
	started   bool // the setups are over: Listeners and Go may not add any more
	listeners *events.Listeners
	services  []app.Part
}

// ErrStarted: Env.Listeners was called after the setups, when the process
// no longer takes new services. Env.Go called then panics with it.
var ErrStarted = errors.New("service: the process has started; add listeners and services in a Setup")

// Listeners returns the process's event listeners, built on its
// connections with its prefix, Redis, logger, traces (and
// -linked-traces), metrics and shutdown grace (-shutdown-grace, as the
// worker's); opts add to those. Register listeners
// with On; the process runs them beside the worker, and its /readyz fails
// (check "events") until they listen. Every call returns the
// same Listeners (opts apply on the first call only). The first call must
// come from a Setup (later: ErrStarted).
func (e *Env) Listeners(opts ...events.Option) (*events.Listeners, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.listeners != nil {
		return e.listeners, nil
	}
	if e.started {
		return nil, ErrStarted
	}
	base := []events.Option{events.WithPrefix(e.Prefix), events.WithRedis(e.Redis),
		events.WithLogger(e.Log.Named("events")), events.WithTracerProvider(e.TracerProvider),
		events.WithMeterProvider(e.MeterProvider), events.WithShutdownGrace(e.cfg.ShutdownGrace)}
	if e.cfg.LinkedTraces {
		base = append(base, events.WithLinkedTraces())
	}
	l, err := events.NewListeners(e.JS, append(base, opts...)...)
	if err != nil {
		return nil, err
	}
	e.listeners = l
	// Not ready (/readyz) until the listeners listen.
	e.services = append(e.services, app.ReadyService{Service: untilStopped(l.Run, "the event listeners"),
		Name: "events", Ready: func(context.Context) error { return l.Ready() }})
	return l, nil
}

// ErrServiceEnded: a function given to Env.Go returned nil while the
// process was still running; the process stops with it (status 1), as it
// would with an error, rather than run on without it.
var ErrServiceEnded = errors.New("service: a service returned before the process stopped")

// Go runs f beside the worker until the process stops: f's context ends
// at shutdown, and an error f returns stops the process (after the others
// have stopped too) and is Run's error; so does f returning before its
// context ends (ErrServiceEnded). Call it from a Setup: a later call
// panics, as f would never run.
func (e *Env) Go(f func(ctx context.Context) error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.started {
		panic(ErrStarted)
	}
	_, file, line, _ := runtime.Caller(1)
	e.services = append(e.services, untilStopped(f, fmt.Sprintf("Env.Go at %s:%d", filepath.Base(file), line)))
}

// untilStopped is f, failing with ErrServiceEnded when f returns nil
// while ctx lives: the process must not run on without it.
func untilStopped(f func(ctx context.Context) error, name string) app.Service {
	return func(ctx context.Context) error {
		err := f(ctx)
		if err == nil && ctx.Err() == nil {
			return fmt.Errorf("%w: %s", ErrServiceEnded, name)
		}
		return err
	}
}

// Main runs the process with the program's arguments and environment
// until SIGINT or SIGTERM, then exits: with status 0 after a graceful
// shutdown, 2 on bad flags, 1 on any other error (printed on stderr, with
// any password in a URL redacted).
func Main(reg *worker.Registry, setups ...Setup) {
	// The first SIGINT or SIGTERM starts the graceful shutdown; a second
	// one ends the process at once (the signal's default action).
	ctx, stop := app.SignalContext()
	err := Run(ctx, os.Args[1:], os.Getenv, reg, setups...)
	stop()
	os.Exit(exitCode(err, os.Stderr, os.Args[0]))
}

// exitCode reports err on w and returns the process's exit status.
func exitCode(err error, w io.Writer, prog string) int {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errFlags):
		if !errors.Is(err, errFlagsSaid) { // the flag package has not said why
			fmt.Fprintf(w, "%s: %s\n", prog, telemetry.Redact(err.Error()))
		}
		return 2
	}
	fmt.Fprintf(w, "%s: %s\n", prog, telemetry.Redact(err.Error()))
	return 1
}

var errFlags = errors.New("service: bad flags")

// errFlagsSaid is errFlags for the errors of fs.Parse, which the flag
// package has already printed.
var errFlagsSaid = fmt.Errorf("%w (reported)", errFlags)

// Run is Main without the exit: it parses args (the flags, without the
// program name; defaults from getenv), connects, provisions the streams,
// runs the setups, then the worker, the listeners and the services until
// ctx ends, and shuts them down gracefully. It returns nil after a
// graceful shutdown.
func Run(ctx context.Context, args []string, getenv func(string) string, reg *worker.Registry, setups ...Setup) (err error) {
	defer func() { err = app.Stopped(ctx, err) }()
	fs := flag.NewFlagSet(filepath.Base(os.Args[0]), flag.ContinueOnError)
	var cfg app.Config
	cfg.Bind(fs, getenv)
	cfg.BindStartWait(fs, getenv, connect.DefaultStartWait)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %w", errFlagsSaid, err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errFlags, fs.Arg(0))
	}
	if err := cfg.Check(); err != nil { // before connecting: a variable that does not parse, an unreadable CONNECTOR_CHANNELS_FILE
		return fmt.Errorf("%w: %w", errFlags, err)
	}
	log, err := telemetry.NewLogger(cfg.LogLevel, cfg.LogFormat)
	if err != nil {
		return fmt.Errorf("%w: %w", errFlags, err)
	}
	defer func() { _ = log.Sync() }()
	conns, err := app.Open(ctx, &cfg, log)
	if err != nil {
		return err
	}
	defer conns.Close()
	d, err := conns.Dispatcher(&cfg)
	if err != nil {
		return err
	}
	defer func() { _ = d.Close(context.WithoutCancel(ctx)) }()
	// The streams exist before the setups run (a setup may register
	// periodic jobs, its listeners create consumers): provisioned here, or,
	// with -provision=false, provisioned by an operator, maybe still
	// running beside this process.
	sc, err := cfg.Streams()
	if err != nil {
		return fmt.Errorf("%w: %w", errFlags, err)
	}
	ready := func(ctx context.Context) error { return streams.Check(ctx, conns.JS, sc.Names) }
	if cfg.Provision {
		ready = func(ctx context.Context) error { return streams.Ensure(ctx, conns.JS, sc) }
	}
	if err := connect.Wait(ctx, cfg.StartDeadline(), log, "JetStream streams", streams.Unavailable, ready); err != nil {
		return err
	}
	env := &Env{Prefix: cfg.Prefix, Log: log, JS: conns.JS, Redis: conns.Redis, Dispatcher: d,
		TracerProvider: conns.Telemetry.TracerProvider, MeterProvider: conns.Telemetry.MeterProvider,
		RegisterSchedules: cfg.RegisterSchedules, cfg: &cfg}
	for _, s := range setups {
		if err := s(ctx, env); err != nil {
			return fmt.Errorf("service: setup: %w", err)
		}
	}
	env.mu.Lock()
	env.started = true
	extra := env.services
	env.mu.Unlock()
	// Provisioned above: the worker only checks the streams exist.
	run := cfg
	run.Provision = false
	return app.RunWorker(ctx, &run, conns, reg, extra...)
}
