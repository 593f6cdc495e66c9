package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/connector-go/connector/dispatcher"
	"github.com/connector-go/connector/examples/demo"
	"github.com/connector-go/connector/internal/app"
	"github.com/connector-go/connector/internal/bench"
	"github.com/connector-go/connector/internal/connect"
	"github.com/connector-go/connector/internal/devenv"
	"github.com/connector-go/connector/internal/streams"
	"github.com/connector-go/connector/internal/telemetry"
	"github.com/connector-go/connector/internal/wire"
	"github.com/connector-go/connector/worker"
	"github.com/nats-io/nats.go"
	"go.uber.org/zap"
)

func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("connector "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// noArgs is the error for a command that takes no arguments and got some:
// flag parsing stops at the first one, so every flag after it would be
// ignored (a boolean flag takes its value with "=": --provision=false).
func noArgs(fs *flag.FlagSet) error {
	if fs.NArg() > 0 {
		return fmt.Errorf("%s: unexpected argument %q (flags after it are not read; a boolean flag takes its value with =, as in --provision=false)", fs.Name(), fs.Arg(0))
	}
	return nil
}

// registry is what the stock `connector` binary runs: the demo jobs. A
// connector of your own builds its own binary around worker.Registry.
func registry() *worker.Registry {
	reg := worker.NewRegistry()
	demo.Register(reg)
	return reg
}

func cmdWorker(ctx context.Context, args []string, stderr io.Writer, getenv func(string) string) (err error) {
	defer func() { err = app.Stopped(ctx, err) }()
	fs := newFlags("worker", stderr)
	var cfg app.Config
	cfg.Bind(fs, getenv)
	cfg.BindStartWait(fs, getenv, connect.DefaultStartWait)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := noArgs(fs); err != nil {
		return err
	}
	if err := cfg.Check(); err != nil {
		return err
	}
	log, err := telemetry.NewLogger(cfg.LogLevel, cfg.LogFormat)
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()
	conns, err := app.Open(ctx, &cfg, log)
	if err != nil {
		return err
	}
	defer conns.Close()
	reg := registry()
	var extra []app.Part
	// With SHOP_URL and CATALOG_URL (compose, Kubernetes), the stock binary
	// also runs the example shop connector.
	shop, release, err := workerShop(conns, &cfg, reg, getenv)
	if err != nil {
		return err
	}
	defer release()
	if shop != nil {
		extra = append(extra, shop)
	}
	return app.RunWorker(ctx, &cfg, conns, reg, extra...)
}

const streamsUsage = `usage:
  connector streams provision [flags]     create or update the JetStream streams, then exit

Connection flags as for "connector worker" ("connector streams provision -h" lists them).
`

func cmdStreams(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	// As the jobs and events groups: no command is a usage error, -h the
	// usage.
	if len(args) == 0 {
		fmt.Fprint(stderr, streamsUsage)
		return errNoCommand
	}
	if args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, streamsUsage)
		return flag.ErrHelp
	}
	if args[0] != "provision" {
		fmt.Fprint(stderr, streamsUsage)
		return fmt.Errorf("unknown streams command %q", args[0])
	}
	fs := newFlags("streams provision", stderr)
	var cfg app.Config
	cfg.Bind(fs, getenv)
	cfg.BindStartWait(fs, getenv, 0)
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if err := noArgs(fs); err != nil {
		return err
	}
	if err := cfg.Check(); err != nil {
		return err
	}
	log, err := telemetry.NewLogger(cfg.LogLevel, cfg.LogFormat)
	if err != nil {
		return err
	}
	nc, err := connect.Retry(ctx, cfg.StartDeadline(), log, "NATS", connect.Transient, func(ctx context.Context) (*nats.Conn, error) {
		return connect.ConnectNATS(ctx, cfg.NATS, log)
	})
	if err != nil {
		return err
	}
	defer nc.Close()
	conns := &app.Conns{NC: nc}
	js, err := jetstreamNew(conns)
	if err != nil {
		return err
	}
	sc, err := cfg.Streams()
	if err != nil {
		return err
	}
	if err := connect.Wait(ctx, cfg.StartDeadline(), log, "JetStream streams", streams.Unavailable,
		func(ctx context.Context) error { return streams.Ensure(ctx, js, sc) }); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "streams %s, %s, %s provisioned (replicas %d)\n",
		sc.Names.JobsStream(), sc.Names.DeadStream(), sc.Names.EventsStream(), max(1, sc.Replicas))
	return nil
}

