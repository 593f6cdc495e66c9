package bindings

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/connector-go/connector/job"
)

// Lock is a lease on a resource, held until Release or until its TTL runs
// out without an Extend. Only the holder (the one who knows the random
// token) can extend or release it.
//
// A Redis lock is an efficiency lock: it keeps two workers from doing the
// same work at once almost always, not always (a paused process can outlive
// its lease; a failover can lose it). Effects must stay safe without it;
// [Lock.Token] helps writers that can compare fencing tokens.
type Lock struct {
	s        *Store
	resource string
	holder   string // key
	value    string // random token
	fence    int64
}

// acquireScript takes the lease if free and increments the fencing counter.
// KEYS: holder, fence. ARGV: random token, ttl ms.
// Reply: {1, fence} acquired; {0, pttl} held elsewhere.
// A retried acquire with the same token (reply lost on the network) finds
// its own lease and returns the same fence (or a new one, should the
// counter have been deleted by hand: a reply must always carry a fence).
var acquireScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  local f = tonumber(redis.call('GET', KEYS[2]))
  if not f then f = redis.call('INCR', KEYS[2]) end
  return {1, f}
end
if cur then return {0, redis.call('PTTL', KEYS[1])} end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return {1, redis.call('INCR', KEYS[2])}
`)

// extendScript: compare-and-extend. Reply 1 extended, 0 not the holder.
var extendScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
`)

// releaseScript: compare-and-delete. Reply 1 released, 0 not the holder.
var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
`)

// Lock takes a lease of ttl on resource. When another holder has it, the
// error satisfies errors.Is(err, [ErrLocked]), wraps a [*LockedError], and
// is a job.RetryableError with NoCount set: returned from a job handler, it
// makes the job run again later without counting the attempt (the seed's
// advisory_lock_or_retry). A holder that dies leaves the resource locked
// for at most ttl.
//
// Pick ttl longer than the work normally takes and, for long work, call
// [Lock.Extend] every ttl/3 or so; a short ttl frees a crashed holder's
// resources sooner. If Redis cannot be reached the error is [ErrUnavailable]
// (a counted retry, like any outage). Should the reply of a successful Lock
// be lost, the lease is held by nobody who knows its token: the resource
// stays locked until ttl runs out and the job meanwhile retries uncounted.
func (s *Store) Lock(ctx context.Context, resource string, ttl time.Duration) (_ *Lock, err error) {
	if resource == "" {
		return nil, fmt.Errorf("%w: lock needs a resource name", ErrInvalid)
	}
	ms, err := ttlMillis(ttl)
	if err != nil {
		return nil, err
	}
	defer s.observe(ctx, opLock, s.start(), &err)
	var raw [16]byte
	_, _ = rand.Read(raw[:]) // crypto/rand.Read never fails (Go >= 1.24)
	token := hex.EncodeToString(raw[:])
	holder, fence := s.lockKeys(resource)
	res, err := acquireScript.Run(ctx, s.rdb, []string{holder, fence}, token, ms).Int64Slice()
	if err != nil {
		return nil, wrap(ctx, "lock "+resource, err)
	}
	if len(res) != 2 {
		return nil, fmt.Errorf("bindings: lock %s: unexpected reply %v", resource, res)
	}
	if res[0] == 0 {
		le := &LockedError{Resource: resource, Remaining: time.Duration(max(res[1], 0)) * time.Millisecond}
		return nil, job.RetryNoCount(le, s.retryDelay)
	}
	return &Lock{s: s, resource: resource, holder: holder, value: token, fence: res[1]}, nil
}

// Resource returns the locked resource name.
func (l *Lock) Resource() string { return l.resource }

// Token returns the fencing token of this lease: it strictly increases with
// every successful Lock of the same resource, so a writer that remembers
// the highest token it has seen can reject a stale holder's late write.
func (l *Lock) Token() int64 { return l.fence }

// Extend resets the lease to ttl from now. It returns [ErrLockLost] when
// the lease has expired or another holder has the resource.
func (l *Lock) Extend(ctx context.Context, ttl time.Duration) (err error) {
	ms, err := ttlMillis(ttl)
	if err != nil {
		return err
	}
	defer l.s.observe(ctx, opExtend, l.s.start(), &err)
	n, err := extendScript.Run(ctx, l.s.rdb, []string{l.holder}, l.value, ms).Int64()
	if err != nil {
		return wrap(ctx, "extend lock "+l.resource, err)
	}
	if n == 0 {
		return fmt.Errorf("bindings: extend lock %s: %w", l.resource, ErrLockLost)
	}
	return nil
}

// Release ends the lease. It returns [ErrLockLost] when the lease had
// already expired (another holder may have run meanwhile); it never
// releases another holder's lease.
func (l *Lock) Release(ctx context.Context) (err error) {
	defer l.s.observe(ctx, opRelease, l.s.start(), &err)
	n, err := releaseScript.Run(ctx, l.s.rdb, []string{l.holder}, l.value).Int64()
	if err != nil {
		return wrap(ctx, "release lock "+l.resource, err)
	}
	if n == 0 {
		return fmt.Errorf("bindings: release lock %s: %w", l.resource, ErrLockLost)
	}
	return nil
}

// Acquire is [Store.Lock] for code that only needs to release:
//
//	release, err := store.Acquire(ctx, "shop-eu/product/ext-42", time.Minute)
//	if err != nil {
//		return err // held elsewhere: retried without counting the attempt
//	}
//	defer release(context.WithoutCancel(ctx))
func (s *Store) Acquire(ctx context.Context, resource string, ttl time.Duration) (release func(context.Context) error, err error) {
	l, err := s.Lock(ctx, resource, ttl)
	if err != nil {
		return nil, err
	}
	return l.Release, nil
}

func ttlMillis(ttl time.Duration) (int64, error) {
	ms := ttl.Milliseconds()
	if ms <= 0 {
		return 0, fmt.Errorf("%w: lock TTL must be at least 1ms, got %s", ErrInvalid, ttl)
	}
	return ms, nil
}
