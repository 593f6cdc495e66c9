// Package unitstest helps connector authors test their units without real
// systems: an in-memory Adapter to stand in for an external (or the local)
// system, an in-memory binder and locker, a job trap that captures enqueued
// jobs, and an inline runner that runs a connector's jobs synchronously
// (the seed's trap_jobs and "run jobs inline" switch).
package unitstest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/connector-go/connector/job"
	"github.com/connector-go/connector/units"
)

// ErrDown is the cause of the retryable errors a Memory returns while down.
var ErrDown = errors.New("unitstest: system down")

// Change is one write to a Memory system.
type Change struct {
	Op     string // "create", "write" or "delete"
	ID     string
	Record units.Record
	// Origin is units.OriginFrom(ctx) of the write: the backend instance an
	// importer wrote for, "" for other writes.
	Origin string
}

// Memory is an in-memory system implementing units.Adapter (and
// units.ReturningWriter) for one model.
// Records get ids "1", "2", ... in creation order (with Prefix in front).
// It is safe for concurrent use. The zero value is an empty system, ready
// to use.
type Memory struct {
	// Model names the model in MissingError.
	Model string
	// Prefix is put in front of generated ids.
	Prefix string
	// OnChange, if set, is called after every successful write, like the
	// change events a real system publishes.
	OnChange func(ctx context.Context, c Change)
	// StampField, if set, is a field the system sets itself on every
	// create and write made through the Adapter methods, to the time of
	// the write (Clock, or time.Now), as backends stamp their records'
	// modification time ("updated_at"). Set it before use.
	StampField string
	Clock      func() time.Time

	mu      sync.Mutex
	seq     int
	order   []string
	records map[string]units.Record
	changes []Change
	down    bool
	calls   map[string]int
}

// NewMemory returns an empty system for model.
func NewMemory(model string) *Memory {
	return &Memory{Model: model, records: map[string]units.Record{}, calls: map[string]int{}}
}

// ensureMaps makes the maps of a zero Memory. m.mu held.
func (m *Memory) ensureMaps() {
	if m.records == nil {
		m.records = map[string]units.Record{}
	}
	if m.calls == nil {
		m.calls = map[string]int{}
	}
}

// Put stores rec under id directly (no change is recorded): seed data. A
// nil rec stores an empty record.
func (m *Memory) Put(id string, rec units.Record) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.ensureMaps()
	if _, ok := m.records[id]; !ok {
		m.order = append(m.order, id)
	}
	stored := cloneRecord(rec)
	if stored == nil {
		stored = units.Record{}
	}
	m.records[id] = stored
}

// Get returns a copy of the record stored under id.
func (m *Memory) Get(id string) (units.Record, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.records[id]
	return cloneRecord(r), ok
}

// Len returns the number of records.
func (m *Memory) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.records)
}

// Changes returns the writes made through the Adapter methods, in order.
func (m *Memory) Changes() []Change {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.changes)
}

// Calls returns how many times an operation ("search", "read", "create",
// "write", "delete") was called.
func (m *Memory) Calls(op string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.calls[op]
}

// SetDown makes every operation fail with a retryable error (job.Retry of
// ErrDown), as a backend that does not answer would.
func (m *Memory) SetDown(down bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.down = down
}

func (m *Memory) enter(ctx context.Context, op string) error {
	m.ensureMaps()
	m.calls[op]++
	if err := ctx.Err(); err != nil {
		return job.Retry(err)
	}
	if m.down {
		return job.Retry(fmt.Errorf("%s %s: %w", op, m.Model, ErrDown))
	}
	return nil
}

// Search implements units.Adapter: equality filters on fields, creation
// order, Offset and Limit. A negative Offset is an error.
func (m *Memory) Search(ctx context.Context, q units.Query) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.enter(ctx, "search"); err != nil {
		return nil, err
	}
	if q.Offset < 0 {
		return nil, fmt.Errorf("unitstest: search %s: negative offset %d", m.Model, q.Offset)
	}
	var ids []string
	for _, id := range m.order {
		r, ok := m.records[id]
		if !ok {
			continue
		}
		match := true
		for k, v := range q.Filters {
			if fmt.Sprint(r[k]) != fmt.Sprint(v) {
				match = false
				break
			}
		}
		if match {
			ids = append(ids, id)
		}
	}
	if q.Offset >= len(ids) {
		return []string{}, nil
	}
	ids = ids[q.Offset:]
	if q.Limit > 0 && len(ids) > q.Limit {
		ids = ids[:q.Limit]
	}
	return slices.Clone(ids), nil
}

// Read implements units.Adapter.
func (m *Memory) Read(ctx context.Context, id string, fields []string) (units.Record, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.enter(ctx, "read"); err != nil {
		return nil, err
	}
	r, ok := m.records[id]
	if !ok {
		return nil, units.Missing(m.Model, id)
	}
	if len(fields) == 0 {
		return cloneRecord(r), nil
	}
	out := units.Record{}
	for _, f := range fields {
		if v, ok := r[f]; ok {
			out[f] = cloneValue(v)
		}
	}
	return out, nil
}

// Create implements units.Adapter.
func (m *Memory) Create(ctx context.Context, rec units.Record) (string, error) {
	id, _, err := m.CreateReturning(ctx, rec)
	return id, err
}

