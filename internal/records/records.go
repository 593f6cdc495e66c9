// Package records keeps job records (state, attempts, result, error,
// timestamps) in Redis, written in pipelined batches off the hot path.
//
// A job has up to two keys, each one msgpack value written with a single
// SET ... PX (no read, no script):
//
//	<prefix>:job:<id>:q   what the producer knows (enqueued/waiting/pending, ETA, sequence)
//	<prefix>:job:<id>     what the workers know (started, done, waiting for a retry, dead, ...)
//
// Reads merge them, the worker's side winning, so a producer's write that
// lands late never hides a worker's newer state. Updates of one job made
// within one flush interval are merged into one write.
package records

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/connector-go/connector/internal/wire"
	"github.com/connector-go/connector/job"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// DefaultTTL is how long a record is kept after its last update.
const DefaultTTL = 7 * 24 * time.Hour

// Update is a partial record: zero fields are not written. An update with
// Queued set is the producer's side; any other is the workers' side.
type Update struct {
	ID            string
	State         job.State
	Queued        job.State
	Name          string
	Channel       string
	Priority      *int
	Attempts      int
	ResetAttempts bool
	MaxRetries    *int
	Description   string
	Result        string
	Error         string
	ErrorType     string
	Stack         string
	ClearError    bool
	Worker        string
	EnqueuedAt    time.Time
	ETA           time.Time
	StartedAt     time.Time
	EndedAt       time.Time
	Seq           uint64
	Identity      string
	Graph         string
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
	setS(&u.Worker, o.Worker)
	setS(&u.Identity, o.Identity)
	setS(&u.Graph, o.Graph)
	if o.ClearError {
		u.Error, u.ErrorType, u.Stack, u.Result = "", "", "", ""
	}
	setS(&u.Result, o.Result)
	setS(&u.Error, o.Error)
	setS(&u.ErrorType, o.ErrorType)
	setS(&u.Stack, o.Stack)
	if o.Priority != nil {
		u.Priority = o.Priority
	}
	if o.MaxRetries != nil {
		u.MaxRetries = o.MaxRetries
	}
	if o.ResetAttempts {
		u.Attempts = 0
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

// blob is the stored form of one side of a record.
type blob struct {
	State      string `msgpack:"st,omitempty"`
	Name       string `msgpack:"n,omitempty"`
	Channel    string `msgpack:"ch,omitempty"`
	Priority   *int   `msgpack:"p,omitempty"`
	Attempts   int    `msgpack:"a,omitempty"`
	MaxRetries *int   `msgpack:"mr,omitempty"`
	Desc       string `msgpack:"d,omitempty"`
	Result     string `msgpack:"r,omitempty"`
	Error      string `msgpack:"e,omitempty"`
	ErrorType  string `msgpack:"et,omitempty"`
	Stack      string `msgpack:"sk,omitempty"`
	Worker     string `msgpack:"w,omitempty"`
	Identity   string `msgpack:"i,omitempty"`
	Graph      string `msgpack:"g,omitempty"`
	EnqueuedAt int64  `msgpack:"eq,omitempty"`
	ETA        int64  `msgpack:"eta,omitempty"`
	StartedAt  int64  `msgpack:"sa,omitempty"`
	EndedAt    int64  `msgpack:"ea,omitempty"`
	UpdatedAt  int64  `msgpack:"ua,omitempty"`
	Seq        uint64 `msgpack:"sq,omitempty"`
}

func (u *Update) blob(now time.Time) blob {
	st := u.State
	if u.Queued != "" {
		st = u.Queued
	}
	return blob{
		State: string(st), Name: u.Name, Channel: u.Channel, Priority: u.Priority, Attempts: u.Attempts,
		MaxRetries: u.MaxRetries, Desc: u.Description, Result: u.Result, Error: u.Error, ErrorType: u.ErrorType,
		Stack: u.Stack, Worker: u.Worker, Identity: u.Identity, Graph: u.Graph,
		EnqueuedAt: wire.Millis(u.EnqueuedAt), ETA: wire.Millis(u.ETA), StartedAt: wire.Millis(u.StartedAt),
		EndedAt: wire.Millis(u.EndedAt), UpdatedAt: now.UnixMilli(), Seq: u.Seq,
	}
}

func (b *blob) update(id string) Update {
	return Update{
		ID: id, State: job.State(b.State), Name: b.Name, Channel: b.Channel, Priority: b.Priority,
		Attempts: b.Attempts, MaxRetries: b.MaxRetries, Description: b.Desc, Result: b.Result, Error: b.Error,
		ErrorType: b.ErrorType, Stack: b.Stack, Worker: b.Worker, Identity: b.Identity, Graph: b.Graph,
		EnqueuedAt: wire.FromMillis(b.EnqueuedAt), ETA: wire.FromMillis(b.ETA), StartedAt: wire.FromMillis(b.StartedAt),
		EndedAt: wire.FromMillis(b.EndedAt), Seq: b.Seq,
	}
}

// Store writes and reads records.
type Store struct {
	rdb   redis.UniversalClient
	names wire.Names
	ttl   time.Duration
	log   *zap.Logger

	mu      sync.Mutex
	pending map[string]*Update // workers' side
	queued  map[string]*Update // producers' side
	kick    chan struct{}
	done    chan struct{}
	closed  chan struct{}
	flushMu sync.Mutex
	once    sync.Once
}

// MaxPending bounds the updates held while Redis is unreachable; beyond it
// new ones are dropped (records are an aid; the jobs themselves are in NATS).
const MaxPending = 200_000

// New starts a store flushing every 20 ms.
func New(rdb redis.UniversalClient, names wire.Names, ttl time.Duration, log *zap.Logger) *Store {
	if ttl <= 0 {
		ttl = DefaultTTL
	}
	if log == nil {
		log = zap.NewNop()
	}
	s := &Store{
		rdb: rdb, names: names, ttl: ttl, log: log,
		pending: make(map[string]*Update), queued: make(map[string]*Update),
		kick: make(chan struct{}, 1), done: make(chan struct{}), closed: make(chan struct{}),
	}
	go s.loop(20 * time.Millisecond)
	return s
}

// Key is the Redis key of the workers' side of a job record.
func (s *Store) Key(id string) string { return s.names.RedisKey("job", id) }

func (s *Store) queuedKey(id string) string { return s.names.RedisKey("job", id) + ":q" }

// Record queues an update; it never blocks on Redis.
func (s *Store) Record(u Update) {
	s.mu.Lock()
	m := s.pending
	if u.Queued != "" {
		m = s.queued
	}
	if p, ok := m[u.ID]; ok {
		p.merge(&u)
	} else if len(s.pending)+len(s.queued) < MaxPending {
		cp := u
		m[u.ID] = &cp
	}
	n := len(s.pending) + len(s.queued)
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
	if len(s.pending)+len(s.queued) == 0 {
		s.mu.Unlock()
		return nil
	}
	pending, queued := s.pending, s.queued
	s.pending, s.queued = make(map[string]*Update, len(pending)), make(map[string]*Update, len(queued))
	s.mu.Unlock()

	pipe := s.rdb.Pipeline()
	now := time.Now()
	for side, batch := range []map[string]*Update{pending, queued} {
		for id, u := range batch {
			b := u.blob(now)
			data, err := wire.Marshal(&b)
			if err != nil {
				return err
			}
			key := s.Key(id)
			if side == 1 {
				key = s.queuedKey(id)
			}
			pipe.Set(ctx, key, data, s.ttl)
		}
	}
	if _, err := pipe.Exec(ctx); err != nil {
		// Put the batches back, older than anything queued since.
		s.mu.Lock()
		for side, batch := range []map[string]*Update{pending, queued} {
			cur := s.pending
			if side == 1 {
				cur = s.queued
			}
			for id, u := range batch {
				if newer, ok := cur[id]; ok {
					u.merge(newer)
				}
				if len(s.pending)+len(s.queued) < MaxPending {
					cur[id] = u
				}
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

func (s *Store) read(ctx context.Context, id string) (worker, queued *blob, err error) {
	vals, err := s.rdb.MGet(ctx, s.Key(id), s.queuedKey(id)).Result()
	if err != nil {
		return nil, nil, fmt.Errorf("records: %w", err)
	}
	dec := func(v any) *blob {
		str, ok := v.(string)
		if !ok {
			return nil
		}
		var b blob
		if wire.Unmarshal([]byte(str), &b) != nil {
			return nil
		}
		return &b
	}
	return dec(vals[0]), dec(vals[1]), nil
}

// Get reads a record; job.ErrNotFound when none is kept.
func (s *Store) Get(ctx context.Context, id string) (job.Record, error) {
	w, q, err := s.read(ctx, id)
	if err != nil {
		return job.Record{}, err
	}
	if w == nil && q == nil {
		return job.Record{}, fmt.Errorf("%w: %s", job.ErrNotFound, id)
	}
	var u Update
	var updated int64
	if q != nil {
		u = q.update(id)
		updated = q.UpdatedAt
	}
	if w != nil {
		wu := w.update(id)
		u.merge(&wu)
		if w.State != "" {
			u.State = job.State(w.State)
		}
		updated = max(updated, w.UpdatedAt)
	}
	rec := job.Record{
		ID: id, Name: u.Name, Channel: u.Channel, State: u.State, Attempts: u.Attempts,
		Description: u.Description, Result: u.Result, Error: u.Error, ErrorType: u.ErrorType, Stack: u.Stack,
		Worker: u.Worker, EnqueuedAt: u.EnqueuedAt, ETA: u.ETA, StartedAt: u.StartedAt, EndedAt: u.EndedAt,
		UpdatedAt: wire.FromMillis(updated), Seq: u.Seq, Graph: u.Graph, IdentityKey: u.Identity,
		Priority: job.DefaultPriority, MaxRetries: job.DefaultMaxRetries,
	}
	if u.Priority != nil {
		rec.Priority = *u.Priority
	}
	if u.MaxRetries != nil {
		rec.MaxRetries = *u.MaxRetries
	}
	return rec, nil
}

// Set applies an update to the workers' side synchronously (operations:
// requeue, cancel), after whatever is pending.
func (s *Store) Set(ctx context.Context, u Update) error {
	if err := s.Flush(ctx); err != nil {
		return err
	}
	w, _, err := s.read(ctx, u.ID)
	if err != nil {
		return err
	}
	cur := Update{ID: u.ID}
	if w != nil {
		cur = w.update(u.ID)
	}
	cur.merge(&u)
	cur.Queued = ""
	b := cur.blob(time.Now())
	data, err := wire.Marshal(&b)
	if err != nil {
		return err
	}
	if err := s.rdb.Set(ctx, s.Key(u.ID), data, s.ttl).Err(); err != nil {
		return fmt.Errorf("records: %w", err)
	}
	return nil
}

// IsUnavailable reports a connection-level Redis failure.
func IsUnavailable(err error) bool {
	return err != nil && !errors.Is(err, redis.Nil) && !errors.Is(err, job.ErrNotFound)
}
