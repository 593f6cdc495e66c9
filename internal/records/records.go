// Package records keeps job records (state, attempts, result, error,
// timestamps) in Redis, written in pipelined batches off the hot path.
//
// A record has two sides, each one msgpack map: what the producer knows
// (enqueued/waiting/pending, ETA, sequence) and what the workers know
// (started, done, waiting for a retry, dead, ...). Reads merge them, the
// workers' side winning, so a producer's write that lands late never hides
// a worker's newer state. Updates of one job made within one flush
// interval go out in one write, and every update carries its whole side
// (the latest one wins, but for a batch that landed late); no log write
// reads anything.
//
// Jobs with a time-ordered id (a ULID, as the dispatcher makes them) are
// kept in append-only logs by the minute of their id and a shard of it, so
// that one flush is a few APPENDs of many entries rather than a command, or
// a hash field, per job (Redis spends about ten times less on an appended
// entry than on a hash field):
//
//	<prefix>:jlog:<minute>:<shard>   entries of both sides, oldest first
//
// A reader scans the log of a job's id and keeps, per side, the last entry
// of that id, but for a batch that landed late (processes flush on their
// own, and a failed batch is retried later: see scanLog). Each log
// expires the retention after its last write, or later: a job due at an
// ETA further away keeps its record until that ETA plus the retention
// (expiries only ever move later). Jobs whose id the caller chose have
// keys of their own, with the same retention, written by a script that
// refuses, as readers of a log do, a side older than the one it holds:
//
//	<prefix>:job:<id>:q, <prefix>:job:<id>
package records

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/connector-go/connector/internal/telemetry"
	"github.com/connector-go/connector/internal/wire"
	"github.com/connector-go/connector/job"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// DefaultTTL is how long a record is kept after its last update (or after
// the job's ETA, when that is later).
const DefaultTTL = 7 * 24 * time.Hour

// maxKeep bounds a record's lifetime (an ETA centuries away): expiries stay
// integers that Redis and its Lua (printing 14 digits) read exactly.
const maxKeep = 100 * 365 * 24 * time.Hour

// keep is how long (ms) a side written now, for a job due at eta (zero:
// none), is kept: the retention, after the ETA when that is later.
func (s *Store) keep(eta, now time.Time) int64 {
	k := min(s.ttl, maxKeep)
	if wait := eta.Sub(now); !eta.IsZero() && wait > 0 {
		k += min(wait, maxKeep)
	}
	// (at least 1 ms: Redis refuses an expiry of 0, and PEXPIRE 0 deletes)
	return max(min(k, maxKeep).Milliseconds(), 1)
}

// logScript appends entries to a log (KEYS[1], ARGV[1]) and makes it
// expire in ARGV[2] ms, unless it expires later already (another job of
// the log waits for an ETA further away).
var logScript = redis.NewScript(`
redis.call('APPEND', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1
`)

// keyScript writes one side of a caller-chosen id's record to its key
// (KEYS[1]): ARGV[1] the side, ARGV[2] its lifetime in ms (the key's
// expiry never moves earlier), ARGV[3] its update time, ARGV[4] lateBy in
// ms. It refuses (0) a side updated more than lateBy before the one the
// key holds, as a reader of a log skips such an entry (scanLog): a batch
// that landed late. The update time of what the key holds is read where
// appendTo writes it, first in the map (stamp: 0 when unknown, e.g. a side
// of another writer, which is then replaced). It refuses likewise a side
// that the one it holds superseded by its attempt and state (superseded:
// the same rule as a log's readers; a side either cannot decode is
// replaced). That rule needs Redis's cmsgpack library: a store without it
// (the embedded one of `connector dev`) applies the time rule alone.
var keyScript = redis.NewScript(`
local ended = {done = true, dead = true, failed = true}
local hasmp, mp = pcall(function() return cmsgpack end)
local function superseded(new, cur)
  if not hasmp or type(mp) ~= 'table' then return false end
  local okb, b = pcall(mp.unpack, new)
  local okc, c = pcall(mp.unpack, cur)
  if not okb or not okc or type(b) ~= 'table' or type(c) ~= 'table' then return false end
  if b.st ~= 'started' and b.st ~= 'waiting' then return false end
  local ba, ca = tonumber(b.a) or 0, tonumber(c.a) or 0
  return ba < ca or (ba == ca and b.st ~= c.st and ended[c.st] == true)
end
local function stamp(v)
  local b, i = string.byte(v, 1), 0
  if b == nil then return 0 end
  if b >= 0x80 and b <= 0x8f then i = 2 elseif b == 0xde then i = 4 elseif b == 0xdf then i = 6 else return 0 end
  if string.sub(v, i, i + 2) ~= '\162ua' then return 0 end
  local t, n = string.byte(v, i + 3), 0
  if t == nil then return 0 end
  if t <= 0x7f then return t end
  if t == 0xcc then n = 1 elseif t == 0xcd then n = 2 elseif t == 0xce then n = 4
  elseif t == 0xcf or t == 0xd3 then n = 8 else return 0 end
  if #v < i + 3 + n then return 0 end
  local x = 0
  for k = 1, n do x = x * 256 + string.byte(v, i + 3 + k) end
  return x
end
local keep = ARGV[2]
local ok, cur = pcall(redis.call, 'GET', KEYS[1])
if ok and cur then
  local at, curAt = tonumber(ARGV[3]), stamp(cur)
  if at > 0 and curAt > 0 and at + tonumber(ARGV[4]) < curAt then return 0 end
  if superseded(ARGV[1], cur) then return 0 end
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl > tonumber(keep) then keep = ttl end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', keep)
return 1
`)

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
	buf     []byte       // encoded sides recorded since the last flush
	ents    []entry      // where each is in buf, in order
	spare   batch        // the previous flush's buffers, reused
	logs    []pendingLog // Flush's buffers, reused (under flushMu)
	kick    chan struct{}
	done    chan struct{}
	closed  chan struct{}
	flushMu sync.Mutex
	once    sync.Once
	lastAt  int64 // the last update time recorded (unix ms)

	missed func(id string) // tests: Get found no record yet and waits
}