// CreateReturning implements units.ReturningWriter: Create, returning the
// record as stored (with StampField set).
func (m *Memory) CreateReturning(ctx context.Context, rec units.Record) (string, units.Record, error) {
	m.mu.Lock()
	if err := m.enter(ctx, "create"); err != nil {
		m.mu.Unlock()
		return "", nil, err
	}
	m.seq++
	id := m.Prefix + strconv.Itoa(m.seq)
	for _, taken := m.records[id]; taken; _, taken = m.records[id] {
		m.seq++
		id = m.Prefix + strconv.Itoa(m.seq)
	}
	stored := cloneRecord(rec)
	if stored == nil {
		stored = units.Record{}
	}
	m.stamp(stored)
	m.records[id] = stored
	m.order = append(m.order, id)
	c := m.record(ctx, "create", id, rec)
	stored = cloneRecord(stored)
	m.mu.Unlock()
	m.notify(ctx, c)
	return id, stored, nil
}

// Write implements units.Adapter: the fields of rec are set, others kept.
func (m *Memory) Write(ctx context.Context, id string, rec units.Record) error {
	_, err := m.WriteReturning(ctx, id, rec)
	return err
}

// WriteReturning implements units.ReturningWriter: Write, returning the
// record as stored (with StampField set).
func (m *Memory) WriteReturning(ctx context.Context, id string, rec units.Record) (units.Record, error) {
	m.mu.Lock()
	if err := m.enter(ctx, "write"); err != nil {
		m.mu.Unlock()
		return nil, err
	}
	r, ok := m.records[id]
	if !ok {
		m.mu.Unlock()
		return nil, units.Missing(m.Model, id)
	}
	r = maps.Clone(r)
	maps.Copy(r, cloneRecord(rec))
	m.stamp(r)
	m.records[id] = r
	c := m.record(ctx, "write", id, rec)
	r = cloneRecord(r)
	m.mu.Unlock()
	m.notify(ctx, c)
	return r, nil
}

// stamp sets the StampField of a record written. m.mu held.
func (m *Memory) stamp(r units.Record) {
	if m.StampField == "" {
		return
	}
	now := time.Now
	if m.Clock != nil {
		now = m.Clock
	}
	r[m.StampField] = now()
}

// Delete implements units.Adapter.
func (m *Memory) Delete(ctx context.Context, id string) error {
	m.mu.Lock()
	if err := m.enter(ctx, "delete"); err != nil {
		m.mu.Unlock()
		return err
	}
	if _, ok := m.records[id]; !ok {
		m.mu.Unlock()
		return units.Missing(m.Model, id)
	}
	delete(m.records, id)
	m.order = slices.DeleteFunc(m.order, func(x string) bool { return x == id })
	c := m.record(ctx, "delete", id, nil)
	m.mu.Unlock()
	m.notify(ctx, c)
	return nil
}

func (m *Memory) record(ctx context.Context, op, id string, rec units.Record) Change {
	c := Change{Op: op, ID: id, Record: cloneRecord(rec), Origin: units.OriginFrom(ctx)}
	m.changes = append(m.changes, c)
	return c
}

// cloneRecord copies r down to its nested maps and slices: records are
// values, as they are for a system behind an API.
func cloneRecord(r units.Record) units.Record {
	if r == nil {
		return nil
	}
	out := make(units.Record, len(r))
	for k, v := range r {
		out[k] = cloneValue(v)
	}
	return out
}

// cloneValue copies the maps and slices of v, at every level.
func cloneValue(v any) any {
	switch x := v.(type) {
	case nil:
		return nil
	case map[string]any:
		return cloneRecord(x)
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Map:
		if rv.IsNil() {
			return v
		}
		out := reflect.MakeMapWithSize(rv.Type(), rv.Len())
		for it := rv.MapRange(); it.Next(); {
			out.SetMapIndex(it.Key(), cloneIn(it.Value(), rv.Type().Elem()))
		}
		return out.Interface()
	case reflect.Slice:
		if rv.IsNil() {
			return v
		}
		out := reflect.MakeSlice(rv.Type(), rv.Len(), rv.Len())
		for i := range rv.Len() {
			out.Index(i).Set(cloneIn(rv.Index(i), rv.Type().Elem()))
		}
		return out.Interface()
	}
	return v
}

// cloneIn is cloneValue of x, as a value of type t (x's container's
// element type).
func cloneIn(x reflect.Value, t reflect.Type) reflect.Value {
	c := cloneValue(x.Interface())
	if c == nil {
		return reflect.Zero(t)
	}
	return reflect.ValueOf(c)
}

func (m *Memory) notify(ctx context.Context, c Change) {
	if m.OnChange != nil {
		m.OnChange(ctx, c)
	}
}

// System is a set of Memory models: one per model, created on first use.
// Its Adapter method fits units.Env.Local and, wrapped in a factory,
// units.AdapterUsage. The zero value is an empty system, ready to use.
type System struct {
	// OnChange is given to every model's Memory.
	OnChange func(ctx context.Context, model string, c Change)

	mu     sync.Mutex
	models map[string]*Memory
}

// NewSystem returns an empty system.
func NewSystem() *System { return &System{models: map[string]*Memory{}} }

// Model returns the Memory of model, creating it.
func (s *System) Model(model string) *Memory {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.models[model]
	if !ok {
		if s.models == nil {
			s.models = map[string]*Memory{}
		}
		m = NewMemory(model)
		if s.OnChange != nil {
			m.OnChange = func(ctx context.Context, c Change) { s.OnChange(ctx, model, c) }
		}
		s.models[model] = m
	}
	return m
}

// Adapter returns the Memory of model as a units.Adapter (for Env.Local).
func (s *System) Adapter(model string) (units.Adapter, error) { return s.Model(model), nil }

// Factory returns an AdapterFactory serving this system's models, to
// register under units.AdapterUsage.
func (s *System) Factory() units.AdapterFactory {
	return func(w *units.Work) (units.Adapter, error) { return s.Model(w.Model), nil }
}
