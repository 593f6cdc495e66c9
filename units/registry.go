package units

import (
	"errors"
	"fmt"
	"reflect"
	"sort"
	"sync"
)

// Sentinel errors of the registry, checked with errors.Is.
var (
	// ErrNoUnit: no unit is registered for (backend, version, usage, model).
	// The error is a *NoUnitError naming all four.
	ErrNoUnit = errors.New("units: no unit")
	// ErrDuplicateUnit: a unit is already registered for the same usage and
	// model at the same backend version. Use Replace to replace it.
	ErrDuplicateUnit = errors.New("units: duplicate unit")
	// ErrUnknownBackend: the backend type or version was never declared.
	ErrUnknownBackend = errors.New("units: unknown backend version")
	// ErrUnitType: the registered unit does not have the usage's type
	// (two usages with the same name but different types).
	ErrUnitType = errors.New("units: unit has the wrong type for its usage")
	// ErrInvalidUnit: a registration with a nil unit or a zero Usage.
	ErrInvalidUnit = errors.New("units: invalid unit registration")
)

// NoUnitError is returned by a lookup that finds nothing.
type NoUnitError struct {
	Type, Version, Usage, Model string
}

func (e *NoUnitError) Error() string {
	v := e.Type
	if e.Version != "" {
		v += " " + e.Version
	}
	return fmt.Sprintf("units: no unit %q for model %q on backend %q", e.Usage, e.Model, v)
}

// Is makes errors.Is(err, ErrNoUnit) true.
func (e *NoUnitError) Is(target error) bool { return target == ErrNoUnit }

// Usage names what a unit is for ("importer", "export.mapper", ...) and fixes
// the Go type of the units registered under it. Usages are plain values: the
// framework ships the ones below, users declare their own with NewUsage.
type Usage[T any] struct{ name string }

// NewUsage declares a usage whose units have type T.
//
//	var PriceSync = units.NewUsage[*PriceSyncer]("price.sync")
func NewUsage[T any](name string) Usage[T] { return Usage[T]{name: name} }

// Name returns the usage's name.
func (u Usage[T]) Name() string { return u.name }

func (u Usage[T]) String() string { return u.name }

// The usages the framework ships.
var (
	// ImporterUsage: imports one record from the backend (Importer.Run).
	ImporterUsage = NewUsage[*Importer]("importer")
	// BatchImporterUsage: searches the backend and imports every match,
	// directly or as one job per record.
	BatchImporterUsage = NewUsage[*BatchImporter]("batch.importer")
	// ExporterUsage: exports one local record to the backend.
	ExporterUsage = NewUsage[*Exporter]("exporter")
	// DeleterUsage: deletes one record in the backend.
	DeleterUsage = NewUsage[*Deleter]("deleter")
	// ImportMapperUsage maps backend records to local records.
	ImportMapperUsage = NewUsage[*Mapper]("import.mapper")
	// ExportMapperUsage maps local records to backend records.
	ExportMapperUsage = NewUsage[*Mapper]("export.mapper")
	// BinderUsage overrides, for a backend version and model, the binder the
	// Env gives (Env.Binders).
	BinderUsage = NewUsage[BinderFactory]("binder")
	// AdapterUsage builds the BackendAdapter of a backend instance.
	AdapterUsage = NewUsage[AdapterFactory]("backend.adapter")
)

// AnyModel registers a unit for every model of its backend version. A unit
// registered for the exact model is preferred anywhere in the version chain.
const AnyModel = ""

// Registry holds the backend/version tree and the units registered on it.
// Build one with NewRegistry at start-up; it is safe for concurrent lookups.
type Registry struct {
	mu    sync.RWMutex
	nodes map[nodeKey]*Node
}

type nodeKey struct{ typ, version string }

type unitKey struct{ usage, model string }

// Node is a backend type (Version() == "") or one of its versions.
type Node struct {
	r       *Registry
	typ     string
	version string
	parent  *Node
	units   map[unitKey]any
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{nodes: map[nodeKey]*Node{}} }

// Backend declares (or returns the already declared) backend type typ, the
// root of its version tree.
func (r *Registry) Backend(typ string) *Node {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := nodeKey{typ, ""}
	if n, ok := r.nodes[k]; ok {
		return n
	}
	n := &Node{r: r, typ: typ, units: map[unitKey]any{}}
	r.nodes[k] = n
	return n
}