// MaxPending bounds the updates held while Redis is unreachable; beyond it
// new ones are dropped (records are an aid; the jobs themselves are in NATS).
const MaxPending = 200_000

// maxPendingBytes bounds the bytes of the updates held likewise: results,
// errors and stacks are the handlers', of any size (a variable for tests).
var maxPendingBytes = 256 << 20

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
		kick: make(chan struct{}, 1), done: make(chan struct{}), closed: make(chan struct{}),
	}
	go s.loop(20 * time.Millisecond)
	return s
}

// Shards per minute of logged records: enough to spread a busy minute over
// a Redis Cluster and to keep each log small enough to read whole (at
// 1,000 jobs/s a log holds about 4,000 jobs, under 1 MB).
const shards = 16

// location is where one side of a record lives: a key of its own, or
// (logged) entries of a shared log.
type location struct {
	key    string
	logged bool
}

// locate finds where a job's record is kept: the log of its id's minute
// and shard (both sides), or its own key for the workers' side (queued
// false) or the producer's side.
func (s *Store) locate(id string, queued bool) location {
	if minute, shard, ok := bucket(id); ok {
		return location{key: s.logKey(minute, shard), logged: true}
	}
	return location{key: s.ownKey(id, queued)}
}

// bucket is the minute and shard of a ULID's record; ok is false for ids
// that are not ULIDs.
func bucket(id string) (minute uint64, shard uint32, ok bool) {
	ms, ok := ulidTime(id)
	if !ok {
		return 0, 0, false
	}
	return ms / uint64(time.Minute/time.Millisecond), fnv32(id) % shards, true
}

func (s *Store) logKey(minute uint64, shard uint32) string {
	return s.names.Prefix + ":jlog:" + strconv.FormatUint(minute, 10) + ":" + strconv.FormatUint(uint64(shard), 10)
}

func (s *Store) ownKey(id string, queued bool) string {
	key := s.names.RedisKey("job", id)
	if queued {
		key += ":q"
	}
	return key
}

// A log entry is one side of one job's record:
//
//	side byte ('q' producer, 'w' workers) | id (26 bytes) | uvarint length | msgpack map
const (
	sideProducer = 'q'
	sideWorkers  = 'w'
	ulidLen      = 26
)

// appendEntry appends a log entry to dst.
func appendEntry(dst []byte, id string, queued bool, data []byte) []byte {
	side := byte(sideWorkers)
	if queued {
		side = sideProducer
	}
	dst = append(dst, side)
	dst = append(dst, id...)
	dst = binary.AppendUvarint(dst, uint64(len(data)))
	return append(dst, data...)
}

// errBadLog is a log that is not a sequence of entries.
var errBadLog = errors.New("records: malformed record log")

