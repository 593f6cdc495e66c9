package unitstest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/connector-go/connector/job"
	"github.com/connector-go/connector/units"
)

// ErrLocked is the cause of the error Store.Acquire returns for a held lock.
var ErrLocked = errors.New("unitstest: resource locked")

// Store is an in-memory stand-in for bindings.Store: binders per backend
// instance and model, and a locker. Locks do not expire (tests release them).
type Store struct {
	mu       sync.Mutex
	binders  map[[2]string]*Binder
	locks    map[string]bool
	acquired map[string]int
}

// NewStore returns an empty store.
func NewStore() *Store {
	return &Store{binders: map[[2]string]*Binder{}, locks: map[string]bool{}, acquired: map[string]int{}}
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
		b = &Binder{toLocal: map[string]string{}, toExt: map[string]string{}, synced: map[string]time.Time{}}
		s.binders[k] = b
	}
	return b
}

// Acquire implements units.Locker: a held lock is a job.RetryNoCount error
// wrapping ErrLocked, as bindings.Store gives.
func (s *Store) Acquire(ctx context.Context, resource string, ttl time.Duration) (func(context.Context) error, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.locks[resource] {
		return nil, job.RetryNoCount(fmt.Errorf("%w: %s", ErrLocked, resource), 0)
	}
	s.locks[resource] = true
	s.acquired[resource]++
	var once sync.Once
	return func(context.Context) error {
		once.Do(func() {
			s.mu.Lock()
			delete(s.locks, resource)
			s.mu.Unlock()
		})
		return nil
	}, nil
}

// Held reports whether resource is locked.
func (s *Store) Held(resource string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.locks[resource]
}

// Acquired returns how many times resource was locked.
func (s *Store) Acquired(resource string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.acquired[resource]
}

// Binder is an in-memory units.Binder.
type Binder struct {
	mu      sync.Mutex
	toLocal map[string]string
	toExt   map[string]string
	synced  map[string]time.Time
}

// ToInternal implements units.Binder.
func (b *Binder) ToInternal(_ context.Context, externalID string) (string, bool, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	id, ok := b.toLocal[externalID]
	return id, ok, nil
}

// ToExternal implements units.Binder.
func (b *Binder) ToExternal(_ context.Context, localID string) (string, bool, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	id, ok := b.toExt[localID]
	return id, ok, nil
}

// Bind implements units.Binder; rebinding an id to another partner fails.
func (b *Binder) Bind(_ context.Context, externalID, localID string, syncedAt time.Time) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if l, ok := b.toLocal[externalID]; ok && l != localID {
		return fmt.Errorf("unitstest: external %q already bound to %q", externalID, l)
	}
	if e, ok := b.toExt[localID]; ok && e != externalID {
		return fmt.Errorf("unitstest: local %q already bound to %q", localID, e)
	}
	b.toLocal[externalID] = localID
	b.toExt[localID] = externalID
	b.synced[externalID] = syncedAt
	return nil
}

// Unbind implements units.Binder.
func (b *Binder) Unbind(_ context.Context, externalID string) error {
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
func (b *Binder) SyncDate(_ context.Context, externalID string) (time.Time, bool, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	t, ok := b.synced[externalID]
	return t, ok, nil
}
