package worker

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/connector-go/connector/internal/channels"
	"github.com/connector-go/connector/internal/telemetry"
	"github.com/connector-go/connector/internal/wire"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// The scheduler of one worker process.
//
// Every configured channel has one durable consumer per priority band (or a
// single one, MaxAckPending 1, when sequential). Pullers fetch into a local
// queue ordered by band; runners take the best job. A job whose channel
// chain has a capacity or a throttle must first take a slot in Redis (one
// script over the whole chain, so a child's jobs count against its
// parents): if none is free, the job waits in its channel's blocked list,
// under heartbeat, and its band's puller stops pulling. Blocked jobs of a
// better band leave a "wants" mark that keeps worse bands of the channel
// from taking a freed slot anywhere in the fleet. Slots are leases (AckWait)
// renewed with the heartbeats: a dead worker's slots expire with its jobs'
// leases.

// chanState is one configured channel in this process.
type chanState struct {
	ch      channels.Channel
	chain   []channels.Channel // nearest first, limited ones matter
	limited bool
	mu      sync.Mutex
	blocked [channels.Bands][]*item
	looping bool // a blockedLoop runs for this channel

	capped []string // the channels of chain with a capacity
	freed  wakeup   // a slot of one of them was released
	slots  *slots   // the worker's (nil without Redis): for drainBlocked
}

// newChanState is the state of a configured channel ch.
func newChanState(chans *channels.Config, ch channels.Channel) *chanState {
	cs := &chanState{ch: ch, chain: chans.Chain(ch.Name), limited: chans.Limited(ch.Name)}
	for _, c := range cs.chain {
		if c.Capacity > 0 {
			cs.capped = append(cs.capped, c.Name)
		}
	}
	return cs
}

// item is a job received and not yet finished.
type item struct {
	msg       jetstream.Msg
	received  time.Time
	meta      *jetstream.MsgMetadata
	env       *wire.Envelope // nil when bad
	bad       error          // not a JetStream message or not a valid envelope
	handbacks int            // deliveries of this message handed back unrun
	settled   atomic.Bool    // acked, nak'ed or terminated: nothing more to say

	// admitted: decoded and checked against the cancel tombstones; jobID
	// is then the id its cancel tombstone would have ("" for a periodic
	// firing or a bad message), never written again. fate: whether it
	// starts or is dropped as cancelled, decided once (fateOpen until then).
	admitted atomic.Bool
	jobID    string
	fate     atomic.Int32

	// While the handler runs, run is its message: the "started" record is
	// written only for jobs still running at the next records tick
	// (startedRecords), so a short job writes one record, not two.
	running       atomic.Bool // its handler has begun
	runMu         sync.Mutex
	run           *Message
	startedLogged bool

	// In the worker's inflight set (its lock guards these).
	held       bool
	prev, next *item

	ch   *chanState
	band int
	// token names its channel slot lease: set when the item is made (for a
	// limited channel) and never changed, so the heartbeat may read it;
	// slotHeld says whether a slot is held under it; slotMu orders its
	// release against a renewal that takes a lost lease again.
	token    string
	slotHeld atomic.Bool
	slotMu   sync.Mutex
	group    string // consumer name
	spans    *telemetry.ConsumerSpans
	// series: its metrics, from its start on (nil with metrics off)
	series *telemetry.JobSeries

	m        Message       // what its handler gets
	jc       jobCtx        // its log context
	pulled   pulled        // msg, as received
	envelope wire.Envelope // env, when valid
}

// scheduler hands queued jobs to the runners. At most one wake-up is in
// flight: a runner signalled and not yet back in next. A runner that takes
// a job while more wait wakes the next one, so runners come up one after
// the other as long as jobs keep waiting (slow jobs get a runner each, up
// to the concurrency), while short jobs are run by the few runners already
// up instead of flooding the Go run queue with runners that each find one
// job: every runnable runner delays the NATS connection's goroutines. The
// runner woken is the one idle for the shortest time (its stack and cache
// are warm), not the one idle the longest as with sync.Cond.
type scheduler struct {
	mu     sync.Mutex
	ready  []*item                 // slot acquired, run first
	queue  [channels.Bands][]*item // received, by band
	closed bool
	idle   []chan struct{} // runners waiting in next, most recent last
	waking bool            // a runner was signalled and has not run yet
}

func newScheduler() *scheduler { return &scheduler{} }

// An item's fate: decided once, by the runner that starts it or by the
// cancel check that drops it.
const (
	fateOpen int32 = iota
	fateStarted
	fateCancelled
)

// settle claims the right to ack, nak or terminate the job's message: true
// once, for the first caller.
func (it *item) settle() bool { return it.settled.CompareAndSwap(false, true) }

// pushAll queues received jobs for the runners.
func (s *scheduler) pushAll(its []*item) {
	s.mu.Lock()
	for _, it := range its {
		s.queue[it.band] = append(s.queue[it.band], it)
	}
	s.wake()
	s.mu.Unlock()
}

// wake signals an idle runner unless one is already on its way. s.mu held.
func (s *scheduler) wake() {
	if s.waking || len(s.idle) == 0 {
		return
	}
	s.waking = true
	last := len(s.idle) - 1
	s.idle[last] <- struct{}{}
	s.idle[last] = nil
	s.idle = s.idle[:last]
}

// pushReady queues a job whose slot is taken; false once closed.
func (s *scheduler) pushReady(it *item) bool {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return false
	}
	s.ready = append(s.ready, it)
	s.wake()
	s.mu.Unlock()
	return true
}

