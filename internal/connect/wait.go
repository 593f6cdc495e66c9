package connect

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/connector-go/connector/internal/telemetry"
	"github.com/nats-io/nats.go"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// DefaultStartWait is how long a long-running process (a worker, a
// connector's service) waits for NATS and Redis to come up at start before
// it gives up. It stays inside the 60 s that the Kubernetes manifests'
// startupProbe allows.
const DefaultStartWait = 30 * time.Second

// Transient reports whether err, from ConnectNATS or ConnectRedis, may go
// away by itself while the server comes up: the connection was refused or
// closed, the name does not resolve yet, an attempt timed out, Redis is
// loading its data or its cluster is not formed yet. Configuration,
// authentication and TLS errors are not transient: waiting would not help.
func Transient(err error) bool {
	if err == nil || errors.Is(err, ErrConfig) || errors.Is(err, context.Canceled) {
		return false
	}
	if errors.Is(err, nats.ErrNoServers) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) {
		return true
	}
	var dns *net.DNSError
	if errors.As(err, &dns) {
		return true
	}
	var op *net.OpError
	if errors.As(err, &op) {
		// crypto/tls reports TLS alerts as "remote error" / "local error":
		// a certificate problem, not a server still starting.
		return op.Op == "dial" || op.Op == "read" || op.Op == "write"
	}
	var rerr redis.Error
	if errors.As(err, &rerr) {
		for _, p := range []string{"LOADING ", "MASTERDOWN ", "TRYAGAIN ", "CLUSTERDOWN "} {
			if strings.HasPrefix(rerr.Error(), p) {
				return true
			}
		}
		return false
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// Retry calls f until it succeeds, fails with an error that transient
// does not accept (Transient, for connections), ctx ends, or the deadline
// passes; the error is then the last attempt's. With a zero deadline it
// tries once. Between attempts it backs off from 250 ms to 5 s and logs the
// error (what names what it waits for: "NATS", "Redis"). A process started
// beside its servers (a compose project, a Helm release, a NATS rolling
// restart) so waits for them instead of exiting and being restarted with a
// growing back-off.
func Retry[T any](ctx context.Context, deadline time.Time, log *zap.Logger, what string, transient func(error) bool,
	f func(context.Context) (T, error)) (T, error) {
	start := time.Now()
	backoff := 250 * time.Millisecond
	for attempt := 1; ; attempt++ {
		v, err := f(ctx)
		if err == nil {
			if attempt > 1 {
				log.Info("ready after waiting", zap.String("waited_for", what), zap.Int("attempts", attempt),
					zap.Duration("waited", time.Since(start).Round(time.Millisecond)))
			}
			return v, nil
		}
		if ctx.Err() != nil {
			if errors.Is(err, ctx.Err()) {
				return v, err
			}
			return v, fmt.Errorf("%w (stopped waiting: %w)", err, ctx.Err())
		}
		if deadline.IsZero() || !transient(err) {
			return v, err
		}
		left := time.Until(deadline)
		if left <= 0 {
			return v, fmt.Errorf("%w (gave up waiting after %s)", err, time.Since(start).Round(time.Second))
		}
		d := min(backoff, left)
		backoff = min(backoff*2, 5*time.Second)
		log.Warn("not ready yet; waiting", zap.String("waiting_for", what), zap.Int("attempt", attempt),
			zap.Duration("retry_in", d), zap.Duration("gives_up_in", left.Round(time.Second)), telemetry.ErrField(err))
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return v, fmt.Errorf("%w (stopped waiting: %w)", err, ctx.Err())
		}
	}
}

// Wait is Retry for an f without a result (provisioning, a check).
func Wait(ctx context.Context, deadline time.Time, log *zap.Logger, what string, transient func(error) bool,
	f func(context.Context) error) error {
	_, err := Retry(ctx, deadline, log, what, transient, func(ctx context.Context) (struct{}, error) { return struct{}{}, f(ctx) })
	return err
}
