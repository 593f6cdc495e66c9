package bindings

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"

	"github.com/connector-go/connector/internal/telemetry"
)

// Store holds bindings, locks and idempotency records in one Redis (a
// single server, a Sentinel setup or a Cluster: any redis.UniversalClient).
// It is safe for concurrent use.
type Store struct {
	rdb        redis.UniversalClient
	prefix     string // escaped
	retryDelay time.Duration
	mp         metric.MeterProvider
	metrics    *telemetry.Metrics // nil: nothing recorded
}

// Option configures a Store.
type Option func(*Store)

// WithLockRetryDelay sets the delay a job waits before running again when
// [Store.Lock] finds the resource held elsewhere (default 1s, as the seed's
// advisory_lock_or_retry). d <= 0 lets the job's retry pattern decide.
func WithLockRetryDelay(d time.Duration) Option {
	return func(s *Store) { s.retryDelay = d }
}

// WithMeterProvider records the latency of every Redis operation of the
// Store (each Lua script, HMGET batch, lookup, lock call and idempotency
// record) in the histogram connector.store.op.duration of mp's meter
// "github.com/connector-go/connector" (Prometheus:
// connector_store_op_duration_seconds), with attributes store.op (bind,
// unbind, to_internal, to_external, sync_date, to_internal_many,
// to_external_many, sync_date_many, lock, extend, release, completed,
// mark_completed) and store.outcome: ok; conflict (a refused Bind), locked
// (Lock found the resource held elsewhere), lost (Extend or Release by a
// caller no longer holding the lease); error (Redis unreachable or failing,
// a cancelled context, an unexpected reply). Calls refused before reaching
// Redis (ErrInvalid) are not recorded.
//
// Pass the provider the worker's metrics use (telemetry.Providers'
// MeterProvider in this module) so the series are served at /metrics. nil,
// the default, records nothing and costs nothing.
func WithMeterProvider(mp metric.MeterProvider) Option {
	return func(s *Store) { s.mp = mp }
}

// New returns a Store over rdb. Every key it reads or writes starts with
// "{" + prefix + ":" (prefix percent-encoded as docs/bindings.md says), so
// several deployments (or tests) can share a Redis.
// The Store does not own rdb: close it yourself.
func New(rdb redis.UniversalClient, prefix string, opts ...Option) *Store {
	s := &Store{rdb: rdb, prefix: escape(prefix), retryDelay: time.Second}
	for _, o := range opts {
		o(s)
	}
	if s.mp != nil {
		m, err := telemetry.NewMetrics(s.mp)
		if err != nil {
			otel.Handle(err) // only with a broken provider: run without metrics
		}
		s.metrics = m
	}
	return s
}

// Operation names (store.op) recorded by WithMeterProvider.
const (
	opBind           = "bind"
	opUnbind         = "unbind"
	opToInternal     = "to_internal"
	opToExternal     = "to_external"
	opSyncDate       = "sync_date"
	opToInternalMany = "to_internal_many"
	opToExternalMany = "to_external_many"
	opSyncDateMany   = "sync_date_many"
	opLock           = "lock"
	opExtend         = "extend"
	opRelease        = "release"
	opCompleted      = "completed"
	opMarkCompleted  = "mark_completed"
)

// start returns the start time of an operation to observe, or the zero
// time when metrics are off (no clock read).
func (s *Store) start() time.Time {
	if s.metrics == nil {
		return time.Time{}
	}
	return time.Now()
}

// observe records op's latency since t0 with the outcome of *err (read when
// observe runs: defer it with a pointer to a named result).
func (s *Store) observe(ctx context.Context, op string, t0 time.Time, err *error) {
	if s.metrics == nil {
		return
	}
	s.metrics.StoreOpOutcome(ctx, op, outcomeOf(*err), time.Since(t0))
}

// outcomeOf is the store.outcome of an operation's error.
func outcomeOf(err error) string {
	switch {
	case err == nil:
		return telemetry.StoreOutcomeOK
	case errors.Is(err, ErrConflict):
		return telemetry.StoreOutcomeConflict
	case errors.Is(err, ErrLocked):
		return telemetry.StoreOutcomeLocked
	case errors.Is(err, ErrLockLost):
		return telemetry.StoreOutcomeLost
	}
	return telemetry.StoreOutcomeError
}

// Binder returns the binder of one backend instance and one model. It is
// cheap: it only computes key names. A binding of one (backend, model)
// never answers for another.
func (s *Store) Binder(backendID, model string) *Binder {
	tag := "{" + s.prefix + ":bind:" + escape(backendID) + ":" + escape(model) + "}"
	return &Binder{
		s:       s,
		backend: backendID,
		model:   model,
		fwd:     tag + ":e2l",
		rev:     tag + ":l2e",
		sync:    tag + ":sync",
	}
}

func (s *Store) lockKeys(resource string) (holder, fence string) {
	tag := "{" + s.prefix + ":lock:" + escape(resource) + "}"
	return tag + ":holder", tag + ":fence"
}

func (s *Store) doneKey(key string) string {
	return "{" + s.prefix + ":done:" + escape(key) + "}"
}

// escape percent-encodes the characters that structure a key ('%', ':',
// '{', '}') so that names cannot collide ("a:b"+"c" vs "a"+"b:c") or break
// the hash tag.
func escape(s string) string {
	if !strings.ContainsAny(s, "%:{}") {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '%':
			b.WriteString("%25")
		case ':':
			b.WriteString("%3A")
		case '{':
			b.WriteString("%7B")
		case '}':
			b.WriteString("%7D")
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}