// remove takes an item out of the queues if it is there (not taken by a
// runner, nor drained at shutdown).
func (s *scheduler) remove(it *item) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if i := slices.Index(s.ready, it); i >= 0 {
		s.ready = slices.Delete(s.ready, i, i+1)
		return true
	}
	q := s.queue[it.band]
	if i := slices.Index(q, it); i >= 0 {
		s.queue[it.band] = slices.Delete(q, i, i+1)
		return true
	}
	return false
}

// next blocks for the best item; nil once closed and empty. wake is the
// runner's own channel (capacity 1), on which it is signalled.
func (s *scheduler) next(wake chan struct{}) *item {
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		if it := s.pop(); it != nil {
			if s.waiting() {
				s.wake() // more work: pass the wake-up on
			}
			return it
		}
		if s.closed {
			return nil
		}
		s.idle = append(s.idle, wake)
		s.mu.Unlock()
		<-wake
		s.mu.Lock()
		s.waking = false
	}
}

func (s *scheduler) pop() *item {
	if len(s.ready) > 0 {
		it := s.ready[0]
		s.ready[0] = nil
		s.ready = s.ready[1:]
		return it
	}
	for b := range s.queue {
		if len(s.queue[b]) > 0 {
			it := s.queue[b][0]
			s.queue[b][0] = nil
			s.queue[b] = s.queue[b][1:]
			return it
		}
	}
	return nil
}

func (s *scheduler) waiting() bool {
	if len(s.ready) > 0 {
		return true
	}
	for b := range s.queue {
		if len(s.queue[b]) > 0 {
			return true
		}
	}
	return false
}

// closeAndDrain closes the scheduler and returns the jobs still queued:
// runners get nil from next once they are done.
func (s *scheduler) closeAndDrain() []*item {
	s.mu.Lock()
	s.closed = true
	out := s.ready
	s.ready = nil
	for b := range s.queue {
		out = append(out, s.queue[b]...)
		s.queue[b] = nil
	}
	for _, c := range s.idle {
		c <- struct{}{}
	}
	s.idle = nil
	s.mu.Unlock()
	return out
}

// slots is the Redis side: fleet-wide channel capacity and throttle, and
// the order in which jobs waiting for a slot get one across the fleet.
type slots struct {
	rdb   redis.UniversalClient
	tag   string // hash tag shared by every key: one slot in Redis Cluster
	lease time.Duration
	me    string // this worker instance, in the waiting sets
}

func (s *slots) slotsKey(ch string) string    { return s.tag + ":slots:" + ch }
func (s *slots) throttleKey(ch string) string { return s.tag + ":throttle:" + ch }
func (s *slots) wantsKey(ch string, band int) string {
	return s.tag + ":wants:" + ch + ":" + strconv.Itoa(band)
}

// waitingKey is the set of the jobs waiting for a slot at a limited
// channel ch of their chain, in band: one place per worker instance and
// job channel (the member "<instance>|<job channel>"), scored by the
// stream sequence of that instance's oldest such job. A job waits at the
// nearest channel of its chain that refused it, so sibling channels
// sharing a parent's capacity wait in the parent's set, in one order.
// waitingExpKey scores the same places by when they stop counting (unless
// renewed).
func (s *slots) waitingKey(ch string, band int) string {
	return s.tag + ":waiting:" + ch + ":" + strconv.Itoa(band)
}
func (s *slots) waitingExpKey(ch string, band int) string {
	return s.tag + ":waitexp:" + ch + ":" + strconv.Itoa(band)
}

// member names this instance's place for the jobs of cs in waiting sets.
func (s *slots) member(cs *chanState) string { return s.me + "|" + cs.ch.Name }

// freedChannel is the Redis Pub/Sub channel on which a released slot is
// announced (the message names the channels whose slot was freed), so
// that the jobs waiting in other processes try at once instead of at
// their next poll.
func (s *slots) freedChannel() string { return s.tag + ":freed" }

// redisNow starts a script that scores leases: now is Redis's clock, in
// ms. Every process of the fleet then measures a lease by one clock,
// whatever its own says (a node whose clock is off would otherwise see
// the others' slots as long expired, and take them). Scripts replicate
// their effects (Redis >= 5), so TIME may precede their writes.
const redisNow = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
`

// probeScript reads Redis's clock as the slot scripts do.
var probeScript = redis.NewScript(redisNow + `return now`)

// check fails when the Redis user may not run what the slot scripts need
// (a least-privilege rule of an older docs/security.md, without TIME):
// the worker would otherwise start and never start a job of a limited
// channel. Any other error (Redis not reachable yet) is left to the
// attempts, which wait for Redis.
func (s *slots) check(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	err := probeScript.Run(ctx, s.rdb, nil).Err()
	// Redis 7.0 says "can't run this command" in a script, later ones NOPERM.
	if err != nil && (strings.Contains(err.Error(), "NOPERM") || strings.Contains(err.Error(), "can't run this command")) {
		return fmt.Errorf("worker: channel slots: the Redis user may not read Redis's clock in a script (TIME: add +time to its ACL rule, docs/security.md): %w", err)
	}
	return nil
}

// waitingTTL: a waiting instance that stops renewing its place (it died,
// or its jobs are gone) stops counting after this long.
const waitingTTL = 2 * time.Second

// acquireScript takes a slot in every limited channel of a chain at once,
// or nothing. Going up the chain from the job's channel, each limited
// channel refuses when it is full, throttled, or when a job of the band
// with a lower stream sequence waits at it, in any process and any
// channel below it (older jobs start first, fleet-wide, siblings
// included). The place of this instance's oldest waiting job of the
// channel (regFail) goes to the set of the channel that refused; when the
// slot is taken, the place stays where it is for the next waiting job
// (regOK), or goes (0).
// Leases and places are scored in Redis's clock (redisNow), not the
// worker's: processes whose clocks disagree still agree on when a lease
// ends.
// KEYS: per chain entry (slots, throttle, waiting, waitexp of the band),
// then the "wants" marks of better bands. ARGV: lease, token, n, then per
// entry (capacity, throttle ms), then member, seq (0: no order), regFail,
// regOK, waiting TTL ms.
var acquireScript = redis.NewScript(redisNow + `
local lease = tonumber(ARGV[1])
local token = ARGV[2]
local n = tonumber(ARGV[3])
local f = 3 + 2*n
local me = ARGV[f+1]
local seq = tonumber(ARGV[f+2])
local regFail = tonumber(ARGV[f+3])
local regOK = tonumber(ARGV[f+4])
local wttl = tonumber(ARGV[f+5])
local lim = {}
for i = 1, n do
  lim[i] = tonumber(ARGV[2 + 2*i]) > 0 or tonumber(ARGV[3 + 2*i]) > 0