const jobsUsage = `usage:
  connector jobs show ID [--json]         a job's state, attempts, result or error, timestamps
  connector jobs stats [--json]           per queue: jobs waiting and taken; delayed and dead jobs
  connector jobs dead [--name J] [--limit N] [--json]
                                          dead-lettered jobs with their errors
  connector jobs requeue ID | --all [--name J]
                                          put dead jobs back, attempts reset
  connector jobs cancel ID [ID...]        cancel jobs that have not started (queued, delayed, held, dead)

Connection flags as for "connector worker" (-h after a command lists them).
`

// writeLetters prints dead letters for an operator, as JSON or as a table
// whose first columns are head, filled by row, which also returns the
// letter. Errors and stacks are redacted (they may quote URLs with
// credentials); the raw message is left out (it stays in the stream).
func writeLetters[L any](stdout io.Writer, asJSON bool, letters []L, none, head string, row func(*L) (*wire.DeadLetter, string)) error {
	cols := make([]string, len(letters))
	for i := range letters {
		dl, c := row(&letters[i])
		dl.Error, dl.Stack = telemetry.Redact(dl.Error), telemetry.Redact(dl.Stack)
		dl.Data, dl.Headers = nil, nil
		cols[i] = fmt.Sprintf("%s\t%s\t%d\t%s\t%s", c, dl.Reason, dl.Attempts,
			time.UnixMilli(dl.DiedAt).UTC().Format(time.RFC3339), dl.Error)
	}
	if asJSON {
		return json.NewEncoder(stdout).Encode(letters)
	}
	if len(letters) == 0 {
		fmt.Fprintln(stdout, none)
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 0, 2, 2, ' ', 0)
	fmt.Fprintf(tw, "SEQ\t%s\tREASON\tATTEMPTS\tDIED\tERROR\n", head)
	for _, c := range cols {
		fmt.Fprintln(tw, c)
	}
	return tw.Flush()
}

// parseInterspersed parses fs's flags wherever they are among args and
// returns the other arguments (ids before or after the flags).
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for len(args) > 0 {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) > 0 {
			pos = append(pos, args[0])
			args = args[1:]
		}
	}
	return pos, nil
}

// flagsApply refuses the flags set on fs that do not apply to the
// command sub: appliesTo maps a flag to the commands that read it. A
// selection flag the command ignored would let it act on more than the
// operator asked (`jobs requeue --all --limit 1` requeued every dead job).
func flagsApply(fs *flag.FlagSet, group, sub string, appliesTo map[string][]string) error {
	var errs []error
	fs.Visit(func(f *flag.Flag) {
		if subs, ok := appliesTo[f.Name]; ok && !slices.Contains(subs, sub) {
			errs = append(errs, fmt.Errorf("usage: connector %s %s: --%s does not apply (only to %s %s); nothing done",
				group, sub, f.Name, group, strings.Join(subs, ", ")))
		}
	})
	return errors.Join(errs...)
}

// operatorLogger is the logger of the jobs and events commands, writing
// to stderr. They print for people and scripts: only errors are logged,
// unless the operator asked for a level or a format (the flag or its
// variable).
func operatorLogger(fs *flag.FlagSet, cfg *app.Config, getenv func(string) string, stderr io.Writer) (*zap.Logger, error) {
	given := func(name, env string) bool {
		set := getenv(env) != ""
		fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
		return set
	}
	level, format := "error", "console"
	if given("log-level", "CONNECTOR_LOG_LEVEL") {
		level = cfg.LogLevel
	}
	if given("log-format", "CONNECTOR_LOG_FORMAT") {
		format = cfg.LogFormat
	}
	return telemetry.NewLogger(level, format, telemetry.WithLogOutput(stderr))
}