// scanLog returns the latest entry of id on each side of a log: the last
// one in the log, unless it was updated (its "ua") more than lateBy before
// the entry it would replace, or is stale by its attempt and state
// (superseded), or does not decode. Processes flush their batches on their
// own, and a batch that failed is retried later: such a batch, landing after a
// newer update of the side by another process, does not take the record
// back. Within lateBy the log's order decides, so hosts' clocks a few
// milliseconds apart do not reorder updates that follow one another
// closely (a retry run at once by another process); but for what the
// entries say themselves (superseded). An entry that does not decode
// (another writer's bug) is skipped: the side before it stands, rather
// than the side being lost and the record read as the producer's alone.
func scanLog(log []byte, id string) (worker, queued []byte, err error) {
	var wCur, qCur blob
	later := func(cur []byte, curB *blob, data []byte) bool {
		var b blob
		if b.decode(data) != nil {
			return false
		}
		// (compared next with this entry, as keyScript compares a side
		// with the one its key holds)
		if cur != nil && superseded(&b, curB) {
			return false
		}
		*curB = b
		return true
	}
	for len(log) > 0 {
		if len(log) < 1+ulidLen {
			return nil, nil, errBadLog
		}
		side, eid := log[0], log[1:1+ulidLen]
		n, k := binary.Uvarint(log[1+ulidLen:])
		if k <= 0 || n > uint64(len(log)-1-ulidLen-k) {
			return nil, nil, errBadLog
		}
		data := log[1+ulidLen+k : 1+ulidLen+k+int(n)]
		log = log[1+ulidLen+k+int(n):]
		if string(eid) != id {
			continue
		}
		switch side {
		case sideWorkers:
			if later(worker, &wCur, data) {
				worker = data
			}
		case sideProducer:
			if later(queued, &qCur, data) {
				queued = data
			}
		default:
			return nil, nil, errBadLog
		}
	}
	return worker, queued, nil
}

// superseded reports a side b that must not replace cur, the side it
// follows (in a log, or in a chosen id's key: keyScript applies the same
// rule): b was updated more than lateBy before cur (a batch that landed
// late), or b says a run is under way or waits for its retry while cur
// is of a later attempt, or of the same attempt ended since (done, dead:
// no run follows them with that attempt, whereas an uncounted retry runs
// again as the same attempt after "waiting", and a run may start as an
// operator's cancel is written). Within lateBy update times cannot tell a
// late batch from a clock behind, but attempts and states can: a
// "started" of a lease-expired worker, or of a slow flush, never takes a
// done job back, nor a record back to an earlier attempt. An operator's
// requeue ("enqueued", attempts reset) and the ends of runs are
// superseded by time alone.
func superseded(b, cur *blob) bool {
	if b.UpdatedAt != 0 && cur.UpdatedAt != 0 && b.UpdatedAt+lateBy.Milliseconds() < cur.UpdatedAt {
		return true
	}
	if b.State != string(job.StateStarted) && b.State != string(job.StateWaiting) {
		return false
	}
	return b.Attempts < cur.Attempts || b.Attempts == cur.Attempts && b.State != cur.State && ended(cur.State)
}

// ended reports a workers' state after which no run of the same attempt
// comes.
func ended(st string) bool {
	switch job.State(st) {
	case job.StateDone, job.StateDead, job.StateFailed:
		return true
	}
	return false
}

// lateBy is how much older than the entry it follows in the log an entry
// must be (by update time) to be taken for a batch that landed late (a
// variable for tests).
var lateBy = time.Second

// ulidTime reads the millisecond time of a 26-character Crockford base32
// ULID (the first 10 characters); ok is false for any other id.
func ulidTime(id string) (uint64, bool) {
	if len(id) != 26 || id[0] > '7' {
		return 0, false
	}
	var ms uint64
	for i := 0; i < len(id); i++ {
		v := crockford(id[i])
		if v < 0 {
			return 0, false
		}
		if i < 10 {
			ms = ms<<5 | uint64(v)
		}
	}
	return ms, true
}

func crockford(c byte) int { return int(crockfordValue[c]) }

// crockfordValue maps a byte to its Crockford base32 value, -1 if none.
var crockfordValue = func() (t [256]int8) {
	for i := range t {
		t[i] = -1
	}
	for i, c := range "0123456789ABCDEFGHJKMNPQRSTVWXYZ" {
		t[c] = int8(i)
	}
	return t
}()

func fnv32(s string) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(s); i++ {
		h ^= uint32(s[i])
		h *= 16777619
	}
	return h
}

// entry is one recorded side: buf[off:end] is its encoding, at its update
// time, kept keep ms.
type entry struct {
	id       string
	queued   bool
	off, end int
	at, keep int64
}

type batch struct {
	buf  []byte
	ents []entry
}