end
-- hold: a throttle's wait, during which a refused job does not try again
-- (its place must outlast it).
local hold = 0
local function put(i, v)
  redis.call('ZADD', KEYS[4*i-1], v, me)
  redis.call('ZADD', KEYS[4*i], now + hold + wttl, me)
end
local function drop(i)
  redis.call('ZREM', KEYS[4*i-1], me)
  redis.call('ZREM', KEYS[4*i], me)
end
-- keep rescores the place where it is (a release may have copied it one
-- channel up); false if it is nowhere.
local function keep(v)
  local found = false
  for i = 1, n do
    if lim[i] and redis.call('ZSCORE', KEYS[4*i-1], me) then
      if v > 0 then put(i, v) else drop(i) end
      found = true
    end
  end
  return found
end
local function refuse(at, r)
  -- A place held for an older job of this instance stays where that job
  -- waits; this job's own place goes to the channel that refused it.
  if regFail == 0 then keep(0) return {0, r} end
  if regFail ~= seq and keep(regFail) then return {0, r} end
  for i = 1, n do
    if lim[i] then
      if i == at then put(i, regFail) else drop(i) end
    end
  end
  return {0, r}
end
-- A slot under this token is one an earlier attempt took whose answer
-- was lost (a timeout): the job does not hold it, and must not wait for
-- it until its lease ends.
for i = 1, n do
  if tonumber(ARGV[2 + 2*i]) > 0 then redis.call('ZREM', KEYS[4*i-3], token) end
end
local first = 0
for i = 1, n do
  if lim[i] then
    if first == 0 then first = i end
    local cap = tonumber(ARGV[2 + 2*i])
    local thr = tonumber(ARGV[3 + 2*i])
    if cap > 0 then
      redis.call('ZREMRANGEBYSCORE', KEYS[4*i-3], '-inf', now)
      if redis.call('ZCARD', KEYS[4*i-3]) >= cap then return refuse(i, i) end
    end
    if thr > 0 then
      local ttl = redis.call('PTTL', KEYS[4*i-2])
      if ttl > 0 then hold = ttl return refuse(i, -ttl) end
    end
    if seq > 0 then
      local wk, ek = KEYS[4*i-1], KEYS[4*i]
      local gone = redis.call('ZRANGEBYSCORE', ek, '-inf', now)
      if #gone > 0 then
        redis.call('ZREM', wk, unpack(gone))
        redis.call('ZREM', ek, unpack(gone))
      end
      local head = redis.call('ZRANGE', wk, 0, 0, 'WITHSCORES')
      if #head > 0 and tonumber(head[2]) < seq then return refuse(i, 0) end
    end
  end
end
for j = 4*n + 1, #KEYS do
  if redis.call('EXISTS', KEYS[j]) == 1 then return refuse(first, 0) end
end
for i = 1, n do
  local cap = tonumber(ARGV[2 + 2*i])
  local thr = tonumber(ARGV[3 + 2*i])
  if cap > 0 then redis.call('ZADD', KEYS[4*i-3], now + lease, token) end
  if thr > 0 then redis.call('SET', KEYS[4*i-2], '1', 'PX', thr) end