func cmdJobs(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) (err error) {
	if len(args) == 0 {
		fmt.Fprint(stderr, jobsUsage)
		return errNoCommand
	}
	if args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, jobsUsage)
		return flag.ErrHelp
	}
	sub := args[0]
	if !slices.Contains([]string{"show", "dead", "stats", "cancel", "requeue"}, sub) {
		fmt.Fprint(stderr, jobsUsage)
		return fmt.Errorf("unknown jobs command %q", sub)
	}
	fs := newFlags("jobs "+sub, stderr)
	var cfg app.Config
	cfg.Bind(fs, getenv)
	all := fs.Bool("all", false, "requeue: every dead job")
	limit := fs.Int("limit", 100, "dead: at most this many (0: all)")
	name := fs.String("name", "", "dead, requeue --all: the jobs of this name only")
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := parseInterspersed(fs, args[1:])
	if err != nil {
		return err
	}
	if err := flagsApply(fs, "jobs", sub, map[string][]string{
		"all": {"requeue"}, "limit": {"dead"}, "name": {"dead", "requeue"}, "json": {"show", "stats", "dead"},
	}); err != nil {
		return err
	}
	if sub == "requeue" && *all && len(pos) > 0 {
		// Never every dead job for an operator who named one.
		return fmt.Errorf("usage: connector jobs requeue ID | --all [--name J] (an id or --all, not both)")
	}
	if sub == "requeue" && !*all && *name != "" {
		// --name filters --all; it is no check of the id's name.
		return fmt.Errorf("usage: connector jobs requeue ID | --all [--name J] (--name only with --all)")
	}
	// Usage errors before any connection: a forgotten id is not reported
	// as an unreachable NATS or Redis.
	switch {
	case sub == "show" && len(pos) != 1:
		return fmt.Errorf("usage: connector jobs show ID")
	case sub == "cancel" && len(pos) == 0:
		return fmt.Errorf("usage: connector jobs cancel ID [ID...]")
	case sub == "requeue" && !*all && len(pos) != 1:
		return fmt.Errorf("usage: connector jobs requeue ID | --all")
	case (sub == "dead" || sub == "stats") && len(pos) > 0:
		return fmt.Errorf("%s: unexpected argument %q", fs.Name(), pos[0])
	}
	if err := cfg.Check(); err != nil {
		return err
	}
	log, err := operatorLogger(fs, &cfg, getenv, stderr)
	if err != nil {
		return err
	}
	// The queue's figures and the dead letters are in JetStream alone: they
	// are shown while Redis is down.
	open := app.Open
	if sub == "stats" || sub == "dead" {
		open = app.OpenNATS
	}
	conns, err := open(ctx, &cfg, log)
	if err != nil {
		return err
	}
	defer conns.Close()
	d, err := conns.Dispatcher(&cfg)
	if err != nil {
		return err
	}
	// Cancel and requeue leave job records to write: a command whose
	// records did not reach Redis did not fully succeed, even when what it
	// did in NATS (printed on stdout) is done; and that error is reported
	// beside any other.
	defer func() {
		if cerr := d.Close(context.WithoutCancel(ctx)); cerr != nil {
			err = errors.Join(err, fmt.Errorf("job records not written to Redis: %w (what was done in NATS, printed above, stands; "+
				"`connector jobs show` may give an earlier state until a worker updates the record)", cerr))
		}
	}()
	switch sub {
	case "show":
		rec, err := d.Job(ctx, pos[0])
		if err != nil {
			return err
		}
		// Job errors may quote URLs with credentials: never print them.
		rec.Error, rec.Stack, rec.Result = telemetry.Redact(rec.Error), telemetry.Redact(rec.Stack), telemetry.Redact(rec.Result)
		if *asJSON {
			return json.NewEncoder(stdout).Encode(rec)
		}
		tw := tabwriter.NewWriter(stdout, 0, 2, 2, ' ', 0)
		row := func(k, v string) {
			if v != "" {
				fmt.Fprintf(tw, "%s\t%s\n", k, v)
			}
		}
		ts := func(t time.Time) string {
			if t.IsZero() {
				return ""
			}
			return t.UTC().Format(time.RFC3339Nano)
		}
		row("id", rec.ID)
		row("name", rec.Name)
		row("state", string(rec.State))
		row("channel", rec.Channel)
		row("priority", fmt.Sprint(rec.Priority))
		row("attempts", fmt.Sprintf("%d (max %d, 0 = unlimited)", rec.Attempts, rec.MaxRetries))
		row("description", rec.Description)
		row("result", rec.Result)
		row("error", rec.Error)
		row("error type", rec.ErrorType)
		row("worker", rec.Worker)
		row("enqueued", ts(rec.EnqueuedAt))
		row("eta", ts(rec.ETA))
		row("started", ts(rec.StartedAt))
		row("ended", ts(rec.EndedAt))
		row("updated", ts(rec.UpdatedAt))
		return tw.Flush()
	case "dead":
		n := *limit
		if *name != "" {
			n = 0 // filtered here: read them all, keep limit
		}
		letters, err := d.DeadLetters(ctx, n)
		if err != nil {
			return err
		}
		if *name != "" {
			letters = slices.DeleteFunc(letters, func(l dispatcher.DeadLetter) bool { return l.JobName != *name })
			if *limit > 0 { // 0 (or less): all, as without --name
				letters = letters[:min(len(letters), *limit)]
			}
		}
		return writeLetters(stdout, *asJSON, letters, "no dead jobs", "JOB ID\tNAME",
			func(l *dispatcher.DeadLetter) (*wire.DeadLetter, string) {
				return &l.DeadLetter, fmt.Sprintf("%d\t%s\t%s", l.Seq, l.JobID, l.JobName)
			})
	case "stats":
		st, err := d.Stats(ctx)
		if err != nil {
			return err
		}
		if *asJSON {
			if st.Queues == nil {
				st.Queues = []dispatcher.Queue{} // [], not null, for scripts
			}
			return json.NewEncoder(stdout).Encode(st)
		}
		tw := tabwriter.NewWriter(stdout, 0, 2, 2, ' ', 0)
		fmt.Fprintln(tw, "CHANNEL\tBAND\tWAITING\tTAKEN\tREDELIVERED\tPULLS\tCONSUMER")
		for _, q := range st.Queues {
			band, consumer := strconv.Itoa(q.Band), q.Consumer
			if q.Band < 0 {
				band = "all (sequential)"
			}
			if consumer == "" {
				consumer = "(none yet: no worker serves this channel)"
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%s\n", q.Channel, band, q.Waiting, q.Taken, q.Redelivered, q.Pulls, consumer)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "delayed (ETA, retry delay, periodic): %d\ndead: %d\n", st.Delayed, st.Dead)
		return nil
	case "cancel":
		var errs []error
		for _, id := range pos {
			if err := d.Cancel(ctx, id); err != nil {
				errs = append(errs, fmt.Errorf("cancel %s: %w", id, err))
				continue
			}
			fmt.Fprintf(stdout, "cancelled %s\n", id)
		}
		return errors.Join(errs...)
	case "requeue":
		if *all {
			var filters []func(dispatcher.DeadLetter) bool
			if *name != "" {
				filters = append(filters, dispatcher.JobNamed(*name))
			}
			n, err := d.RequeueAll(ctx, filters...)
			fmt.Fprintf(stdout, "requeued %d job(s)\n", n)
			return err
		}
		if err := d.Requeue(ctx, pos[0]); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "requeued %s\n", pos[0])
		return nil
	}
	return fmt.Errorf("unknown jobs command %q", sub)
}

