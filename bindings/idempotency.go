package bindings

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Completed reports whether the unit of work identified by key has been
// marked completed, and with which result. A redelivered job calls it first
// and skips the work when done is true.
func (s *Store) Completed(ctx context.Context, key string) (result string, done bool, err error) {
	defer s.observe(ctx, opCompleted, s.start(), &err)
	v, err := s.rdb.Get(ctx, s.doneKey(key)).Result()
	if errors.Is(err, redis.Nil) {
		return "", false, nil
	}
	if err != nil {
		return "", false, wrap(ctx, "completed "+key, err)
	}
	return v, true, nil
}

// MarkCompleted records that the unit of work identified by key completed
// with result, for ttl (ttl <= 0: kept until deleted). The first completion
// wins: marking a key already marked keeps the first result and its TTL and
// is not an error, so the record holds one result however many runs race;
// a run that wants the result the record kept reads it with
// [Store.Completed].
//
// Mark after the effect is durable; a crash between the effect and the mark
// makes the work run again, so the effect itself must be idempotent (a
// [Binder.Bind] is).
func (s *Store) MarkCompleted(ctx context.Context, key, result string, ttl time.Duration) (err error) {
	if key == "" {
		return fmt.Errorf("%w: empty idempotency key", ErrInvalid)
	}
	defer s.observe(ctx, opMarkCompleted, s.start(), &err)
	if ttl < 0 {
		ttl = 0
	}
	if err := s.rdb.SetNX(ctx, s.doneKey(key), result, ttl).Err(); err != nil {
		return wrap(ctx, "mark completed "+key, err)
	}
	return nil
}
