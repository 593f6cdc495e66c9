package units

import (
	"context"
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// ErrMapping: a mapping could not be done (e.g. no binding for a related
// record). The seed's MappingError.
var ErrMapping = errors.New("units: mapping error")

// Mapper transforms a record of one system into a record of the other. It has
// the seed's three kinds of mappings, applied in this order:
//
//   - Direct rules copy a source field to a target field, through a Source
//     that may modify the value (Convert, None, LocalToExternal, ...).
//   - Computed mappings run arbitrary code and return several fields.
//   - Children map line items with the mapper of the items' model.
//
// Then Finalize may rework the values, and values forced with
// MapRecord.Update are applied last.
//
// A Mapper is a plain value: build it once and register it under
// ImportMapperUsage or ExportMapperUsage. Compose mappers with Inherit.
type Mapper struct {
	Direct   []Rule
	Computed []Computed
	Children []Child
	// Finalize, if set, receives all mapped values and returns the final ones.
	Finalize func(ctx context.Context, mc *MapContext, values Record) (Record, error)
}

// Rule is a direct mapping: the value of From goes to the target field To.
type Rule struct {
	From Source
	To   string
}

// Direct copies field from to field to, unchanged.
func Direct(from, to string) Rule { return Rule{From: Field(from), To: to} }

// DirectFrom copies the value given by a modifier to field to:
//
//	units.DirectFrom(units.None(units.Convert("active", units.AsBool)), "enabled")
func DirectFrom(src Source, to string) Rule { return Rule{From: src, To: to} }

// Source gives the value of a direct rule. Field is the source field it
// reads: the `fields` filter and ChangedByFields use it. Get computes the
// value (nil Get reads rec[Field]). Modifiers are Sources built from other
// Sources, so they compose: None(Convert("x", AsBool)).
type Source struct {
	Field string
	Get   func(ctx context.Context, mc *MapContext, rec Record) (any, error)
}

func (s Source) value(ctx context.Context, mc *MapContext, rec Record) (any, error) {
	if s.Get == nil {
		return rec[s.Field], nil
	}
	return s.Get(ctx, mc, rec)
}

// Field reads a field as is (a missing field reads as nil).
func Field(name string) Source { return Source{Field: name} }

// Modifier builds a custom modifier on top of src: fn receives src's value.
//
//	upper := func(src units.Source) units.Source {
//		return units.Modifier(src, func(_ context.Context, _ *units.MapContext, v any) (any, error) {
//			s, _ := v.(string)
//			return strings.ToUpper(s), nil
//		})
//	}
func Modifier(src Source, fn func(ctx context.Context, mc *MapContext, v any) (any, error)) Source {
	return Source{Field: src.Field, Get: func(ctx context.Context, mc *MapContext, rec Record) (any, error) {
		v, err := src.value(ctx, mc, rec)
		if err != nil {
			return nil, err
		}
		return fn(ctx, mc, v)
	}}
}

// None turns empty values (nil, false, 0, "", empty list or map) into nil:
// the seed's none(), for systems where "no value" must be null.
func None(src Source) Source {
	return Modifier(src, func(_ context.Context, _ *MapContext, v any) (any, error) {
		if IsEmpty(v) {
			return nil, nil
		}
		return v, nil
	})
}

// Converter converts a value (never nil nor "") to another type.
type Converter func(v any) (any, error)

// Convert converts field with conv: the seed's convert(field, type). A
// missing value (nil, or the empty string) stays nil without calling conv;
// every other value is converted, false and 0 included, so that
// Convert("active", AsBool) gives false for 0 and None(Convert("active",
// AsBool)) gives nil, as the seed's none(convert("active", bool)) does.
func Convert(field string, conv Converter) Source { return ConvertFrom(Field(field), conv) }

// ConvertFrom is Convert applied to the value of another Source:
//
//	units.ConvertFrom(units.Follow("stock.qty"), units.AsInt)
func ConvertFrom(src Source, conv Converter) Source {
	return Modifier(src, func(_ context.Context, _ *MapContext, v any) (any, error) {
		if v == nil || v == "" {
			return nil, nil
		}
		out, err := conv(v)
		if err != nil {
			return nil, fmt.Errorf("%w: convert field %q: %w", ErrMapping, src.Field, err)
		}
		return out, nil
	})
}

// AsBool converts to a bool: false for empty values (IsEmpty), true
// otherwise (Python's bool()).
func AsBool(v any) (any, error) { return !IsEmpty(v), nil }

// AsString converts to a string with fmt.Sprint, but floats in plain
// decimal: a number decoded from JSON (a float64) of 7 digits or more
// would read "1.234567e+06".
func AsString(v any) (any, error) { return idString(v), nil }

// AsInt converts numbers, numeric strings and bools to an int; a float with
// a fractional part is an error.
func AsInt(v any) (any, error) {
	switch x := v.(type) {
	case string:
		return strconv.Atoi(strings.TrimSpace(x))
	case float64:
		if x != math.Trunc(x) {
			return nil, fmt.Errorf("%v is not an integer", x)
		}
		return int(x), nil
	case bool:
		if x {
			return 1, nil
		}
		return 0, nil
	}
	rv := reflect.ValueOf(v)
	switch {
	case rv.CanInt():
		return int(rv.Int()), nil
	case rv.CanUint():
		return int(rv.Uint()), nil
	case rv.CanFloat():
		return AsInt(rv.Float())
	}
	return nil, fmt.Errorf("cannot convert %T to int", v)
}

// AsFloat converts numbers and numeric strings to a float64.
func AsFloat(v any) (any, error) {
	if s, ok := v.(string); ok {
		return strconv.ParseFloat(strings.TrimSpace(s), 64)
	}
	rv := reflect.ValueOf(v)
	switch {
	case rv.CanInt():
		return float64(rv.Int()), nil
	case rv.CanUint():
		return float64(rv.Uint()), nil
	case rv.CanFloat():
		return rv.Float(), nil
	}
	return nil, fmt.Errorf("cannot convert %T to float", v)
}

// IsEmpty reports whether v is "false-ish" as the seed understands it: nil,
// false, a zero number, "", or an empty slice or map.
func IsEmpty(v any) bool {
	if v == nil {
		return true
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Slice, reflect.Map, reflect.String, reflect.Array:
		return rv.Len() == 0
	case reflect.Pointer, reflect.Interface:
		return rv.IsNil()
	}
	return rv.IsZero()
}

// LocalToExternal reads the local id of a related record of model in field and
// returns its external id on the work's backend (the seed's m2o_to_external),
// through the binder of model (Work.BinderFor). An empty value stays nil; an
// unbound record is an ErrMapping error.
func LocalToExternal(field, model string) Source {
	return LocalToExternalFrom(Field(field), model)
}

// ExternalToLocal reads the external id of a related record of model in field
// and returns its local id (the seed's external_to_m2o). An empty value stays
// nil; an unbound record is an ErrMapping error.
func ExternalToLocal(field, model string) Source {
	return ExternalToLocalFrom(Field(field), model)
}

// LocalToExternalFrom is LocalToExternal of the value of another Source.
func LocalToExternalFrom(src Source, model string) Source { return relation(src, model, false) }

// ExternalToLocalFrom is ExternalToLocal of the value of another Source, e.g.
// a nested id:
//
//	units.ExternalToLocalFrom(units.Follow("customer.id"), "customer")
func ExternalToLocalFrom(src Source, model string) Source { return relation(src, model, true) }

func relation(src Source, model string, toLocal bool) Source {
	field := src.Field
	return Modifier(src, func(ctx context.Context, mc *MapContext, v any) (any, error) {
		if IsEmpty(v) {
			return nil, nil
		}
		if mc.Work == nil {
			return nil, fmt.Errorf("%w: field %q: no work context to find the binder of %q", ErrMapping, field, model)
		}
		b, err := mc.Work.BinderFor(model)
		if err != nil {
			return nil, err
		}
		id := idString(v)
		var out string
		var found bool
		if toLocal {
			out, found, err = b.ToInternal(ctx, id)
		} else {
			out, found, err = b.ToExternal(ctx, id)
		}
		if err != nil {
			return nil, err
		}
		if !found {
			dir := "external"
			if toLocal {
				dir = "local"
			}
			return nil, fmt.Errorf("%w: no %s id for %q record %q (field %q)", ErrMapping, dir, model, id, field)
		}
		return out, nil
	})
}

// idString renders a relation id (or AsString a value). A number decoded
// from JSON is a float64, which fmt.Sprint renders in exponent form from 7
// digits on ("1.234567e+06"): floats are rendered in plain decimal instead.
func idString(v any) string {
	switch x := v.(type) {
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	case float32:
		return strconv.FormatFloat(float64(x), 'f', -1, 32)
	}
	return fmt.Sprint(v)
}

// Follow follows a dotted path through nested records ("parent.name"): the
// seed's follow_m2o_relations. A missing step reads as nil.
func Follow(path string) Source {
	parts := strings.Split(path, ".")
	return Source{Field: parts[0], Get: func(_ context.Context, _ *MapContext, rec Record) (any, error) {
		var v any = rec
		for _, p := range parts {
			m, ok := v.(map[string]any)
			if !ok {
				return nil, nil
			}
			v = m[p]
		}
		return v, nil
	}}
}

// Computed is a mapping method: Map returns any number of target fields
// (nil or empty: nothing). With ChangedBy set, it runs under a fields filter
// only if one of those fields is in it; OnlyCreate mappings run only when the
// target record is being created.
type Computed struct {
	Name       string
	ChangedBy  []string
	OnlyCreate bool
	Map        func(ctx context.Context, mc *MapContext, rec Record) (Record, error)
}

// Child maps the items in source field From (a list of records) to target
// field To with the mapper of Model: Mapper if set, else the unit registered
// for Model under Usage; a zero Usage is the usage the parent record is
// mapped for (MapRecord.Usage: ExportMapperUsage in an Exporter,
// ImportMapperUsage otherwise), like the seed's import and export map
// children. Items for which Skip returns true (the seed's skip_item), or
// whose mapped values are empty, are left out; Format (nil: a []Record)
// shapes the list, e.g. into the target's line commands (the seed's
// format_items).
//
// Items are mapped with the parent's options (ForCreate, Custom) but without
// its Fields filter, which names fields of the parent, and with a work
// context switched to Model.
type Child struct {
	From, To, Model string
	Mapper          *Mapper
	Usage           Usage[*Mapper]
	Skip            func(item *MapRecord) bool
	Format          func(items []Record) any
}

// MapOptions are the options of one mapping: ForCreate, the Fields filter, and
// custom options read by mappings with MapContext.Option.
type MapOptions struct {
	// ForCreate: the target record is being created (OnlyCreate mappings run).
	ForCreate bool
	// Fields, if not empty, restricts the mapping to direct rules whose
	// source field is listed, computed mappings whose ChangedBy meets the list
	// (or have no ChangedBy) and children whose From is listed.
	Fields []string
	// Custom options.
	Custom map[string]any
}

// MapContext is what modifiers and mappings see besides the record.
type MapContext struct {
	// Work is the work context (nil when a mapper is used on its own).
	Work *Work
	// Options are the options given to MapRecord.Values.
	Options MapOptions
	// Record is the record being mapped; Record.Parent is set for items.
	Record *MapRecord
}

// Option returns a custom option; a missing option reads as nil.
func (mc *MapContext) Option(key string) any { return mc.Options.Custom[key] }

// MapRecord is a source record ready to be mapped.
type MapRecord struct {
	Source Record
	// Parent is the parent record when this one is an item.
	Parent *MapRecord
	// Usage is what the record is mapped for, ImportMapperUsage (the zero
	// value) or ExportMapperUsage: children without a Usage of their own
	// look their items' mapper up under it. The Exporter sets it; set it
	// yourself when you run an export mapper by hand.
	Usage  Usage[*Mapper]
	mapper *Mapper
	work   *Work
	forced Record
}

// MapRecord prepares rec for mapping with m; w may be nil if no modifier needs
// a binder or child mapper lookup.
func (m *Mapper) MapRecord(w *Work, rec Record) *MapRecord {
	return &MapRecord{Source: rec, mapper: m, work: w}
}

// usage returns mr.Usage, ImportMapperUsage when zero.
func (mr *MapRecord) usage() Usage[*Mapper] {
	if mr.Usage.name == "" {
		return ImportMapperUsage
	}
	return mr.Usage
}

// Update forces values: they are applied after every mapping and Finalize.
func (mr *MapRecord) Update(values Record) {
	if mr.forced == nil {
		mr.forced = Record{}
	}
	for k, v := range values {
		mr.forced[k] = v
	}
}

// Values maps the record with the given options.
func (mr *MapRecord) Values(ctx context.Context, opts MapOptions) (Record, error) {
	m := mr.mapper
	mc := &MapContext{Work: mr.work, Options: opts, Record: mr}
	selected := func(f string) bool { return len(opts.Fields) == 0 || slices.Contains(opts.Fields, f) }
	out := Record{}
	for _, r := range m.Direct {
		if !selected(r.From.Field) {
			continue
		}
		v, err := r.From.value(ctx, mc, mr.Source)
		if err != nil {
			return nil, fmt.Errorf("map %q -> %q: %w", r.From.Field, r.To, err)
		}
		out[r.To] = v
	}
	for _, c := range m.Computed {
		if len(opts.Fields) > 0 && len(c.ChangedBy) > 0 && !slices.ContainsFunc(c.ChangedBy, selected) {
			continue
		}
		if c.OnlyCreate && !opts.ForCreate {
			continue
		}
		if c.Map == nil {
			continue
		}
		vals, err := c.Map(ctx, mc, mr.Source)
		if err != nil {
			return nil, fmt.Errorf("mapping %q: %w", c.Name, err)
		}
		for k, v := range vals {
			out[k] = v
		}
	}
	for _, ch := range m.Children {
		if !selected(ch.From) {
			continue
		}
		v, err := mr.mapChild(ctx, ch, opts)
		if err != nil {
			return nil, fmt.Errorf("children %q -> %q: %w", ch.From, ch.To, err)
		}
		out[ch.To] = v
	}
	if m.Finalize != nil {
		var err error
		if out, err = m.Finalize(ctx, mc, out); err != nil {
			return nil, err
		}
		if out == nil {
			out = Record{}
		}
	}
	for k, v := range mr.forced {
		out[k] = v
	}
	return out, nil
}

func (mr *MapRecord) mapChild(ctx context.Context, ch Child, opts MapOptions) (any, error) {
	cm := ch.Mapper
	var cw *Work
	if mr.work != nil {
		cw = mr.work.WithModel(ch.Model)
	}
	u := ch.Usage
	if u.name == "" {
		u = mr.usage()
	}
	if cm == nil {
		if cw == nil {
			return nil, fmt.Errorf("%w: no mapper and no work context for child model %q", ErrMapping, ch.Model)
		}
		var err error
		if cm, err = Find(cw, u); err != nil {
			return nil, err
		}
	}
	items, err := recordList(mr.Source[ch.From])
	if err != nil {
		return nil, fmt.Errorf("%w: field %q: %w", ErrMapping, ch.From, err)
	}
	opts.Fields = nil // the filter names fields of the parent
	var mapped []Record
	for _, it := range items {
		imr := cm.MapRecord(cw, it)
		imr.Parent = mr
		imr.Usage = u
		if ch.Skip != nil && ch.Skip(imr) {
			continue
		}
		vals, err := imr.Values(ctx, opts)
		if err != nil {
			return nil, err
		}
		if len(vals) == 0 {
			continue
		}
		mapped = append(mapped, vals)
	}
	if ch.Format != nil {
		return ch.Format(mapped), nil
	}
	if mapped == nil {
		mapped = []Record{}
	}
	return mapped, nil
}

func recordList(v any) ([]Record, error) {
	switch x := v.(type) {
	case nil:
		return nil, nil
	case []Record:
		return x, nil
	case []any:
		out := make([]Record, 0, len(x))
		for i, e := range x {
			r, ok := e.(map[string]any)
			if !ok {
				return nil, fmt.Errorf("item %d is a %T, want a record", i, e)
			}
			out = append(out, r)
		}
		return out, nil
	}
	return nil, fmt.Errorf("%T is not a list of records", v)
}

// ChangedByFields returns the source fields the mapper depends on: the
// source fields of the direct rules, the ChangedBy fields of the computed
// mappings and the From fields of the children, sorted. Give them to an
// export listener's events.FieldsUnchanged, so that it skips the writes
// that changed none of them (nothing filters on them by itself).
func (m *Mapper) ChangedByFields() []string {
	set := map[string]bool{}
	for _, r := range m.Direct {
		if r.From.Field != "" {
			set[r.From.Field] = true
		}
	}
	for _, c := range m.Children {
		if c.From != "" {
			set[c.From] = true
		}
	}
	for _, c := range m.Computed {
		for _, f := range c.ChangedBy {
			set[f] = true
		}
	}
	out := make([]string, 0, len(set))
	for f := range set {
		out = append(out, f)
	}
	sort.Strings(out)
	return out
}

// Inherit builds a mapper from bases and own, like the seed's mapper
// inheritance:
//
//   - direct rules and children accumulate (bases in order, then own); a later
//     rule for the same target field replaces the earlier one;
//   - computed mappings are merged by Name (those without one are all kept,
//     in order): ChangedBy fields accumulate, the last Map function wins;
//     across bases OnlyCreate stays set once a base sets it, and own's
//     OnlyCreate has the last word for the mappings it (re)defines;
//   - Finalize is own's if set, else the last base's that has one.
//
// Neither own nor the bases are modified.
func Inherit(own Mapper, bases ...*Mapper) *Mapper {
	out := &Mapper{}
	for _, b := range bases {
		out.merge(b, false)
	}
	out.merge(&own, true)
	return out
}

func (m *Mapper) merge(b *Mapper, own bool) {
	for _, r := range b.Direct {
		m.Direct = slices.DeleteFunc(m.Direct, func(x Rule) bool { return x.To == r.To })
		m.Direct = append(m.Direct, r)
	}
	for _, c := range b.Children {
		m.Children = slices.DeleteFunc(m.Children, func(x Child) bool { return x.To == c.To })
		m.Children = append(m.Children, c)
	}
	for _, c := range b.Computed {
		i := -1 // a mapping without a Name is never merged
		if c.Name != "" {
			i = slices.IndexFunc(m.Computed, func(x Computed) bool { return x.Name == c.Name })
		}
		if i < 0 {
			c.ChangedBy = slices.Clone(c.ChangedBy)
			m.Computed = append(m.Computed, c)
			continue
		}
		cur := &m.Computed[i]
		for _, f := range c.ChangedBy {
			if !slices.Contains(cur.ChangedBy, f) {
				cur.ChangedBy = append(cur.ChangedBy, f)
			}
		}
		if c.Map != nil {
			cur.Map = c.Map
		}
		if own {
			cur.OnlyCreate = c.OnlyCreate
		} else {
			cur.OnlyCreate = cur.OnlyCreate || c.OnlyCreate
		}
	}
	if b.Finalize != nil {
		m.Finalize = b.Finalize
	}
}
