// Package records keeps job records (state, attempts, result, error,
// timestamps) in Redis hashes <prefix>:job:<id>, written in pipelined
// batches off the hot path: updates of the same job made within one flush
// interval are merged into one HSET.
package records

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/connector-go/connector/internal/wire"
	"github.com/connector-go/connector/job"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// DefaultTTL is how long a record is kept after its last update.
const DefaultTTL = 7 * 24 * time.Hour

// Update is a partial record: zero fields are not written.
type Update struct {
	ID    string
	State job.State
	// Queued is the producer's state (enqueued or waiting). It lives in a
	// field of its own ("qstate") so that a producer's write landing after
	// a worker's never hides the worker's newer state.
	Queued      job.State
	Name        string
	Channel     string
	Priority    *int
	Attempts    int
	MaxRetries  *int
	Description string
	Result      string
	Error       string
	ErrorType   string
	Stack       string
	ClearError  bool
	Worker      string
	EnqueuedAt  time.Time
	ETA         time.Time
	StartedAt   time.Time
	EndedAt     time.Time
	Seq         uint64
	Identity    string
	Graph       string
}

func (u *Update) merge(o *Update) {
	if o.State != "" {
		u.State = o.State
	}
	if o.Queued != "" {
		u.Queued = o.Queued
	}
	setS := func(dst *string, v string) {
		if v != "" {
			*dst = v
		}
	}
	setS(&u.Name, o.Name)
	setS(&u.Channel, o.Channel)
	setS(&u.Description, o.Description)
	setS(&u.Result, o.Result)
	setS(&u.Worker, o.Worker)
	setS(&u.Identity, o.Identity)
	setS(&u.Graph, o.Graph)
	if o.ClearError {
		u.Error, u.ErrorType, u.Stack, u.ClearError = "", "", "", true
	}
	setS(&u.Error, o.Error)
	setS(&u.ErrorType, o.ErrorType)
	setS(&u.Stack, o.Stack)
	if o.Priority != nil {
		u.Priority = o.Priority
	}
	if o.MaxRetries != nil {
		u.MaxRetries = o.MaxRetries
	}
	if o.Attempts > 0 {
		u.Attempts = o.Attempts
	}
	setT := func(dst *time.Time, v time.Time) {
		if !v.IsZero() {
			*dst = v
		}
	}
	setT(&u.EnqueuedAt, o.EnqueuedAt)
	setT(&u.ETA, o.ETA)
	setT(&u.StartedAt, o.StartedAt)
	setT(&u.EndedAt, o.EndedAt)
	if o.Seq != 0 {
		u.Seq = o.Seq
	}
}

// Store writes and reads records.
type Store struct {
	rdb   redis.UniversalClient
	names wire.Names
	ttl   time.Duration
	log   *zap.Logger

	mu      sync.Mutex
	pending map[string]*Update
	kick    chan struct{}
	done    chan struct{}
	closed  chan struct{}
	flushMu sync.Mutex
	once    sync.Once
}

// MaxPending bounds the updates held while Redis is unreachable; beyond it
// the oldest are dropped (records are an aid; jobs themselves live in NATS).
const MaxPending = 200_000

// New starts a store flushing every interval (default 20 ms).
func New(rdb redis.UniversalClient, names wire.Names, ttl time.Duration, log *zap.Logger) *Store {
	if ttl <= 0 {
		ttl = DefaultTTL
	}
	if log == nil {
		log = zap.NewNop()
	}
	s := &Store{
		rdb: rdb, names: names, ttl: ttl, log: log,
		pending: make(map[string]*Update),
		kick:    make(chan struct{}, 1),
		done:    make(chan struct{}),
		closed:  make(chan struct{}),
	}
	go s.loop(20 * time.Millisecond)
	return s
}

// Key is the Redis key of a job record.
func (s *Store) Key(id string) string { return s.names.RedisKey("job", id) }

// Record queues an update; it never blocks on Redis.
func (s *Store) Record(u Update) {
	s.mu.Lock()
	if p, ok := s.pending[u.ID]; ok {
		p.merge(&u)
	} else {
		if len(s.pending) >= MaxPending {
			for k := range s.pending { // drop an arbitrary one
				delete(s.pending, k)
				break
			}
		}
		cp := u
		s.pending[u.ID] = &cp
	}
	n := len(s.pending)
	s.mu.Unlock()
	if n >= 2048 {
		select {
		case s.kick <- struct{}{}:
		default:
		}
	}
}

func (s *Store) loop(every time.Duration) {
	defer close(s.closed)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
		case <-s.kick:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := s.Flush(ctx); err != nil {
			s.log.Warn("job records: flush failed; will retry", zap.Error(err))
		}
		cancel()
	}
}

