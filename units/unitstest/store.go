package unitstest

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/connector-go/connector/bindings"
	"github.com/connector-go/connector/job"
	"github.com/connector-go/connector/units"
)

// ErrLocked is the cause of the error Store.Acquire returns for a held lock:
// bindings.ErrLocked, so that code checking for the real store's error
// behaves the same in tests.
var ErrLocked = bindings.ErrLocked

// Store is an in-memory stand-in for bindings.Store: binders per backend
// instance and model, and a locker, with the same errors (a conflicting Bind
// is a *bindings.ConflictError, a held lock a job.RetryNoCount wrapping a
// *bindings.LockedError, a second release bindings.ErrLockLost, empty ids
// bindings.ErrInvalid). Locks do not expire (tests release them). The zero
// value is an empty store, ready to use.
type Store struct {
	mu       sync.Mutex
	binders  map[[2]string]*Binder
	locks    map[string]time.Duration // held resource -> the holder's ttl
	acquired map[string]int
}

// NewStore returns an empty store.
func NewStore() *Store {
	return &Store{binders: map[[2]string]*Binder{}, locks: map[string]time.Duration{}, acquired: map[string]int{}}
}

// Binder returns the binder of backendID and model (fits units.Env.Binders).
func (s *Store) Binder(backendID, model string) units.Binder { return s.MemBinder(backendID, model) }

// MemBinder is Binder with its concrete type, to inspect bindings.
func (s *Store) MemBinder(backendID, model string) *Binder {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := [2]string{backendID, model}
	b, ok := s.binders[k]
	if !ok {
		if s.binders == nil {
			s.binders = map[[2]string]*Binder{}
		}
		b = &Binder{backend: backendID, model: model, toLocal: map[string]string{}, toExt: map[string]string{}, synced: map[string]time.Time{}}
		s.binders[k] = b
	}
	return b
}

// lockRetryDelay is the delay of the job.RetryNoCount a held lock returns:
// bindings.Store's default (bindings.WithLockRetryDelay).
const lockRetryDelay = time.Second

// Acquire implements units.Locker: a call with an ended ctx is ctx's
// error, as for every Binder method; a held lock is a job.RetryNoCount error
// (after 1 s) wrapping a *bindings.LockedError (ErrLocked), as
// bindings.Store gives by default. A TTL under 1 ms is bindings.ErrInvalid.
// Releasing twice returns bindings.ErrLockLost the second time.
func (s *Store) Acquire(ctx context.Context, resource string, ttl time.Duration) (func(context.Context) error, error) {
	if err := ended(ctx, "lock"); err != nil {
		return nil, err
	}
	if resource == "" {
		return nil, fmt.Errorf("%w: lock needs a resource name", bindings.ErrInvalid)
	}
	if ttl < time.Millisecond { // the real store counts in milliseconds
		return nil, fmt.Errorf("%w: lock TTL must be at least 1ms, got %s", bindings.ErrInvalid, ttl)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if held, ok := s.locks[resource]; ok {
		return nil, job.RetryNoCount(&bindings.LockedError{Resource: resource, Remaining: held}, lockRetryDelay)
	}
	if s.locks == nil {
		s.locks, s.acquired = map[string]time.Duration{}, map[string]int{}
	}
	s.locks[resource] = ttl
	s.acquired[resource]++
	released := false
	return func(context.Context) error {
		s.mu.Lock()
		defer s.mu.Unlock()
		if released {
			return fmt.Errorf("unitstest: release lock %s: %w", resource, bindings.ErrLockLost)
		}
		released = true
		delete(s.locks, resource)
		return nil
	}, nil
}

// Held reports whether resource is locked.
func (s *Store) Held(resource string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.locks[resource]
	return ok
}

// Acquired returns how many times resource was locked.
func (s *Store) Acquired(resource string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.acquired[resource]
}

// Binder is an in-memory units.Binder.
type Binder struct {
	backend string
	model   string
	mu      sync.Mutex
	toLocal map[string]string
	toExt   map[string]string
	synced  map[string]time.Time
}

// ToInternal implements units.Binder.
func (b *Binder) ToInternal(ctx context.Context, externalID string) (string, bool, error) {
	if err := ended(ctx, "to internal"); err != nil {
		return "", false, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	id, ok := b.toLocal[externalID]
	return id, ok, nil
}

// ToExternal implements units.Binder.
func (b *Binder) ToExternal(ctx context.Context, localID string) (string, bool, error) {
	if err := ended(ctx, "to external"); err != nil {
		return "", false, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	id, ok := b.toExt[localID]
	return id, ok, nil
}

// Bind implements units.Binder. Binding a bound pair again sets its sync
// date; binding an id already bound to another partner changes nothing and
// returns a *bindings.ConflictError (bindings.ErrConflict). SyncDate reads
// the date back in UTC, as bindings.Binder does; a date outside the years
// 0000-9999 in UTC is bindings.ErrInvalid.
func (b *Binder) Bind(ctx context.Context, externalID, localID string, syncedAt time.Time) error {
	if err := ended(ctx, "bind"); err != nil {
		return err
	}
	if externalID == "" || localID == "" {
		return fmt.Errorf("%w: bind needs an external id and a local id (got %q, %q)", bindings.ErrInvalid, externalID, localID)
	}
	// Kept as the real store keeps it: the instant in UTC (no monotonic
	// clock reading), in the years 0000-9999 only.
	at := syncedAt.UTC()
	if y := at.Year(); y < 0 || y > 9999 {
		return fmt.Errorf("%w: bind %s/%s %q: sync date %s is outside the years 0000-9999 in UTC", bindings.ErrInvalid, b.backend, b.model, externalID, syncedAt)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	l, lok := b.toLocal[externalID]
	e, eok := b.toExt[localID]
	if (lok && l != localID) || (eok && e != externalID) {
		ce := &bindings.ConflictError{Backend: b.backend, Model: b.model, ExternalID: externalID, LocalID: localID}
		if lok && l != localID {
			ce.BoundLocalID = l
		}
		if eok && e != externalID {
			ce.BoundExternalID = e
		}
		return ce
	}
	b.toLocal[externalID] = localID
	b.toExt[localID] = externalID
	b.synced[externalID] = at
	return nil
}

// Unbind implements units.Binder.
func (b *Binder) Unbind(ctx context.Context, externalID string) error {
	if err := ended(ctx, "unbind"); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if l, ok := b.toLocal[externalID]; ok {
		delete(b.toExt, l)
	}
	delete(b.toLocal, externalID)
	delete(b.synced, externalID)
	return nil
}

// SyncDate implements units.Binder.
func (b *Binder) SyncDate(ctx context.Context, externalID string) (time.Time, bool, error) {
	if err := ended(ctx, "sync date"); err != nil {
		return time.Time{}, false, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	t, ok := b.synced[externalID]
	return t, ok, nil
}

// ended is the error of a call made with an ended ctx, as the real store
// answers it (ctx's error, not retryable): nothing is read or written.
func ended(ctx context.Context, op string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("unitstest: %s: %w", op, err)
	}
	return nil
}