end
keep(regOK)
return {1, 0}
`)

// place is what acquire records of this instance's waiting jobs of the
// band: the stream sequence of its oldest if the attempt fails (fail), and
// if it succeeds (ok); 0 for none.
type place struct{ fail, ok uint64 }

// acquire tries to take a slot for a job of band in cs, whose stream
// sequence is seq (0: not ordered). It returns whether it did, and how
// long a throttle asks to wait (0 when capacity is full or an older job
// waits).
func (s *slots) acquire(ctx context.Context, cs *chanState, band int, token string, seq uint64, pl place) (bool, time.Duration, error) {
	keys := make([]string, 0, 4*len(cs.chain)+band)
	args := make([]any, 0, 9+2*len(cs.chain))
	args = append(args, s.lease.Milliseconds(), token, len(cs.chain))
	for _, c := range cs.chain {
		keys = append(keys, s.slotsKey(c.Name), s.throttleKey(c.Name), s.waitingKey(c.Name, band), s.waitingExpKey(c.Name, band))
		args = append(args, c.Capacity, c.Throttle.Milliseconds())
	}
	args = append(args, s.member(cs), seq, pl.fail, pl.ok, waitingTTL.Milliseconds())
	if !cs.ch.Sequential {
		for b := 0; b < band; b++ {
			keys = append(keys, s.wantsKey(cs.ch.Name, b))
		}
	}
	res, err := acquireScript.Run(ctx, s.rdb, keys, args...).Int64Slice()
	if err != nil {
		return false, 0, fmt.Errorf("worker: channel slot: %w", err)
	}
	if res[0] == 1 {
		return true, 0, nil
	}
	if res[1] < 0 {
		return false, time.Duration(-res[1]) * time.Millisecond, nil
	}
	return false, 0, nil
}

// forget takes off the slot sets of cs's chain any slot taken under the
// tokens of jobs that leave their blocked list without starting: an
// attempt whose answer was lost (a timeout) may have taken one, which the
// job does not know it holds and would not give back until its lease
// ends. It reports whether there were any to take off.
func (s *slots) forget(ctx context.Context, cs *chanState, its []*item) bool {
	if s == nil || len(cs.capped) == 0 {
		return false
	}
	tokens := make([]any, 0, len(its))
	for _, it := range its {
		if it.token != "" && !it.slotHeld.Load() {
			tokens = append(tokens, it.token)
		}
	}
	if len(tokens) == 0 {
		return false
	}
	pipe := s.rdb.Pipeline()
	for _, name := range cs.capped {
		pipe.ZRem(ctx, s.slotsKey(name), tokens...)
	}
	_, _ = pipe.Exec(ctx)
	return true
}

// leave removes this instance's place for the jobs of cs from the waiting
// sets of its chain (no job of it waits any more).
func (s *slots) leave(ctx context.Context, cs *chanState) {
	s.leaveBands(ctx, cs, func(int) bool { return true })
}

// leaveBands removes this instance's places for the jobs of cs in the
// bands that match.
func (s *slots) leaveBands(ctx context.Context, cs *chanState, match func(band int) bool) {
	pipe := s.rdb.Pipeline()
	me := s.member(cs)
	for _, c := range cs.chain {
		if !c.Limited() {
			continue
		}
		for b := 0; b < channels.Bands; b++ {
			if match(b) {
				pipe.ZRem(ctx, s.waitingKey(c.Name, b), me)
				pipe.ZRem(ctx, s.waitingExpKey(c.Name, b), me)
			}
		}
	}
	_, _ = pipe.Exec(ctx)
}

// want marks that a job of band waits for a slot of ch. The mark names
// this instance, so that its job's start takes off its own mark only.
func (s *slots) want(ctx context.Context, ch string, band int, ttl time.Duration) {
	s.rdb.Set(ctx, s.wantsKey(ch, band), s.me, ttl)
}

// unwantScript deletes a "wants" mark if it is still the given instance's.
var unwantScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`)

// unwant takes this instance's mark off once its job of band has a slot
// of ch. A mark another instance set meanwhile stays: its job of the band
// still waits (perhaps sleeping out a throttle, past which no later
// attempt of it would set the mark again), and worse bands still wait
// for it.
func (s *slots) unwant(ctx context.Context, ch string, band int) {
	unwantScript.Run(ctx, s.rdb, []string{s.wantsKey(ch, band)}, s.me)
}

// releaseScript gives a job's slots back. Then, at each channel of the
// chain that has room again, the oldest job waiting there in each band
// (its place, while it lasts) also takes a place at the next limited
// channel up: it may start now, and a younger job of a sibling channel
// waiting up there must not take the slot first. Its own next attempt
// puts the place where it belongs. Last, the release is announced on the
// Pub/Sub channel (an announcement refused, to a Redis user without
// Pub/Sub rights, is left out: the others find the slot at their next
// poll).
// KEYS: per limited chain entry (slots, waiting of each band, waitexp of
// each band). ARGV: token, bands, Pub/Sub channel, message, then per entry
// its capacity.
var releaseScript = redis.NewScript(redisNow + `
local token = ARGV[1]
local bands = tonumber(ARGV[2])
local per = 1 + 2*bands
local n = #KEYS / per
for i = 1, n do
  if tonumber(ARGV[4+i]) > 0 then redis.call('ZREM', KEYS[(i-1)*per+1], token) end
end
for i = 1, n-1 do
  local cap = tonumber(ARGV[4+i])
  local base = (i-1)*per
  if cap > 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[base+1], '-inf', now)
    if redis.call('ZCARD', KEYS[base+1]) < cap then
      for b = 1, bands do
        local head = redis.call('ZRANGE', KEYS[base+1+b], 0, 0, 'WITHSCORES')
        if #head > 0 then
          local exp = redis.call('ZSCORE', KEYS[base+1+bands+b], head[1])
          if exp and tonumber(exp) > now then
            redis.call('ZADD', KEYS[base+per+1+b], head[2], head[1])
            redis.call('ZADD', KEYS[base+per+1+bands+b], exp, head[1])
          end
        end
      end
    end
  end
end
redis.pcall('PUBLISH', ARGV[3], ARGV[4])
return 1
`)

