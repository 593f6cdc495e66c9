package bindings

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Binder maps the external ids of one backend instance and one model to
// local ids and back. Get one from [Store.Binder]; it is safe for
// concurrent use.
type Binder struct {
	s              *Store
	backend, model string
	fwd, rev, sync string // keys sharing one hash slot
}

// batchChunk bounds the fields of one HMGET: larger batches are split into
// several commands sent in one pipeline (still one round trip), so that one
// call never blocks Redis for long.
const batchChunk = 1000

// bindScript checks both directions and writes both, atomically.
// KEYS: forward hash, reverse hash, sync hash. ARGV: external id, local id,
// sync time. Reply: {0} bound (or refreshed); {1, boundLocal, boundExternal}
// conflict, "" where that side is free or already agrees.
var bindScript = redis.NewScript(`
local ext, loc = ARGV[1], ARGV[2]
local boundLoc = redis.call('HGET', KEYS[1], ext)
local boundExt = redis.call('HGET', KEYS[2], loc)
local c1, c2 = '', ''
if boundLoc and boundLoc ~= loc then c1 = boundLoc end
if boundExt and boundExt ~= ext then c2 = boundExt end
if c1 ~= '' or c2 ~= '' then return {1, c1, c2} end
redis.call('HSET', KEYS[1], ext, loc)
redis.call('HSET', KEYS[2], loc, ext)
redis.call('HSET', KEYS[3], ext, ARGV[3])
return {0}
`)

// unbindScript removes a binding in both directions. Reply: 1 removed, 0 none.
var unbindScript = redis.NewScript(`
local ext = ARGV[1]
local loc = redis.call('HGET', KEYS[1], ext)
redis.call('HDEL', KEYS[3], ext)
if not loc then return 0 end
redis.call('HDEL', KEYS[1], ext)
if redis.call('HGET', KEYS[2], loc) == ext then redis.call('HDEL', KEYS[2], loc) end
return 1
`)

// syncLayout is how sync dates are stored: RFC 3339 in UTC with all nine
// digits of the nanoseconds, so that the stored strings sort as the dates
// (readers in other languages compare them). time.RFC3339Nano drops the
// trailing zeros: "...:09Z" sorted after "...:09.5Z". Dates are read with
// syncParse, which accepts both (dates stored before the change too).
const (
	syncLayout = "2006-01-02T15:04:05.000000000Z07:00"
	syncParse  = time.RFC3339Nano
)

// Backend returns the backend instance id the binder serves.
func (b *Binder) Backend() string { return b.backend }

// Model returns the model the binder serves.
func (b *Binder) Model() string { return b.model }

// ToInternal returns the local id bound to externalID.
func (b *Binder) ToInternal(ctx context.Context, externalID string) (localID string, found bool, err error) {
	return b.get(ctx, "to internal", opToInternal, b.fwd, externalID)
}

// ToExternal returns the external id bound to localID.
func (b *Binder) ToExternal(ctx context.Context, localID string) (externalID string, found bool, err error) {
	return b.get(ctx, "to external", opToExternal, b.rev, localID)
}

// get is one HGET; op names it in errors, mop in metrics.
func (b *Binder) get(ctx context.Context, op, mop, key, field string) (v string, found bool, err error) {
	defer b.s.observe(ctx, mop, b.s.start(), &err)
	v, err = b.s.rdb.HGet(ctx, key, field).Result()
	if errors.Is(err, redis.Nil) {
		return "", false, nil
	}
	if err != nil {
		return "", false, wrap(ctx, op, err)
	}
	return v, true, nil
}

// Bind binds externalID to localID with syncedAt as the sync date, in both
// directions at once. Binding a pair that is already bound is idempotent and
// sets the sync date to syncedAt (the last writer's date wins, so a late,
// stale import makes the next import run again rather than be skipped). If
// externalID is bound to another local id, or localID to another external
// id, Bind changes nothing and returns a [*ConflictError].
//
// The check and the write are one Lua script, so Redis itself keeps the
// mapping one-to-one however many workers bind at once; there is no window
// between a lookup and a write for another process to slip into. Because a
// Bind of the same pair is idempotent, retrying one whose reply was lost (an
// [ErrUnavailable] error) is always safe.
//
// An importer that raced another one for the same external record creates
// no duplicate: its Bind fails with a [*ConflictError] whose BoundLocalID is
// the record the winner created, which it should reuse.
func (b *Binder) Bind(ctx context.Context, externalID, localID string, syncedAt time.Time) (err error) {
	if externalID == "" || localID == "" {
		return fmt.Errorf("%w: bind needs an external id and a local id (got %q, %q)", ErrInvalid, externalID, localID)
	}
	at := syncedAt.UTC()
	if y := at.Year(); y < 0 || y > 9999 {
		// RFC 3339 has four-digit years: such a date would be stored and
		// never read back (9999-12-31 west of UTC is in year 10000).
		return fmt.Errorf("%w: bind %s/%s %q: sync date %s is outside the years 0000-9999 in UTC", ErrInvalid, b.backend, b.model, externalID, syncedAt)
	}
	defer b.s.observe(ctx, opBind, b.s.start(), &err)
	res, err := bindScript.Run(ctx, b.s.rdb, []string{b.fwd, b.rev, b.sync},
		externalID, localID, at.Format(syncLayout)).Slice()
	if err != nil {
		return wrap(ctx, "bind", err)
	}
	// Read the reply strictly: anything but the two documented shapes is an
	// error, never a silent success.
	switch code := firstInt(res); {
	case code == 0 && len(res) == 1:
		return nil
	case code == 1 && len(res) == 3:
		ce := &ConflictError{Backend: b.backend, Model: b.model, ExternalID: externalID, LocalID: localID}
		ce.BoundLocalID, _ = res[1].(string)
		ce.BoundExternalID, _ = res[2].(string)
		return ce
	}
	return fmt.Errorf("bindings: bind %s/%s %q: unexpected script reply %v", b.backend, b.model, externalID, res)
}