func cmdDev(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	fs := newFlags("dev", stderr)
	natsPort := fs.Int("nats-port", 4250, "port of the embedded NATS server (0: any free port)")
	redisAddr := fs.String("redis-addr", "127.0.0.1:0", "address of the embedded Redis-protocol store")
	httpAddr := fs.String("http", "127.0.0.1:8080", "address of /livez, /readyz and /metrics (busy: a free port, printed)")
	every := fs.Duration("every", 5*time.Second, "how often the demo producer enqueues jobs")
	level := fs.String("log-level", "info", "log level")
	shopAddr := fs.String("shop-addr", "127.0.0.1:8081", "address of the example shop (examples/shop)")
	catalogAddr := fs.String("catalog-addr", "127.0.0.1:8082", "address of the example catalog (examples/catalog)")
	importEvery := fs.String("import-every", "@every 10s", "schedule of the example connector's batch imports")
	serversOnly := fs.Bool("servers-only", false, "run the embedded NATS and Redis only (no worker, no demo), for running your own connector against them")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := noArgs(fs); err != nil {
		return err
	}
	log, err := telemetry.NewLogger(*level, "console")
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()
	port := *natsPort
	if port != 0 && !devenv.FreePort(port) {
		log.Warn("port busy; using a free one", zap.Int("port", port))
		port = 0
	}
	ns, err := devenv.StartNATS(devenv.NATSOptions{Port: port})
	if err != nil {
		return err
	}
	defer ns.Stop()
	mr, err := devenv.StartRedis(*redisAddr)
	if err != nil {
		return err
	}
	defer mr.Close()
	if *serversOnly {
		fmt.Fprintf(stdout, `
connector dev is running its servers only (Ctrl-C to stop)
  NATS JetStream  %s   (embedded)
  Redis store     redis://%s/0   (embedded miniredis)
Run your connector (service.Main) against them:
  go run ./cmd/<your connector> --nats %s --redis redis://%s/0 --http 127.0.0.1:8090
`, ns.URL, mr.Addr(), ns.URL, mr.Addr())
		<-ctx.Done()
		return nil
	}
	// Like the shop and catalog: a busy address falls back to a free port,
	// and what is printed is where it really listens.
	httpLn, err := net.Listen("tcp", *httpAddr)
	if err != nil {
		log.Warn("address busy; using a free port", zap.String("server", "health/metrics"), zap.String("addr", *httpAddr))
		if httpLn, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			return fmt.Errorf("health/metrics: %w", err)
		}
	}
	// The health server closes it when it stops; this closes it when the
	// worker never started.
	httpLn = &onceCloseListener{Listener: httpLn}
	defer httpLn.Close()
	httpHost := httpLn.Addr().String()

	var cfg app.Config
	cfg.Bind(newFlags("dev-worker", io.Discard), func(string) string { return "" })
	cfg.NATS.URL = ns.URL
	cfg.Redis.URL = "redis://" + mr.Addr() + "/0"
	cfg.HTTPAddr, cfg.HTTPListener = httpHost, httpLn
	cfg.ServiceName = "connector-dev"
	cfg.Concurrency = 8
	cfg.Channels = "root:8,root.shop:4" // the example connector's jobs: at most 4 at once
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

	fmt.Fprintf(stdout, `
connector dev is running (Ctrl-C to stop)
  NATS JetStream  %s   (embedded; streams %s, %s, %s)
  Redis store     redis://%s   (embedded miniredis: job records, bindings, locks)
  health/metrics  http://%s/readyz  http://%s/metrics
Watch the log: demo.greet jobs succeed, demo.flaky jobs are retried twice then
succeed, demo.broken jobs are dead-lettered with their error. In another shell:
  go run ./cmd/connector jobs stats --nats %s --redis redis://%s
  go run ./cmd/connector jobs dead --nats %s --redis redis://%s
  go run ./cmd/connector jobs show <id> --nats %s --redis redis://%s
  go run ./cmd/connector events stats --nats %s

`, ns.URL, "CONNECTOR_JOBS", "CONNECTOR_DLQ", "CONNECTOR_EVENTS", mr.Addr(), httpHost, httpHost, ns.URL, mr.Addr(), ns.URL, mr.Addr(), ns.URL, mr.Addr(), ns.URL)

	// The example connector: shop and catalog servers, the shop connector's
	// jobs in the worker, its export listeners and periodic imports.
	reg := registry()
	listeners, help, err := devShop(ctx, conns, &cfg, d, reg, *shopAddr, *catalogAddr, *importEvery)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, help)

	producer := app.Service(func(ctx context.Context) error {
		demo.Produce(ctx, d, *every, log.Named("demo"))
		return nil
	})
	err = app.RunWorker(ctx, &cfg, conns, reg, producer, listeners)
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