// release gives a slot back and announces it to the waiting processes
// (the message names the channels whose slot was freed).
func (s *slots) release(ctx context.Context, cs *chanState, token string) error {
	if len(cs.capped) == 0 {
		return nil // a throttle only: no slot held
	}
	keys := make([]string, 0, len(cs.chain)*(1+2*channels.Bands))
	args := make([]any, 0, 5+len(cs.chain))
	args = append(args, token, channels.Bands, s.freedChannel(), strings.Join(cs.capped, " "))
	for _, c := range cs.chain {
		if !c.Limited() {
			continue
		}
		keys = append(keys, s.slotsKey(c.Name))
		for b := 0; b < channels.Bands; b++ {
			keys = append(keys, s.waitingKey(c.Name, b))
		}
		for b := 0; b < channels.Bands; b++ {
			keys = append(keys, s.waitingExpKey(c.Name, b))
		}
		args = append(args, c.Capacity)
	}
	return releaseScript.Run(ctx, s.rdb, keys, args...).Err()
}

// wakeFor wakes the blocked loops of the channels whose chain includes one
// of names (channels whose slot was released).
func (w *Worker) wakeFor(names []string) {
	for _, cs := range w.states {
		for _, name := range cs.capped {
			if slices.Contains(names, name) {
				cs.freed.signal()
				break
			}
		}
	}
}

// seqOf is the stream sequence of a job (0 if unknown: not ordered).
func seqOf(it *item) uint64 {
	if it.meta == nil {
		return 0
	}
	return it.meta.Sequence.Stream
}

// freshPlace is what a job not blocked yet records on its attempt: on
// failure it joins the band's blocked jobs.
func (cs *chanState) freshPlace(band int, seq uint64) place {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	var oldest uint64
	if q := cs.blocked[band]; len(q) > 0 {
		oldest = seqOf(q[0])
	}
	pl := place{fail: oldest, ok: oldest}
	if seq > 0 && (oldest == 0 || seq < oldest) {
		pl.fail = seq
	}
	return pl
}

// wakeup lets a channel's blocked loop try again at once (a slot was
// released here or announced by another process).
type wakeup struct {
	mu sync.Mutex
	ch chan struct{}
}

// wait returns a channel closed at the next signal.
func (b *wakeup) wait() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ch == nil {
		b.ch = make(chan struct{})
	}
	return b.ch
}

func (b *wakeup) signal() {
	b.mu.Lock()
	if b.ch != nil {
		close(b.ch)
		b.ch = nil
	}
	b.mu.Unlock()
}

// releaseTimeout bounds the wait for a slot's release. The slot is a
// lease that ends anyway (AckWait): a Redis that hangs must not hold up the
// runner, nor the shutdown (runItem's shutdown branch, Run's queued jobs),
// for the client's own timeouts and retries (5s and more each).
const releaseTimeout = 2 * time.Second

// releaseSlot gives back the channel slot the job holds, if it holds one
// (once: the flag is cleared). It outlives the worker's contexts, so that
// slots are given back at shutdown too, but waits releaseTimeout at most:
// go-redis applies a context's deadline to its socket only with
// ContextTimeoutEnabled (not the default), so the release runs on in the
// background, until the client's own timeouts end it.
func (w *Worker) releaseSlot(it *item) error {
	it.slotMu.Lock()
	defer it.slotMu.Unlock()
	if !it.slotHeld.Swap(false) {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), releaseTimeout)
	done := make(chan error, 1)
	go func() {
		defer cancel()
		done <- w.slots.release(ctx, it.ch, it.token)
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("worker: channel slot release: %w", ctx.Err())
	}
}

// renewScript extends slot leases to now + lease in Redis's clock: KEYS
// are slot sets, ARGV the lease in ms, then "XX" (only leases still
// there) or "" (take the lease again), then the token of each key. It
// answers, per key, 1 if the lease was there (or is now), 0 if not.
var renewScript = redis.NewScript(redisNow + `
local ends = now + tonumber(ARGV[1])
local xx = ARGV[2] == 'XX'
local res = {}
for i = 1, #KEYS do
  local tok = ARGV[2+i]
  if xx and not redis.call('ZSCORE', KEYS[i], tok) then
    res[i] = 0
  else
    redis.call('ZADD', KEYS[i], ends, tok)
    res[i] = 1
  end
end
return res
`)

// renew extends the leases of the slots held by running jobs. A lease
// found gone was not renewed in time (Redis was unreachable for longer
// than the lease) and another process may have pruned it and taken the
// slot: the job runs on, so its slot is taken again, even over the
// capacity. The channel then counts every job that runs and starts no
// other until it is back under its capacity; without it, the fleet would
// go on running one job more than the capacity for as long as this one
// runs. It reports how many leases were taken again.
func (s *slots) renew(ctx context.Context, items []*item) (int, error) {
	if len(items) == 0 {
		return 0, nil
	}
	// Per lease: its job (holders), its slot set (keys) and token (args).
	var holders []*item
	keys := make([]string, 0, len(items))
	args := make([]any, 0, 2+len(items))
	args = append(args, s.lease.Milliseconds(), "XX")
	for _, it := range items {
		for _, c := range it.ch.chain {
			if c.Capacity > 0 {
				holders = append(holders, it)
				keys = append(keys, s.slotsKey(c.Name))
				args = append(args, it.token)
			}
		}
	}
	if len(keys) == 0 {
		return 0, nil
	}
	there, err := renewScript.Run(ctx, s.rdb, keys, args...).Int64Slice()
	if err != nil {
		return 0, err
	}
	lost := 0
	for i, it := range holders {
		if there[i] == 1 {
			continue
		}
		// Only while the job holds it: its release may have come first.
		it.slotMu.Lock()
		if it.slotHeld.Load() {
			if err := renewScript.Run(ctx, s.rdb, keys[i:i+1], s.lease.Milliseconds(), "", it.token).Err(); err != nil {
				it.slotMu.Unlock()
				return lost, err
			}
			lost++
		}
		it.slotMu.Unlock()
	}
	return lost, nil
}