// firstInt returns the integer that starts a script reply, or -1.
func firstInt(res []any) int64 {
	if len(res) > 0 {
		if n, ok := res[0].(int64); ok {
			return n
		}
	}
	return -1
}

// Unbind removes the binding of externalID in both directions, with its
// sync date. Unbinding an id that is not bound is not an error.
func (b *Binder) Unbind(ctx context.Context, externalID string) (err error) {
	defer b.s.observe(ctx, opUnbind, b.s.start(), &err)
	if err := unbindScript.Run(ctx, b.s.rdb, []string{b.fwd, b.rev, b.sync}, externalID).Err(); err != nil {
		return wrap(ctx, "unbind", err)
	}
	return nil
}

// SyncDate returns when the binding of externalID was last synced.
func (b *Binder) SyncDate(ctx context.Context, externalID string) (t time.Time, found bool, err error) {
	v, found, err := b.get(ctx, "sync date", opSyncDate, b.sync, externalID)
	if err != nil || !found {
		return time.Time{}, false, err
	}
	t, err = time.Parse(syncParse, v)
	if err != nil {
		return time.Time{}, false, fmt.Errorf("bindings: sync date of %s/%s %q: %w", b.backend, b.model, externalID, err)
	}
	return t, true, nil
}

// ToInternalMany looks up many external ids in one round trip: one HMGET
// for up to 1,000 ids, several HMGETs in one pipeline beyond that. Ids that
// are not bound are absent from the map; duplicates are fine. Prefer it to
// a loop of [Binder.ToInternal] whenever a job handles many records: a
// lookup costs a round trip, so a batch of 1,000 is about 1,000 times
// cheaper.
func (b *Binder) ToInternalMany(ctx context.Context, externalIDs []string) (map[string]string, error) {
	return b.getMany(ctx, "to internal many", opToInternalMany, b.fwd, externalIDs)
}

// ToExternalMany looks up many local ids in one round trip, as
// [Binder.ToInternalMany] does. Ids that are not bound are absent from the
// map.
func (b *Binder) ToExternalMany(ctx context.Context, localIDs []string) (map[string]string, error) {
	return b.getMany(ctx, "to external many", opToExternalMany, b.rev, localIDs)
}

// SyncDateMany returns the sync dates of many external ids in one round
// trip, as [Binder.ToInternalMany] does: a batch importer can tell which of
// a page of records changed since their last sync without one lookup each.
// Ids that are not bound are absent from the map.
func (b *Binder) SyncDateMany(ctx context.Context, externalIDs []string) (map[string]time.Time, error) {
	raw, err := b.getMany(ctx, "sync date many", opSyncDateMany, b.sync, externalIDs)
	if err != nil {
		return nil, err
	}
	out := make(map[string]time.Time, len(raw))
	for ext, v := range raw {
		t, err := time.Parse(syncParse, v)
		if err != nil {
			return nil, fmt.Errorf("bindings: sync date of %s/%s %q: %w", b.backend, b.model, ext, err)
		}
		out[ext] = t
	}
	return out, nil
}

// getMany is one HMGET, or a pipeline of them; op names it in errors, mop
// in metrics (one observation per call, however many commands).
func (b *Binder) getMany(ctx context.Context, op, mop, key string, ids []string) (out map[string]string, err error) {
	out = make(map[string]string, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	defer b.s.observe(ctx, mop, b.s.start(), &err)
	if len(ids) <= batchChunk {
		var vals []any
		vals, err = b.s.rdb.HMGet(ctx, key, ids...).Result()
		if err != nil {
			return nil, wrap(ctx, op, err)
		}
		collect(out, ids, vals)
		return out, nil
	}
	pipe := b.s.rdb.Pipeline()
	cmds := make([]*redis.SliceCmd, 0, (len(ids)+batchChunk-1)/batchChunk)
	for i := 0; i < len(ids); i += batchChunk {
		cmds = append(cmds, pipe.HMGet(ctx, key, ids[i:min(i+batchChunk, len(ids))]...))
	}
	if _, err = pipe.Exec(ctx); err != nil {
		return nil, wrap(ctx, op, err)
	}
	for i, c := range cmds {
		collect(out, ids[i*batchChunk:min((i+1)*batchChunk, len(ids))], c.Val())
	}
	return out, nil
}

func collect(out map[string]string, ids []string, vals []any) {
	for i, v := range vals {
		if s, ok := v.(string); ok && i < len(ids) {
			out[ids[i]] = s
		}
	}
}