// Flush writes the pending updates now.
func (s *Store) Flush(ctx context.Context) error {
	s.flushMu.Lock()
	defer s.flushMu.Unlock()
	s.mu.Lock()
	if len(s.pending) == 0 {
		s.mu.Unlock()
		return nil
	}
	batch := s.pending
	s.pending = make(map[string]*Update, len(batch))
	s.mu.Unlock()

	pipe := s.rdb.Pipeline()
	now := time.Now()
	for _, u := range batch {
		key := s.Key(u.ID)
		vals := u.fields(now)
		if len(vals) > 0 {
			pipe.HSet(ctx, key, vals...)
		}
		if u.ClearError {
			pipe.HDel(ctx, key, "error", "error_type", "stack")
		}
		pipe.PExpire(ctx, key, s.ttl)
	}
	_, err := pipe.Exec(ctx)
	if err != nil {
		// Put the batch back (older than anything queued since).
		s.mu.Lock()
		for id, u := range batch {
			if newer, ok := s.pending[id]; ok {
				u.merge(newer)
			}
			if len(s.pending) < MaxPending {
				s.pending[id] = u
			}
		}
		s.mu.Unlock()
		return fmt.Errorf("records: %w", err)
	}
	return nil
}

// Close flushes and stops the store.
func (s *Store) Close(ctx context.Context) error {
	s.once.Do(func() { close(s.done) })
	<-s.closed
	return s.Flush(ctx)
}

func (u *Update) fields(now time.Time) []any {
	v := make([]any, 0, 24)
	if u.State != "" {
		v = append(v, "state", string(u.State))
	}
	if u.Queued != "" {
		v = append(v, "qstate", string(u.Queued))
	}
	add := func(k, s string) {
		if s != "" {
			v = append(v, k, s)
		}
	}
	add("name", u.Name)
	add("channel", u.Channel)
	add("desc", u.Description)
	add("result", u.Result)
	add("error", u.Error)
	add("error_type", u.ErrorType)
	add("stack", u.Stack)
	add("worker", u.Worker)
	add("identity", u.Identity)
	add("graph", u.Graph)
	if u.Priority != nil {
		v = append(v, "priority", *u.Priority)
	}
	if u.MaxRetries != nil {
		v = append(v, "max_retries", *u.MaxRetries)
	}
	if u.Attempts > 0 {
		v = append(v, "attempts", u.Attempts)
	}
	addT := func(k string, t time.Time) {
		if !t.IsZero() {
			v = append(v, k, t.UnixMilli())
		}
	}
	addT("enqueued_at", u.EnqueuedAt)
	addT("eta", u.ETA)
	addT("started_at", u.StartedAt)
	addT("ended_at", u.EndedAt)
	if u.Seq != 0 {
		v = append(v, "seq", u.Seq)
	}
	v = append(v, "updated_at", now.UnixMilli())
	return v
}

// Get reads a record; job.ErrNotFound when none is kept.
func (s *Store) Get(ctx context.Context, id string) (job.Record, error) {
	m, err := s.rdb.HGetAll(ctx, s.Key(id)).Result()
	if err != nil {
		return job.Record{}, fmt.Errorf("records: %w", err)
	}
	if len(m) == 0 {
		return job.Record{}, fmt.Errorf("%w: %s", job.ErrNotFound, id)
	}
	return parse(id, m), nil
}

// Set writes a record update synchronously (operations: requeue, cancel).
func (s *Store) Set(ctx context.Context, u Update) error {
	key := s.Key(u.ID)
	pipe := s.rdb.TxPipeline()
	if vals := u.fields(time.Now()); len(vals) > 0 {
		pipe.HSet(ctx, key, vals...)
	}
	if u.ClearError {
		pipe.HDel(ctx, key, "error", "error_type", "stack")
	}
	pipe.PExpire(ctx, key, s.ttl)
	_, err := pipe.Exec(ctx)
	if err != nil {
		return fmt.Errorf("records: %w", err)
	}
	return nil
}

func parse(id string, m map[string]string) job.Record {
	atoi := func(k string) int { n, _ := strconv.Atoi(m[k]); return n }
	ts := func(k string) time.Time {
		n, err := strconv.ParseInt(m[k], 10, 64)
		if err != nil || n == 0 {
			return time.Time{}
		}
		return time.UnixMilli(n)
	}
	rec := job.Record{
		ID: id, Name: m["name"], Channel: m["channel"], Priority: atoi("priority"),
		State: job.State(firstNonEmpty(m["state"], m["qstate"])), Attempts: atoi("attempts"), MaxRetries: atoi("max_retries"),
		Description: m["desc"], Result: m["result"], Error: m["error"], ErrorType: m["error_type"],
		Stack: m["stack"], Worker: m["worker"],
		EnqueuedAt: ts("enqueued_at"), ETA: ts("eta"), StartedAt: ts("started_at"),
		EndedAt: ts("ended_at"), UpdatedAt: ts("updated_at"),
	}
	rec.Graph = m["graph"]
	if n, err := strconv.ParseUint(m["seq"], 10, 64); err == nil {
		rec.Seq = n
	}
	return rec
}

// IsUnavailable reports a connection-level Redis failure.
func IsUnavailable(err error) bool {
	return err != nil && !errors.Is(err, redis.Nil) && !errors.Is(err, job.ErrNotFound)
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