// blockedLoop retries the blocked jobs of a channel, best band first and
// oldest (lowest stream sequence) first in a band, until none is left or
// ctx ends. It wakes at once when a slot is released, here or anywhere in
// the fleet, and polls meanwhile.
func (w *Worker) blockedLoop(ctx context.Context, cs *chanState) {
	defer func() {
		// No job of this process waits here any more (or it stops): its
		// place goes, so that no other process waits for it.
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		w.slots.leave(lctx, cs)
		cancel()
	}()
	wait := 25 * time.Millisecond
	for {
		woken := cs.freed.wait() // before the attempt: no release missed
		cs.mu.Lock()
		// Jobs cancelled while they waited (watchCancels) leave the list
		// without taking a slot.
		var dropped []*item
		var emptied [channels.Bands]bool // bands left with no blocked job
		for b := range cs.blocked {
			n := len(cs.blocked[b])
			cs.blocked[b] = slices.DeleteFunc(cs.blocked[b], func(x *item) bool {
				if x.fate.Load() == fateCancelled {
					dropped = append(dropped, x)
					return true
				}
				return false
			})
			emptied[b] = n > 0 && len(cs.blocked[b]) == 0
		}
		cs.mu.Unlock()
		if len(dropped) > 0 {
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			if w.slots.forget(fctx, cs, dropped) {
				w.wakeFor(cs.capped)
			}
			cancel()
		}
		for _, x := range dropped {
			w.dropHeld(x)
		}
		if len(dropped) > 0 {
			// Nothing of this process waits in an emptied band any more: its
			// place there goes, and so does its "wants" mark, which would
			// hold back worse bands fleet-wide until it expired.
			w.slots.leaveBands(ctx, cs, func(b int) bool { return emptied[b] })
			for b, gone := range emptied {
				if gone && b < channels.Bands-1 && !cs.ch.Sequential {
					w.slots.unwant(ctx, cs.ch.Name, b)
				}
			}
		}
		cs.mu.Lock()
		var it *item
		band := -1
		var pl place
		for b := range cs.blocked {
			if q := cs.blocked[b]; len(q) > 0 {
				it, band = q[0], b
				pl.fail = seqOf(it)
				if len(q) > 1 {
					pl.ok = seqOf(q[1])
				}
				break
			}
		}
		if it == nil || ctx.Err() != nil {
			cs.looping = false
			cs.mu.Unlock()
			return
		}
		cs.mu.Unlock()
		if band < channels.Bands-1 && !cs.ch.Sequential {
			w.slots.want(ctx, cs.ch.Name, band, 2*time.Second)
		}
		ok, throttle, err := w.slots.acquire(ctx, cs, band, it.token, seqOf(it), pl)
		if err != nil {
			w.log.Warn("channel slot not acquired; Redis unavailable? retrying", zap.String("channel", cs.ch.Name), telemetry.ErrField(err))
			wait = time.Second
		}
		if ok {
			it.slotHeld.Store(true)
			cs.mu.Lock()
			found := false
			for i, x := range cs.blocked[band] {
				if x == it {
					cs.blocked[band] = append(cs.blocked[band][:i], cs.blocked[band][i+1:]...)
					found = true
					break
				}
			}
			cs.mu.Unlock()
			if !found { // handed back meanwhile (shutdown): give the slot back
				_ = w.releaseSlot(it)
				continue
			}
			if band < channels.Bands-1 && !cs.ch.Sequential {
				w.slots.unwant(ctx, cs.ch.Name, band)
			}
			if !w.sched.pushReady(it) { // shutting down
				w.handBack([]*item{it}, 0)
				_ = w.releaseSlot(it)
				w.credits.give(1)
				return
			}
			wait = 25 * time.Millisecond
			continue
		}
		d := wait
		if throttle > 0 {
			d = throttle
			// The loop sleeps out the throttle: the mark must last as
			// long, or a worse band's job of another process, woken when
			// the throttle ends as this one is, may take the start first
			// (the place lasts as long, for the same reason).
			if band < channels.Bands-1 && !cs.ch.Sequential {
				w.slots.want(ctx, cs.ch.Name, band, throttle+waitingTTL)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(d):
		case <-woken:
		}
		if throttle == 0 && err == nil {
			wait = min(wait*2, 250*time.Millisecond)
		}
	}
}

// block parks an item whose slot is not free, in stream order among its
// band's, and starts the channel's retry loop if it is not running.
func (w *Worker) block(ctx context.Context, it *item) {
	cs := it.ch
	cs.mu.Lock()
	if ctx.Err() != nil {
		// Stopping: the blocked lists are drained (now or soon, under
		// cs.mu, after ctx ended), and a job put there after that would
		// never be handed back: it goes back now, with any slot its
		// attempt took under its token (an answer lost), as drainBlocked
		// does for the blocked jobs.
		cs.mu.Unlock()
		fctx, cancel := context.WithTimeout(context.Background(), time.Second)
		w.slots.forget(fctx, cs, []*item{it})
		cancel()
		w.handBack([]*item{it}, 0)
		w.credits.give(1)
		return
	}
	q := cs.blocked[it.band]
	seq := seqOf(it)
	i := len(q)
	for i > 0 && seqOf(q[i-1]) > seq {
		i--
	}
	// A job of a better band than any blocked so far wakes a running loop:
	// it tries this job first and leaves its "wants" mark now, not after
	// the wait it sleeps (a throttle's, for a worse band's job).
	better := true
	for b := 0; b <= it.band; b++ {
		if len(cs.blocked[b]) > 0 {
			better = false
			break
		}
	}
	cs.blocked[it.band] = slices.Insert(q, i, it)
	start := !cs.looping
	cs.looping = true
	cs.mu.Unlock()
	if !start && better {
		cs.freed.signal()
	}
	if start {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			w.blockedLoop(ctx, cs)
		}()
	}
}