func cmdBench(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	fs := newFlags("bench", stderr)
	n := fs.Int("n", 100_000, "number of messages/jobs")
	size := fs.Int("size", 256, "argument size in bytes")
	rounds := fs.Int("rounds", 3, "alternate raw/framework runs this many times")
	syncAlways := fs.Bool("sync-always", false, "NATS fsyncs every write (sync_interval: always)")
	nChannels := fs.Int("channels", 1, "channels the workers configure: root, which the jobs go to, and this many minus one idle ones (each adds three consumers to the jobs stream, and the server checks every ack against every consumer)")
	layout := fs.Bool("layout", false, "also run (a') each round: the raw client on the jobs stream's layout and message bytes, to split b/a into the server's share (a'/a) and the framework client's (b/a')")
	// Redis for job records, with the credentials and TLS of the other
	// commands; when it does not answer, the run goes without records.
	var rcfg connect.RedisConfig
	rcfg.Bind(fs, getenv)
	telemetryOn := fs.Bool("telemetry", false, "enable tracing (SDK, batch span processor, no-op exporter) and metrics (Prometheus) in the framework run")
	pairs := fs.Int("telemetry-pairs", 0, "measure the telemetry overhead: this many pairs of framework runs without and with -telemetry (back to back, order alternating), then the median ratio")
	sampler := fs.Float64("telemetry-sample", 1, "with -telemetry: the fraction of traces sampled (parent-based ratio sampler; 1 samples all)")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	memProfile := fs.String("memprofile", "", "write a heap profile (allocations since the start) to this file at the end")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := noArgs(fs); err != nil {
		return err
	}
	if *memProfile != "" {
		runtime.MemProfileRate = 64 << 10
		defer func() {
			if f, err := os.Create(*memProfile); err == nil {
				_ = pprof.Lookup("allocs").WriteTo(f, 0)
				_ = f.Close()
			}
		}()
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	o := bench.Options{N: *n, Size: *size, Rounds: *rounds, SyncAlways: *syncAlways, Layout: *layout, Channels: *nChannels}
	rdb, err := connect.ConnectRedis(ctx, rcfg, nil)
	if err == nil {
		o.Redis = rdb
		defer rdb.Close()
	} else {
		fmt.Fprintf(stdout, "no Redis (%v): job records are off for this run\n", err)
	}
	if *pairs > 0 {
		return benchTelemetryPairs(ctx, o, *pairs, *sampler, stdout)
	}
	if *telemetryOn {
		wo, do, shutdown, err := benchTelemetry(ctx, *sampler)
		if err != nil {
			return err
		}
		defer shutdown()
		o.WorkerOpts, o.DispatcherOpts = wo, do
	}
	_, err = bench.Run(ctx, o, stdout)
	return err
}

// benchTelemetryPairs measures what tracing and metrics cost the
// framework (bench.Overhead): pairs of runs without and with telemetry,
// back to back on one server, in alternating order, and the median of
// with/plain.
func benchTelemetryPairs(ctx context.Context, o bench.Options, pairs int, sampler float64, out io.Writer) error {
	wo, do, shutdown, err := benchTelemetry(ctx, sampler)
	if err != nil {
		return err
	}
	defer shutdown()
	fmt.Fprintf(out, "N=%d, %d-byte arguments, job records: %v; telemetry: traces sampled at fraction %.2f, metrics on\n",
		o.N, o.Size, o.Redis != nil, sampler)
	med, err := bench.Overhead(ctx, o, wo, do, pairs, out)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "median over %d pairs (sampled fraction %.2f): telemetry/plain = %.3f (overhead %.1f%%)\n", pairs, sampler, med, 100*(1-med))
	return nil
}

// onceCloseListener closes its listener once, whoever asks first.
type onceCloseListener struct {
	net.Listener
	once sync.Once
	err  error
}

func (l *onceCloseListener) Close() error {
	l.once.Do(func() { l.err = l.Listener.Close() })
	return l.err
}