// Version declares version v of n's backend type as a child of n: units
// registered on n serve v unless v registers its own. Calling it again with
// the same parent returns the same node; declaring v under another parent is a
// programming error and panics (like http.ServeMux on conflicting patterns).
func (n *Node) Version(v string) *Node {
	if v == "" {
		panic("units: empty version name")
	}
	r := n.r
	r.mu.Lock()
	defer r.mu.Unlock()
	k := nodeKey{n.typ, v}
	if c, ok := r.nodes[k]; ok {
		if c.parent != n {
			panic(fmt.Sprintf("units: version %q of %q already declared under %q", v, n.typ, c.parent.version))
		}
		return c
	}
	c := &Node{r: r, typ: n.typ, version: v, parent: n, units: map[unitKey]any{}}
	r.nodes[k] = c
	return c
}

// Type returns the backend type.
func (n *Node) Type() string { return n.typ }

// VersionName returns the version ("" for the type's root).
func (n *Node) VersionName() string { return n.version }

func (n *Node) String() string {
	if n.version == "" {
		return n.typ
	}
	return n.typ + " " + n.version
}

// Register registers unit for usage u and model (AnyModel for all models) on
// backend version n. A unit already registered for the same key on the same
// node is an ErrDuplicateUnit; registering on a descendant version is how a
// version overrides its parent.
func Register[T any](n *Node, u Usage[T], model string, unit T) error {
	return n.put(u.name, model, unit, false)
}

// Replace replaces the unit registered for usage u and model on n itself. It
// fails with ErrNoUnit when n has none (use Register).
func Replace[T any](n *Node, u Usage[T], model string, unit T) error {
	return n.put(u.name, model, unit, true)
}

func (n *Node) put(usage, model string, unit any, replace bool) error {
	if usage == "" {
		return fmt.Errorf("%w: zero Usage for model %q on %s (declare it with NewUsage)", ErrInvalidUnit, model, n)
	}
	if isNil(unit) {
		return fmt.Errorf("%w: nil unit %q for model %q on %s", ErrInvalidUnit, usage, model, n)
	}
	n.r.mu.Lock()
	defer n.r.mu.Unlock()
	k := unitKey{usage, model}
	_, exists := n.units[k]
	switch {
	case exists && !replace:
		return fmt.Errorf("%w: %q for model %q on %s (use Replace)", ErrDuplicateUnit, usage, model, n)
	case !exists && replace:
		return fmt.Errorf("units: replace %q for model %q on %s: %w", usage, model, n, &NoUnitError{n.typ, n.version, usage, model})
	}
	n.units[k] = unit
	return nil
}

func isNil(v any) bool {
	if v == nil {
		return true
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Pointer, reflect.Func, reflect.Map, reflect.Slice, reflect.Interface, reflect.Chan:
		return rv.IsNil()
	}
	return false
}

// Lookup finds the unit for (backend type, version, usage, model): it walks
// from the version up to the backend type and returns the first unit
// registered for the exact model, else the first registered for AnyModel.
// Nothing found is a *NoUnitError (errors.Is(err, ErrNoUnit)); a backend
// type or version never declared is an ErrUnknownBackend error instead.
func Lookup[T any](r *Registry, typ, version string, u Usage[T], model string) (T, error) {
	var zero T
	v, err := r.lookup(typ, version, u.name, model)
	if err != nil {
		return zero, err
	}
	t, ok := v.(T)
	if !ok {
		return zero, fmt.Errorf("%w: %q is a %T, want %T", ErrUnitType, u.name, v, zero)
	}
	return t, nil
}

func (r *Registry) lookup(typ, version, usage, model string) (any, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	n, ok := r.nodes[nodeKey{typ, version}]
	if !ok {
		return nil, fmt.Errorf("%w: %q version %q (looking up %q for model %q)", ErrUnknownBackend, typ, version, usage, model)
	}
	models := []string{model}
	if model != AnyModel {
		models = append(models, AnyModel)
	}
	for _, m := range models {
		for c := n; c != nil; c = c.parent {
			if v, ok := c.units[unitKey{usage, m}]; ok {
				return v, nil
			}
		}
	}
	return nil, &NoUnitError{Type: typ, Version: version, Usage: usage, Model: model}
}

// Versions lists the declared versions of typ ("" is the type itself),
// sorted; for tools and docs.
func (r *Registry) Versions(typ string) []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var out []string
	for k := range r.nodes {
		if k.typ == typ {
			out = append(out, k.version)
		}
	}
	sort.Strings(out)
	return out
}