// hasBlocked reports whether a band of a channel has jobs waiting for a slot.
func (cs *chanState) hasBlocked(band int) bool {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if band < 0 {
		for b := range cs.blocked {
			if len(cs.blocked[b]) > 0 {
				return true
			}
		}
		return false
	}
	return len(cs.blocked[band]) > 0
}

// drainBlocked hands every blocked job back (shutdown), with any slot
// taken under its token by an attempt whose answer was lost.
func (cs *chanState) drainBlocked() []*item {
	cs.mu.Lock()
	var out []*item
	for b := range cs.blocked {
		out = append(out, cs.blocked[b]...)
		cs.blocked[b] = nil
	}
	cs.mu.Unlock()
	if len(out) > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		cs.slots.forget(ctx, cs, out)
		cancel()
	}
	return out
}

// consumerSpec is one durable consumer of the jobs stream.
type consumerSpec struct {
	cs    *chanState
	band  int // -1: sequential, all bands
	name  string
	spans *telemetry.ConsumerSpans // nil when not traced

	// An unconfigured channel's (the sweeper's only): its subject, since
	// when the sweeper has seen it empty, and what stops its pullers.
	subject    string
	emptySince time.Time
	stop       context.CancelFunc
	// gone: a puller found the consumer gone (the server removes it once
	// no process pulls on it, also while the subject holds jobs: a puller
	// that waits for credits or for its band's blocked jobs sends no pull
	// requests); the sweeper forgets the spec and makes the consumer again.
	gone atomic.Bool
	// acks: the order its jobs' acks go in (nil: at once).
	acks *ackOrder
	// idle: which of its pullers long-polls it while it is idle.
	idle idlePoll
}

// newSpec makes the spec of a jobs consumer. A consumer without a capacity
// sends its acks in delivery order (ackOrder).
func (w *Worker) newSpec(cs *chanState, band int, name string) *consumerSpec {
	spec := &consumerSpec{cs: cs, band: band, name: name, spans: w.consumerSpans(name)}
	if spec.unlimited() && w.cfg.ackHold > 0 {
		spec.acks = newAckOrder(w.cfg.ackHold, w.cfg.ackSharedFor, sendAck)
	}
	return spec
}

// unlimited tells a consumer whose channel has no capacity, throttle or
// order: it gets several pullers, big batches and its acks in order.
func (spec *consumerSpec) unlimited() bool { return !spec.cs.limited && spec.band >= 0 }

// end stops the pullers of a spec the sweeper forgets; the acks it holds
// go, and those of its jobs still running will go at once.
func (spec *consumerSpec) end() {
	spec.stop()
	if spec.acks != nil {
		spec.acks.close()
	}
}

// closeAckOrders sends the acks still held: Run is about to return.
func (w *Worker) closeAckOrders() {
	for _, spec := range w.specs {
		if spec.acks != nil {
			spec.acks.close()
		}
	}
	for _, spec := range w.dynamic { // the sweeper has ended
		if spec.acks != nil {
			spec.acks.close()
		}
	}
}