// Record queues an update of one side of a job's record (the producer's
// when Queued is set): it is encoded at once into a reused buffer and
// never waits for Redis. An update replaces what was written of its side
// before, so it carries the whole side.
func (s *Store) Record(u *Update) {
	now := time.Now()
	b := u.blob(now)
	keep := s.keep(u.ETA, now)
	s.mu.Lock()
	// A process's updates never go back in time, even if its clock does
	// (readers compare update times to find batches that landed late).
	b.UpdatedAt = max(b.UpdatedAt, s.lastAt)
	s.lastAt = b.UpdatedAt
	if len(s.ents) < MaxPending {
		off := len(s.buf)
		s.buf = b.appendTo(s.buf)
		if len(s.buf) <= maxPendingBytes {
			s.ents = append(s.ents, entry{id: u.ID, queued: u.Queued != "", off: off, end: len(s.buf), at: b.UpdatedAt, keep: keep})
		} else {
			s.buf = s.buf[:off]
		}
	}
	n := len(s.ents)
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
			s.log.Warn("job records: flush failed; will retry", telemetry.ErrField(err))
		}
		cancel()
	}
}

// Flush writes the pending updates now: per log one script that APPENDs
// all its entries and makes the log expire (logScript), per own key one
// script that SETs it (keyScript), in one pipeline. Of several updates of
// one side in a flush, the last wins (readers keep the last entry of a
// log, but for a batch that landed late, and keyScript refuses only a side
// older than the key's by more than lateBy).
func (s *Store) Flush(ctx context.Context) error {
	s.flushMu.Lock()
	defer s.flushMu.Unlock()
	s.mu.Lock()
	if len(s.ents) == 0 {
		s.mu.Unlock()
		return nil
	}
	cur := batch{buf: s.buf, ents: s.ents}
	s.buf, s.ents = s.spare.buf[:0], s.spare.ents[:0]
	s.mu.Unlock()

	logs := s.logs[:0]
	index := map[uint64]int{} // (minute, shard) -> logs[i]
	pipe := s.rdb.Pipeline()
	for _, e := range cur.ents {
		data := cur.buf[e.off:e.end]
		minute, shard, logged := bucket(e.id)
		if !logged {
			keyScript.Eval(ctx, pipe, []string{s.ownKey(e.id, e.queued)}, data, e.keep, e.at, lateBy.Milliseconds())
			continue
		}
		kk := minute<<8 | uint64(shard)
		i, ok := index[kk]
		if !ok {
			i = len(logs)
			index[kk] = i
			if i < cap(logs) {
				logs = logs[:i+1]
				logs[i].buf = logs[i].buf[:0]
			} else {
				logs = append(logs, pendingLog{})
			}
			logs[i].key, logs[i].keep = s.logKey(minute, shard), 0
		}
		logs[i].buf = appendEntry(logs[i].buf, e.id, e.queued, data)
		logs[i].keep = max(logs[i].keep, e.keep)
	}
	for _, l := range logs {
		logScript.Eval(ctx, pipe, []string{l.key}, l.buf, l.keep)
	}
	_, err := pipe.Exec(ctx)
	s.logs = logs
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		// Put them back, before anything recorded since (up to the bound).
		// A retried APPEND that had landed repeats entries: readers keep the
		// last, which is the same.
		n := min(len(cur.ents), MaxPending-len(s.ents))
		for n > 0 && cur.ents[n-1].end+len(s.buf) > maxPendingBytes {
			n--
		}
		if n <= 0 {
			// Dropped: their buffers are the spare ones now (the spare
			// ones hold what was recorded since, and must not be handed
			// out again while they do).
			clear(cur.ents)
			s.spare = batch{buf: cur.buf[:0], ents: cur.ents[:0]}
			return fmt.Errorf("records: %w", err)
		}
		// (the entries are contiguous in order from the buffer's start:
		// the bytes of those dropped go with them)
		shift := cur.ents[n-1].end
		buf := append(cur.buf[:shift], s.buf...)
		ents := append(cur.ents[:n:n], s.ents...)
		for i := n; i < len(ents); i++ {
			ents[i].off += shift
			ents[i].end += shift
		}
		s.buf, s.ents = buf, ents
		return fmt.Errorf("records: %w", err)
	}
	clear(cur.ents) // drop the ids for the collector
	s.spare = batch{buf: cur.buf[:0], ents: cur.ents[:0]}
	return nil
}

// pendingLog is the entries one flush appends to one log, and how long
// (ms) the log must be kept for them.
type pendingLog struct {
	key  string
	buf  []byte
	keep int64
}

// Close flushes and stops the store.
func (s *Store) Close(ctx context.Context) error {
	s.once.Do(func() { close(s.done) })
	<-s.closed
	return s.Flush(ctx)
}

