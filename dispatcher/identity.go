package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/redis/go-redis/v9"
)

// identityTTL bounds how long an identity key can outlive a lost job (a
// safety net: workers free keys when a job starts, dies or is cancelled).
const identityTTL = 30 * 24 * time.Hour

// claimIdentity atomically either registers id under key or returns the id
// already registered: SET NX in one script, so 100 concurrent enqueues of
// one key create exactly one job.
var claimScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if cur then return {0, cur} end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return {1, ARGV[1]}
`)

// ReleaseScript deletes an identity key only if it still names the job.
var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`)

func (d *Dispatcher) identityKey(key string) string { return d.names.RedisKey("identity", key) }

// claimIdentity claims key for job id, due at eta (zero: now): the key
// outlives the job's wait for its ETA by identityTTL.
func (d *Dispatcher) claimIdentity(ctx context.Context, key, id string, eta time.Time) (string, bool, error) {
	if d.rdb == nil {
		return "", false, fmt.Errorf("dispatcher: identity key %q: %w", key, ErrNoRedis)
	}
	ttl := identityTTL
	if wait := time.Until(eta); wait > 0 {
		// Saturating: a wait of centuries would overflow the sum, and
		// Redis refuses a negative expiry.
		if wait > math.MaxInt64-ttl {
			wait = math.MaxInt64 - ttl
		}
		ttl += wait
	}
	res, err := claimScript.Run(ctx, d.rdb, []string{d.identityKey(key)}, id, ttl.Milliseconds()).Slice()
	if err != nil {
		var reply redis.Error
		if !errors.As(err, &reply) {
			// The claim may have run and its answer been lost (a
			// deadline, a broken connection): the job is not published,
			// so the key must not name it. The release deletes it only
			// if it names this job.
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			d.releaseIdentity(rctx, key, id)
			cancel()
		}
		return "", false, fmt.Errorf("dispatcher: identity key: %w", err)
	}
	claimed, _ := res[0].(int64)
	existing, _ := res[1].(string)
	return existing, claimed == 1, nil
}

func (d *Dispatcher) releaseIdentity(ctx context.Context, key, id string) {
	if d.rdb == nil {
		return
	}
	if err := releaseScript.Run(ctx, d.rdb, []string{d.identityKey(key)}, id).Err(); err != nil {
		d.log.Warn("identity key not released", zapKey(key), zapErr(err))
	}
}

// identityOf reads the identity key a job was enqueued with (kept in its
// record).
func (d *Dispatcher) identityOf(ctx context.Context, id string) string {
	rec, err := d.rec.Get(ctx, id)
	if err != nil {
		return ""
	}
	return rec.IdentityKey
}