// sweep gives unconfigured channels (jobs published for "root.shop.eu"
// when only "root.shop" is configured) consumers of their own, whose jobs
// run under the nearest configured ancestor: its capacity, throttle and
// parents (slots are counted in Redis, whatever consumer a job came from).
// It looks once a second at the subjects holding jobs.
//
// Such a consumer does not outlive its channel's use: once its subject
// has been empty for idleStop, the process stops pulling on it, and the
// server removes it after idleRemove without pull requests from any
// process (InactiveThreshold; the server also waits out the leases of
// jobs delivered and not acked). Every consumer of the jobs stream costs
// every ack (docs/architecture.md, Known limits). A job on the subject
// again gets a consumer (the same, or a new one) within a sweep. Stopping
// is safe because the subject is empty: in a work queue a job stays in
// the stream until acked, so none of its jobs is held anywhere; one that
// arrives as the pullers stop is handed back and taken by the next ones.
func (w *Worker) sweep(ctx context.Context) {
	w.dynamic = map[string]*consumerSpec{}
	w.adoptIdle(ctx)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		if err := w.sweepOnce(ctx); err != nil && ctx.Err() == nil {
			w.log.Debug("channel sweep failed", telemetry.ErrField(err))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (w *Worker) sweepOnce(ctx context.Context) error {
	s, err := w.js.Stream(ctx, w.names.JobsStream())
	if err != nil {
		return err
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(w.names.Prefix+".jobs.>"))
	if err != nil {
		return err
	}
	w.warnConsumers(info.State.Consumers)
	w.stopIdle(info.State.Subjects)
	for subject := range info.State.Subjects {
		channel, band, ok := w.names.ParseJobsSubject(subject)
		if !ok {
			continue
		}
		if _, configured := w.chans.Get(channel); configured {
			continue
		}
		name := w.names.JobsConsumer(channel, band)
		if w.dynamic[name] != nil {
			continue
		}
		cs := w.states[w.chans.Resolve(channel).Name]
		if cs.ch.Sequential {
			continue // the sequential channel's own consumer covers its subtree
		}
		cc := w.jobsConsumer(name, unconfiguredDescription+channel+" (runs under "+cs.ch.Name+")", subject, cs)
		cc.InactiveThreshold = w.cfg.idleRemove
		specBand := band
		_, err := w.js.CreateOrUpdateConsumer(ctx, w.names.JobsStream(), cc)
		if err != nil {
			return fmt.Errorf("consumer %s: %w", name, err)
		}
		spec := w.newSpec(cs, specBand, name)
		spec.subject = subject
		var pctx context.Context
		pctx, spec.stop = context.WithCancel(ctx)
		w.dynamic[name] = spec
		w.log.Info("unconfigured channel runs under its nearest configured ancestor",
			zap.String("channel", channel), zap.String("under", cs.ch.Name), zap.String("consumer", name))
		w.startPullers(pctx, spec)
	}
	return nil
}

// unconfiguredDescription starts the description of the consumers the
// sweeper makes; adoptIdle finds them by it.
const unconfiguredDescription = "connector jobs of unconfigured channel "

// adoptIdle gives the consumers of unconfigured channels made by earlier
// versions, without InactiveThreshold, the removal after idleRemove: once
// no process pulls on them (none does while their subject is empty), the
// server removes them. Those whose subject holds jobs get it anyway when
// the sweeper makes them again.
func (w *Worker) adoptIdle(ctx context.Context) {
	s, err := w.js.Stream(ctx, w.names.JobsStream())
	if err != nil {
		w.log.Debug("consumers of unconfigured channels not listed", telemetry.ErrField(err))
		return
	}
	lister := s.ListConsumers(ctx)
	for ci := range lister.Info() {
		cfg := ci.Config
		if !strings.HasPrefix(cfg.Description, unconfiguredDescription) || cfg.InactiveThreshold != 0 {
			continue
		}
		cfg.InactiveThreshold = w.cfg.idleRemove
		if _, err := w.js.UpdateConsumer(ctx, w.names.JobsStream(), cfg); err != nil {
			w.log.Debug("unconfigured channel's consumer not given its idle removal", zap.String("consumer", ci.Name), telemetry.ErrField(err))
		}
	}
	if err := lister.Err(); err != nil && ctx.Err() == nil {
		w.log.Debug("consumers of unconfigured channels not listed", telemetry.ErrField(err))
	}
}

// stopIdle stops pulling on the consumers of unconfigured channels whose
// subject has been empty for idleStop (subjects: those holding jobs), and
// on those found gone (made again below while their subject holds jobs).
func (w *Worker) stopIdle(subjects map[string]uint64) {
	now := time.Now()
	for name, spec := range w.dynamic {
		if spec.gone.Load() {
			spec.end()
			delete(w.dynamic, name)
			w.log.Info("unconfigured channel's consumer gone; made again if its subject holds jobs", zap.String("consumer", name))
			continue
		}
		if _, held := subjects[spec.subject]; held {
			spec.emptySince = time.Time{}
			continue
		}
		if spec.emptySince.IsZero() {
			spec.emptySince = now
			continue
		}
		if now.Sub(spec.emptySince) < w.cfg.idleStop {
			continue
		}
		spec.end()
		delete(w.dynamic, name)
		w.log.Info("unconfigured channel idle: no longer pulled; the server removes its consumer once no process pulls on it",
			zap.String("consumer", name), zap.Duration("empty_for", now.Sub(spec.emptySince)), zap.Duration("removed_after", w.cfg.idleRemove))
	}
}

// consumersWarnStep: past this many consumers on the jobs stream, and
// each time as many more are added, the sweeper logs a warning.
const consumersWarnStep = 64

// warnConsumers warns when the jobs stream holds many consumers: the
// server checks every ack against each of them (docs/architecture.md,
// Known limits), so every job of every channel pays for them. Called by
// the sweeper only.
func (w *Worker) warnConsumers(n int) {
	if n <= consumersWarnStep || n < w.consumersWarned+consumersWarnStep {
		return
	}
	w.consumersWarned = n
	w.log.Warn("many consumers on the jobs stream: the server checks every ack against each, so every job pays for them; keep channels to tens, or split them across prefixes (docs/architecture.md, Known limits)",
		zap.Int("consumers", n), zap.String("stream", w.names.JobsStream()))
}

// inflightSet holds the jobs this process holds (received, not settled),
// as an intrusive list (adding and removing cost a few pointer writes, no
// hashing, no allocation); the heartbeats walk it.
type inflightSet struct {
	mu   sync.Mutex
	head *item // sentinel-free doubly linked list
	n    int
}

func (s *inflightSet) add(it *item) {
	s.mu.Lock()
	if !it.held {
		it.held, it.prev, it.next = true, nil, s.head
		if s.head != nil {
			s.head.prev = it
		}
		s.head = it
		s.n++
	}
	s.mu.Unlock()
}

// del removes it; removing a job not held is a no-op.
func (s *inflightSet) del(it *item) {
	s.mu.Lock()
	if it.held {
		if it.prev != nil {
			it.prev.next = it.next
		} else {
			s.head = it.next
		}
		if it.next != nil {
			it.next.prev = it.prev
		}
		it.held, it.prev, it.next = false, nil, nil
		s.n--
	}
	s.mu.Unlock()
}

// snapshot lists the jobs held now.
func (s *inflightSet) snapshot() []*item {
	s.mu.Lock()
	items := make([]*item, 0, s.n)
	for it := s.head; it != nil; it = it.next {
		items = append(items, it)
	}
	s.mu.Unlock()
	return items
}
