package telemetry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// DefaultCheckTimeout bounds each readiness check.
const DefaultCheckTimeout = 2 * time.Second

// Errors returned by the ready-made checks.
var (
	// ErrNotConnected: the NATS connection is not in the CONNECTED state.
	ErrNotConnected = errors.New("telemetry: nats not connected")
	// ErrDraining: Health.Drain was called; the process is shutting down.
	ErrDraining = errors.New("telemetry: draining")
)

// Health serves the Kubernetes probes:
//
//	/livez   200 while the process runs (the HTTP server answering is the check)
//	/readyz  200 when every readiness check passes, else 503 with a JSON body
//	/metrics the metrics handler, when one is given
//
// Readiness checks run concurrently on each /readyz request, each with a
// timeout (DefaultCheckTimeout). Keep them cheap: the kubelet calls /readyz
// every few seconds on every pod.
type Health struct {
	log      *zap.Logger
	timeout  time.Duration
	draining atomic.Bool

	mu     sync.Mutex
	checks []namedCheck
	failed map[string]bool // last state, to log transitions only
}

type namedCheck struct {
	name  string
	check func(ctx context.Context) error
}

// NewHealth returns a Health with no checks: /readyz answers 200 until
// checks are added. A nil log discards.
func NewHealth(log *zap.Logger) *Health {
	if log == nil {
		log = zap.NewNop()
	}
	return &Health{log: log, timeout: DefaultCheckTimeout, failed: map[string]bool{}}
}

// SetCheckTimeout changes the per-check timeout (default
// DefaultCheckTimeout). Keep it below the probe's timeoutSeconds.
func (h *Health) SetCheckTimeout(d time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if d > 0 {
		h.timeout = d
	}
}

// AddCheck adds a readiness check. name is reported in /readyz; a check
// added twice under one name runs twice.
func (h *Health) AddCheck(name string, check func(ctx context.Context) error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.checks = append(h.checks, namedCheck{name, check})
}

// Drain makes /readyz fail from now on (the body says "draining"), so
// Kubernetes stops routing to the pod while it finishes its in-flight jobs.
// /livez keeps answering 200.
func (h *Health) Drain() { h.draining.Store(true) }

// ReadyReport is the /readyz body.
type ReadyReport struct {
	Status string            `json:"status"` // "ok" or "unavailable"
	Checks map[string]string `json:"checks"` // name -> "ok" or the (redacted) error
	Failed []string          `json:"failed,omitempty"`
}

// Check runs every readiness check and reports. The errors in the report
// are passed through Redact.
func (h *Health) Check(ctx context.Context) ReadyReport {
	h.mu.Lock()
	checks := append([]namedCheck(nil), h.checks...)
	timeout := h.timeout
	h.mu.Unlock()

	results := make([]error, len(checks))
	var wg sync.WaitGroup
	for i, c := range checks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = runCheck(ctx, timeout, c.check)
		}()
	}
	wg.Wait()

	rep := ReadyReport{Status: "ok", Checks: make(map[string]string, len(checks)+1)}
	if h.draining.Load() {
		rep.Checks["draining"] = ErrDraining.Error()
		rep.Failed = append(rep.Failed, "draining")
	}
	h.mu.Lock()
	for i, c := range checks {
		err := results[i]
		if err == nil {
			rep.Checks[c.name] = "ok"
			if h.failed[c.name] {
				h.log.Info("readiness check passes again", zap.String("check", c.name))
				delete(h.failed, c.name)
			}
			continue
		}
		msg := Redact(err.Error())
		rep.Checks[c.name] = msg
		rep.Failed = append(rep.Failed, c.name)
		if !h.failed[c.name] {
			h.log.Warn("readiness check fails", zap.String("check", c.name), zap.String("error", msg))
			h.failed[c.name] = true
		}
	}
	h.mu.Unlock()
	if len(rep.Failed) > 0 {
		rep.Status = "unavailable"
		sort.Strings(rep.Failed)
	}
	return rep
}

func runCheck(ctx context.Context, timeout time.Duration, check func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		defer func() {
			if r := recover(); r != nil {
				done <- fmt.Errorf("telemetry: check panicked: %v", r)
			}
		}()
		done <- check(ctx)
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		// A check that ignores its context must not hold the probe.
		return fmt.Errorf("telemetry: check timed out after %s: %w", timeout, ctx.Err())
	}
}

// Handler returns the probe mux: /livez, /readyz and, when metrics is not
// nil, /metrics.
func (h *Health) Handler(metrics http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /livez", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		rep := h.Check(r.Context())
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		if rep.Status != "ok" {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_ = json.NewEncoder(w).Encode(rep)
	})
	if metrics != nil {
		mux.Handle("GET /metrics", metrics)
	}
	return mux
}

// ListenAndServe serves Handler(metrics) on addr (":8080") until ctx is
// done, then shuts the server down gracefully (5 s at most). It returns nil
// after a shutdown caused by ctx, or the error that stopped the server.
func (h *Health) ListenAndServe(ctx context.Context, addr string, metrics http.Handler) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("telemetry: health listen %s: %w", addr, err)
	}
	return h.Serve(ctx, ln, metrics)
}

// Serve is ListenAndServe on an existing listener (tests use port 0). It
// closes ln.
func (h *Health) Serve(ctx context.Context, ln net.Listener, metrics http.Handler) error {
	srv := &http.Server{
		Handler:           h.Handler(metrics),
		ReadHeaderTimeout: 5 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	h.log.Info("health server listening", zap.String("addr", ln.Addr().String()))
	select {
	case err := <-errc:
		return fmt.Errorf("telemetry: health server: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
		return fmt.Errorf("telemetry: health server shutdown: %w", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("telemetry: health server: %w", err)
	}
	return nil
}

// NATSCheck passes while nc is connected (not reconnecting, draining or
// closed).
func NATSCheck(nc *nats.Conn) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		if st := nc.Status(); st != nats.CONNECTED {
			return fmt.Errorf("%w: status %s", ErrNotConnected, st)
		}
		return nil
	}
}

// StreamsCheck passes when every stream exists (one STREAM.INFO request
// each, so it also proves JetStream answers).
func StreamsCheck(js jetstream.JetStream, streams ...string) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		var errs []error
		for _, s := range streams {
			if _, err := js.Stream(ctx, s); err != nil {
				errs = append(errs, fmt.Errorf("stream %s: %w", s, err))
			}
		}
		return errors.Join(errs...)
	}
}

// RedisCheck passes when rdb answers PING.
func RedisCheck(rdb redis.UniversalClient) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		if err := rdb.Ping(ctx).Err(); err != nil {
			return fmt.Errorf("redis ping: %w", err)
		}
		return nil
	}
}