func (s *Store) read(ctx context.Context, id string) (worker, queued *blob, err error) {
	dec := func(data []byte) *blob {
		if data == nil {
			return nil
		}
		var b blob
		if b.decode(data) != nil {
			return nil
		}
		return &b
	}
	if loc := s.locate(id, false); loc.logged {
		log, err := s.rdb.Get(ctx, loc.key).Bytes()
		if errors.Is(err, redis.Nil) {
			return nil, nil, nil
		}
		if err != nil {
			return nil, nil, fmt.Errorf("records: %w", err)
		}
		w, q, err := scanLog(log, id)
		if err != nil {
			return nil, nil, fmt.Errorf("%w (%s)", err, loc.key)
		}
		return dec(w), dec(q), nil
	}
	pipe := s.rdb.Pipeline()
	cmds := []*redis.StringCmd{pipe.Get(ctx, s.ownKey(id, false)), pipe.Get(ctx, s.ownKey(id, true))}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, nil, fmt.Errorf("records: %w", err)
	}
	get := func(cmd *redis.StringCmd) []byte {
		data, err := cmd.Bytes()
		if err != nil {
			return nil
		}
		return data
	}
	return dec(get(cmds[0])), dec(get(cmds[1])), nil
}

// producerLag bounds how long after a job's id was made its record may
// still be on its way from the process that enqueued it: producers flush
// every 20 ms; a slow round trip and the clocks of two hosts take the
// rest.
const producerLag = time.Second

// Get reads a record; job.ErrNotFound when none is kept. A job with a
// time-ordered id (a ULID) made less than a second ago may have been
// enqueued a moment ago by another process whose batch of records has not
// reached Redis yet: Get waits for its record until the id is a second old
// (at most a second).
func (s *Store) Get(ctx context.Context, id string) (job.Record, error) {
	var deadline time.Time
	for {
		w, q, err := s.read(ctx, id)
		if err != nil {
			return job.Record{}, err
		}
		if w != nil || q != nil {
			return merged(id, w, q), nil
		}
		if deadline.IsZero() {
			ms, ok := ulidTime(id)
			if !ok {
				break
			}
			// (an id from a clock ahead of ours waits no longer)
			deadline = time.UnixMilli(min(int64(ms), time.Now().UnixMilli())).Add(producerLag)
		}
		wait := time.Until(deadline)
		if wait <= 0 {
			break
		}
		if s.missed != nil {
			s.missed(id)
		}
		t := time.NewTimer(min(wait, 50*time.Millisecond))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return job.Record{}, ctx.Err()
		}
	}
	return job.Record{}, fmt.Errorf("%w: %s", job.ErrNotFound, id)
}

// merged makes the record of a job from its two sides (either may be nil).
func merged(id string, w, q *blob) job.Record {
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
	return rec
}

// Set applies an update to the workers' side synchronously (operations:
// requeue, cancel), after whatever is pending.
func (s *Store) Set(ctx context.Context, u Update) error {
	if err := s.Flush(ctx); err != nil {
		return err
	}
	w, q, err := s.read(ctx, u.ID)
	if err != nil {
		return err
	}
	cur := Update{ID: u.ID}
	var after int64 // the update time of the side this one replaces
	if w != nil {
		cur, after = w.update(u.ID), w.UpdatedAt
	}
	cur.merge(&u)
	cur.Queued = ""
	b := cur.blob(time.Now())
	s.mu.Lock()
	b.UpdatedAt = max(b.UpdatedAt, s.lastAt)
	s.lastAt = b.UpdatedAt
	s.mu.Unlock()
	// Later than what it replaces, whatever this host's clock says (and
	// without taking this process's other records ahead with it).
	b.UpdatedAt = max(b.UpdatedAt, after+1)
	data := b.appendTo(nil)
	// Kept as long as the job's ETA asks, on either side: a cancelled
	// job's side outlives the producer's that waits with it.
	now := time.Now()
	keep := s.keep(cur.ETA, now)
	if q != nil {
		keep = max(keep, s.keep(wire.FromMillis(q.ETA), now))
	}
	loc := s.locate(u.ID, false)
	if !loc.logged {
		err = keyScript.Run(ctx, s.rdb, []string{loc.key}, data, keep, b.UpdatedAt, lateBy.Milliseconds()).Err()
	} else {
		err = logScript.Run(ctx, s.rdb, []string{loc.key}, appendEntry(nil, u.ID, false, data), keep).Err()
	}
	if err != nil {
		return fmt.Errorf("records: %w", err)
	}
	return nil
}

// IsUnavailable reports a connection-level Redis failure.
func IsUnavailable(err error) bool {
	return err != nil && !errors.Is(err, redis.Nil) && !errors.Is(err, job.ErrNotFound)
}
