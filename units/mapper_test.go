package units_test

// One test per behaviour of the seed's connector/tests/test_mapper.py, named
// after it (test_mapping_record -> TestMappingRecord, ...).

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/connector-go/connector/units"
	"github.com/connector-go/connector/units/unitstest"
)

func values(t *testing.T, m *units.Mapper, w *units.Work, rec units.Record, opts units.MapOptions) units.Record {
	t.Helper()
	v, err := m.MapRecord(w, rec).Values(context.Background(), opts)
	if err != nil {
		t.Fatalf("Values(%+v): %v", opts, err)
	}
	return v
}

func assertValues(t *testing.T, got, want units.Record) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("values =\n  %#v\nwant\n  %#v", got, want)
	}
}

// checkBoth checks values() and values(for_create=True), as most seed tests do.
func checkBoth(t *testing.T, m *units.Mapper, rec units.Record, want units.Record) {
	t.Helper()
	assertValues(t, values(t, m, nil, rec, units.MapOptions{}), want)
	assertValues(t, values(t, m, nil, rec, units.MapOptions{ForCreate: true}), want)
}

func upperStreet(_ context.Context, _ *units.MapContext, rec units.Record) (units.Record, error) {
	return units.Record{"out_street": strings.ToUpper(rec["street"].(string))}, nil
}

func noop(context.Context, *units.MapContext, units.Record) (units.Record, error) { return nil, nil }

func definition(t *testing.T, m *units.Mapper, name string) units.Computed {
	t.Helper()
	i := slices.IndexFunc(m.Computed, func(c units.Computed) bool { return c.Name == name })
	if i < 0 {
		t.Fatalf("no computed mapping %q", name)
	}
	c := m.Computed[i]
	slices.Sort(c.ChangedBy)
	return c
}

func assertDef(t *testing.T, m *units.Mapper, name string, changedBy []string, onlyCreate bool) {
	t.Helper()
	c := definition(t, m, name)
	slices.Sort(changedBy)
	if len(changedBy) == 0 {
		changedBy = nil
	}
	if len(c.ChangedBy) == 0 {
		c.ChangedBy = nil
	}
	if !slices.Equal(c.ChangedBy, changedBy) || c.OnlyCreate != onlyCreate {
		t.Errorf("%s: changed_by=%v only_create=%v, want %v %v", name, c.ChangedBy, c.OnlyCreate, changedBy, onlyCreate)
	}
}

// test_mapping_decorator: a mapping's definition is its changed_by fields and
// only_create flag.
func TestMappingDecorator(t *testing.T) {
	m := units.Inherit(units.Mapper{Computed: []units.Computed{
		{Name: "name", ChangedBy: []string{"name", "city"}, OnlyCreate: true, Map: noop},
		{Name: "email", ChangedBy: []string{"email"}, Map: noop},
		{Name: "street", ChangedBy: []string{"street"}, Map: noop},
	}})
	if len(m.Computed) != 3 {
		t.Fatalf("%d mappings", len(m.Computed))
	}
	assertDef(t, m, "name", []string{"name", "city"}, true)
	assertDef(t, m, "email", []string{"email"}, false)
	assertDef(t, m, "street", []string{"street"}, false)
}

// test_mapping_decorator_cross_classes: mappings do not propagate to other
// mappers.
func TestMappingDecoratorCrossClasses(t *testing.T) {
	mom := units.Inherit(units.Mapper{Computed: []units.Computed{{Name: "name", ChangedBy: []string{"name", "city"}, Map: noop}}})
	zapp := units.Inherit(units.Mapper{Computed: []units.Computed{{Name: "email", ChangedBy: []string{"email"}, OnlyCreate: true, Map: noop}}})
	if len(mom.Computed) != 1 || len(zapp.Computed) != 1 {
		t.Fatalf("mom %d zapp %d mappings", len(mom.Computed), len(zapp.Computed))
	}
	assertDef(t, mom, "name", []string{"name", "city"}, false)
	assertDef(t, zapp, "email", []string{"email"}, true)
}

// test_mapping_decorator_cumul: an inheriting mapper has the base's mappings
// and its own.
func TestMappingDecoratorCumul(t *testing.T) {
	fry := units.Inherit(units.Mapper{Computed: []units.Computed{{Name: "name", ChangedBy: []string{"name", "city"}, Map: noop}}})
	inh := units.Inherit(units.Mapper{Computed: []units.Computed{{Name: "email", ChangedBy: []string{"email"}, Map: noop}}}, fry)
	assertDef(t, inh, "name", []string{"name", "city"}, false)
	assertDef(t, inh, "email", []string{"email"}, false)
	if len(fry.Computed) != 1 {
		t.Error("Inherit modified its base")
	}
}

// test_mapping_decorator_cumul_changed_by: redefining a mapping accumulates
// its changed_by fields through the chain.
func TestMappingDecoratorCumulChangedBy(t *testing.T) {
	fry := units.Inherit(units.Mapper{Computed: []units.Computed{{Name: "name", ChangedBy: []string{"name", "city"}, Map: noop}}})
	fry = units.Inherit(units.Mapper{Computed: []units.Computed{{Name: "name", ChangedBy: []string{"email"}, Map: noop}}}, fry)
	third := units.Inherit(units.Mapper{Computed: []units.Computed{{Name: "name", ChangedBy: []string{"email", "street"}, Map: noop}}}, fry)
	assertDef(t, fry, "name", []string{"name", "city", "email"}, false)
	assertDef(t, third, "name", []string{"name", "city", "email", "street"}, false)
}

// test_several_bases_cumul: with several bases, changed_by accumulates and
// only_create stays once a base sets it.
func TestSeveralBasesCumul(t *testing.T) {
	fry := &units.Mapper{Computed: []units.Computed{
		{Name: "name", ChangedBy: []string{"name", "city"}, Map: noop},
		{Name: "street", OnlyCreate: true, Map: noop},
		{Name: "zip", OnlyCreate: true, Map: noop},
	}}
	farnsworth := &units.Mapper{Computed: []units.Computed{
		{Name: "name", ChangedBy: []string{"email"}, Map: noop},
		{Name: "city", ChangedBy: []string{"street"}, Map: noop},
		{Name: "zip", Map: noop},
	}}
	third := units.Inherit(units.Mapper{Computed: []units.Computed{
		{Name: "name", ChangedBy: []string{"email", "street"}, Map: noop},
		{Name: "email", Map: noop},
	}}, fry, farnsworth)
	assertDef(t, third, "name", []string{"name", "city", "email", "street"}, false)
	assertDef(t, third, "street", nil, true)
	assertDef(t, third, "city", []string{"street"}, false)
	assertDef(t, third, "email", nil, false)
	assertDef(t, third, "zip", nil, true)
}

// test_mapping_record: direct and computed mappings.
func TestMappingRecord(t *testing.T) {
	m := &units.Mapper{
		Direct:   []units.Rule{units.Direct("name", "out_name")},
		Computed: []units.Computed{{Name: "street", Map: upperStreet}},
	}
	checkBoth(t, m, units.Record{"name": "Guewen", "street": "street"},
		units.Record{"out_name": "Guewen", "out_street": "STREET"})
}

// test_mapping_record_on_create: only_create mappings run only for create.
func TestMappingRecordOnCreate(t *testing.T) {
	m := &units.Mapper{
		Direct: []units.Rule{units.Direct("name", "out_name")},
		Computed: []units.Computed{
			{Name: "street", Map: upperStreet},
			{Name: "city", OnlyCreate: true, Map: func(context.Context, *units.MapContext, units.Record) (units.Record, error) {
				return units.Record{"out_city": "city"}, nil
			}},
		},
	}
	rec := units.Record{"name": "Guewen", "street": "street"}
	assertValues(t, values(t, m, nil, rec, units.MapOptions{}), units.Record{"out_name": "Guewen", "out_street": "STREET"})
	assertValues(t, values(t, m, nil, rec, units.MapOptions{ForCreate: true}),
		units.Record{"out_name": "Guewen", "out_street": "STREET", "out_city": "city"})
}

// test_mapping_update: forced values are applied last, over every mapping.
func TestMappingUpdate(t *testing.T) {
	m := &units.Mapper{
		Direct: []units.Rule{units.Direct("name", "out_name")},
		Computed: []units.Computed{
			{Name: "street", Map: upperStreet},
			{Name: "city", OnlyCreate: true, Map: func(context.Context, *units.MapContext, units.Record) (units.Record, error) {
				return units.Record{"out_city": "city"}, nil
			}},
		},
		Finalize: func(_ context.Context, _ *units.MapContext, v units.Record) (units.Record, error) {
			v["test"] = "from finalize"
			return v, nil
		},
	}
	mr := m.MapRecord(nil, units.Record{"name": "Guewen", "street": "street"})
	mr.Update(units.Record{"test": 1, "out_city": "forced"})
	want := units.Record{"out_name": "Guewen", "out_street": "STREET", "out_city": "forced", "test": 1}
	for _, create := range []bool{false, true} {
		got, err := mr.Values(context.Background(), units.MapOptions{ForCreate: create})
		if err != nil {
			t.Fatal(err)
		}
		assertValues(t, got, want)
	}
}

// test_finalize: Finalize reworks the mapped values.
func TestFinalize(t *testing.T) {
	m := &units.Mapper{
		Direct: []units.Rule{units.Direct("name", "out_name")},
		Finalize: func(_ context.Context, _ *units.MapContext, v units.Record) (units.Record, error) {
			v["test"] = "abc"
			return v, nil
		},
	}
	checkBoth(t, m, units.Record{"name": "Guewen", "street": "street"}, units.Record{"out_name": "Guewen", "test": "abc"})
}

// test_some_fields: the fields filter keeps direct rules on listed fields and
// computed mappings changed by a listed field.
func TestSomeFields(t *testing.T) {
	m := &units.Mapper{
		Direct: []units.Rule{units.Direct("name", "out_name"), units.Direct("street", "out_street")},
		Computed: []units.Computed{{Name: "country", ChangedBy: []string{"country"},
			Map: func(context.Context, *units.MapContext, units.Record) (units.Record, error) {
				return units.Record{"country": "country"}, nil
			}}},
	}
	rec := units.Record{"name": "Guewen", "street": "street", "country": "country"}
	want := units.Record{"out_name": "Guewen", "country": "country"}
	fields := []string{"name", "country"}
	assertValues(t, values(t, m, nil, rec, units.MapOptions{Fields: fields}), want)
	assertValues(t, values(t, m, nil, rec, units.MapOptions{Fields: fields, ForCreate: true}), want)
}

// A computed mapping without changed_by runs whatever the fields filter.
func TestSomeFieldsMappingWithoutChangedByAlwaysRuns(t *testing.T) {
	m := &units.Mapper{
		Direct: []units.Rule{units.Direct("name", "out_name")},
		Computed: []units.Computed{{Name: "always", Map: func(context.Context, *units.MapContext, units.Record) (units.Record, error) {
			return units.Record{"always": true}, nil
		}}},
	}
	assertValues(t, values(t, m, nil, units.Record{"name": "x"}, units.MapOptions{Fields: []string{"street"}}), units.Record{"always": true})
}

// test_mapping_modifier: a custom modifier on a direct rule.
func TestMappingModifier(t *testing.T) {
	doNothing := func(field string) units.Source {
		return units.Source{Field: field, Get: func(_ context.Context, _ *units.MapContext, rec units.Record) (any, error) {
			return rec[field], nil
		}}
	}
	m := &units.Mapper{Direct: []units.Rule{units.DirectFrom(doNothing("name"), "out_name")}}
	checkBoth(t, m, units.Record{"name": "Guewen"}, units.Record{"out_name": "Guewen"})
}

// test_mapping_direct_property: the seed computes `direct` in a property;
// in Go Direct is a plain slice, so it may be computed when the mapper is
// built.
func TestMappingDirectProperty(t *testing.T) {
	direct := func() []units.Rule { return []units.Rule{units.Direct("name", "out_name")} }
	m := &units.Mapper{Direct: direct()}
	checkBoth(t, m, units.Record{"name": "Foo"}, units.Record{"out_name": "Foo"})
}

// test_mapping_convert: Convert(field, AsInt).
func TestMappingConvert(t *testing.T) {
	m := &units.Mapper{Direct: []units.Rule{units.DirectFrom(units.Convert("name", units.AsInt), "out_name")}}
	checkBoth(t, m, units.Record{"name": "300"}, units.Record{"out_name": 300})
}

// Converters and their errors; empty values are not converted.
func TestMappingConvertTypes(t *testing.T) {
	m := &units.Mapper{Direct: []units.Rule{
		units.DirectFrom(units.Convert("f", units.AsFloat), "f"),
		units.DirectFrom(units.Convert("s", units.AsString), "s"),
		units.DirectFrom(units.Convert("i", units.AsInt), "i"),
		units.DirectFrom(units.Convert("e", units.AsInt), "e"),
	}}
	checkBoth(t, m, units.Record{"f": "1.5", "s": 42, "i": 7.0, "e": ""},
		units.Record{"f": 1.5, "s": "42", "i": 7, "e": nil})
	bad := &units.Mapper{Direct: []units.Rule{units.DirectFrom(units.Convert("i", units.AsInt), "i")}}
	_, err := bad.MapRecord(nil, units.Record{"i": "abc"}).Values(context.Background(), units.MapOptions{})
	if !errors.Is(err, units.ErrMapping) {
		t.Errorf("bad int: err = %v, want ErrMapping", err)
	}
}

// test_mapping_modifier_none: None turns false-ish values into nil.
func TestMappingModifierNone(t *testing.T) {
	m := &units.Mapper{Direct: []units.Rule{
		units.DirectFrom(units.None(units.Field("in_f")), "out_f"),
		units.DirectFrom(units.None(units.Field("in_t")), "out_t"),
	}}
	checkBoth(t, m, units.Record{"in_f": false, "in_t": true}, units.Record{"out_f": nil, "out_t": true})
}

// test_mapping_modifier_pipeline: none(convert(x, bool)). Convert alone
// gives false for 0; None on top of it gives nil.
func TestMappingModifierPipeline(t *testing.T) {
	m := &units.Mapper{Direct: []units.Rule{
		units.DirectFrom(units.None(units.Convert("in_f", units.AsBool)), "out_f"),
		units.DirectFrom(units.None(units.Convert("in_t", units.AsBool)), "out_t"),
	}}
	checkBoth(t, m, units.Record{"in_f": 0, "in_t": 1}, units.Record{"out_f": nil, "out_t": true})
	conv := &units.Mapper{Direct: []units.Rule{
		units.DirectFrom(units.Convert("in_f", units.AsBool), "out_f"),
		units.DirectFrom(units.Convert("in_t", units.AsBool), "out_t"),
	}}
	checkBoth(t, conv, units.Record{"in_f": 0, "in_t": 1}, units.Record{"out_f": false, "out_t": true})
}

// Convert converts false and zero values; only a missing value (nil or "")
// stays nil without calling the converter.
func TestMappingConvertZeroValues(t *testing.T) {
	calls := 0
	count := func(v any) (any, error) { calls++; return v, nil }
	m := &units.Mapper{Direct: []units.Rule{
		units.DirectFrom(units.Convert("zero", units.AsInt), "zero"),
		units.DirectFrom(units.Convert("no", units.AsBool), "no"),
		units.DirectFrom(units.Convert("zs", units.AsString), "zs"),
		units.DirectFrom(units.Convert("missing", count), "missing"),
		units.DirectFrom(units.Convert("blank", count), "blank"),
	}}
	checkBoth(t, m, units.Record{"zero": "0", "no": false, "zs": 0, "blank": ""},
		units.Record{"zero": 0, "no": false, "zs": "0", "missing": nil, "blank": nil})
	if calls != 0 {
		t.Errorf("converter called %d times for missing values", calls)
	}
}

// Modifiers take Sources, so the shipped ones compose with Follow and with
// each other: a nested external id through the binder, a nested value
// converted, none() over a relation. The fields filter and ChangedByFields
// see the source field under the modifiers.
func TestMappingModifiersCompose(t *testing.T) {
	w, _ := bindingWork(t)
	m := &units.Mapper{Direct: []units.Rule{
		units.DirectFrom(units.ExternalToLocalFrom(units.Follow("address.country"), "country"), "country_id"),
		units.DirectFrom(units.ConvertFrom(units.Follow("address.zip"), units.AsInt), "zip"),
		units.DirectFrom(units.None(units.LocalToExternalFrom(units.Field("home_country"), "country")), "home"),
		units.DirectFrom(units.None(units.LocalToExternal("no_country", "country")), "none"),
	}}
	rec := units.Record{"address": units.Record{"country": 10, "zip": "1200"}, "home_country": "ch", "no_country": ""}
	assertValues(t, values(t, m, w, rec, units.MapOptions{}),
		units.Record{"country_id": "ch", "zip": 1200, "home": "10", "none": nil})
	assertValues(t, values(t, m, w, rec, units.MapOptions{Fields: []string{"address"}}),
		units.Record{"country_id": "ch", "zip": 1200})
	if got := m.ChangedByFields(); !slices.Equal(got, []string{"address", "home_country", "no_country"}) {
		t.Errorf("ChangedByFields = %v", got)
	}
	_, err := m.MapRecord(w, units.Record{"address": units.Record{"country": 99}}).Values(context.Background(), units.MapOptions{})
	if !errors.Is(err, units.ErrMapping) || !strings.Contains(err.Error(), `"address"`) {
		t.Errorf("unbound nested relation: err = %v, want ErrMapping naming the field", err)
	}
}

// A custom modifier composed with the shipped ones.
func TestMappingCustomModifierComposition(t *testing.T) {
	upper := func(src units.Source) units.Source {
		return units.Modifier(src, func(_ context.Context, _ *units.MapContext, v any) (any, error) {
			s, _ := v.(string)
			return strings.ToUpper(s), nil
		})
	}
	m := &units.Mapper{Direct: []units.Rule{
		units.DirectFrom(units.None(upper(units.Field("a"))), "a"),
		units.DirectFrom(units.None(upper(units.Field("b"))), "b"),
	}}
	checkBoth(t, m, units.Record{"a": "x", "b": ""}, units.Record{"a": "X", "b": nil})
	if got := m.ChangedByFields(); !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("ChangedByFields through modifiers = %v", got)
	}
}

func filterFieldMapper() *units.Mapper {
	return &units.Mapper{Direct: []units.Rule{
		units.Direct("field", "field2"),
		units.Direct("no_field", "no_field2"),
		units.DirectFrom(units.Convert("name", units.AsInt), "out_name"),
	}}
}

// test_modifier_import_filter_field: a rule with a modifier is selected by
// its source field.
func TestModifierImportFilterField(t *testing.T) {
	m := filterFieldMapper()
	rec := units.Record{"name": "300", "field": "value", "no_field": "no_value"}
	want := units.Record{"out_name": 300, "field2": "value"}
	fields := []string{"field", "name"}
	assertValues(t, values(t, m, nil, rec, units.MapOptions{Fields: fields}), want)
	assertValues(t, values(t, m, nil, rec, units.MapOptions{Fields: fields, ForCreate: true}), want)
}

// test_modifier_export_filter_field: the same for an export mapper (in Go,
// import and export mappers are the same type, registered under another
// usage).
func TestModifierExportFilterField(t *testing.T) {
	r := units.NewRegistry()
	mustRegister(t, r.Backend("shop"), units.ExportMapperUsage, "partner", filterFieldMapper())
	m, err := units.Lookup(r, "shop", "", units.ExportMapperUsage, "partner")
	if err != nil {
		t.Fatal(err)
	}
	rec := units.Record{"name": "300", "field": "value", "no_field": "no_value"}
	want := units.Record{"out_name": 300, "field2": "value"}
	assertValues(t, values(t, m, nil, rec, units.MapOptions{Fields: []string{"field", "name"}}), want)
	assertValues(t, values(t, m, nil, rec, units.MapOptions{Fields: []string{"field", "name"}, ForCreate: true}), want)
}

// test_mapping_custom_option: custom options given at mapping time.
func TestMappingCustomOption(t *testing.T) {
	m := &units.Mapper{Computed: []units.Computed{{Name: "any", Map: func(_ context.Context, mc *units.MapContext, _ units.Record) (units.Record, error) {
		return units.Record{"res": mc.Option("custom") == true}, nil
	}}}}
	assertValues(t, values(t, m, nil, units.Record{}, units.MapOptions{Custom: map[string]any{"custom": true}}), units.Record{"res": true})
}

// test_mapping_custom_option_not_defined: a missing option reads as nil.
func TestMappingCustomOptionNotDefined(t *testing.T) {
	m := &units.Mapper{Computed: []units.Computed{{Name: "any", Map: func(_ context.Context, mc *units.MapContext, _ units.Record) (units.Record, error) {
		return units.Record{"res": mc.Option("custom") == nil}, nil
	}}}}
	assertValues(t, values(t, m, nil, units.Record{}, units.MapOptions{}), units.Record{"res": true})
}

// test_map_options: options are readable by key; undefined ones are nil.
func TestMapOptions(t *testing.T) {
	opts := units.MapOptions{Custom: map[string]any{"xyz": "abc", "k": 1}}
	opts.Custom["l"] = 2
	mc := &units.MapContext{Options: opts}
	if mc.Option("xyz") != "abc" || mc.Option("k") != 1 || mc.Option("l") != 2 {
		t.Errorf("options: %v %v %v", mc.Option("xyz"), mc.Option("k"), mc.Option("l"))
	}
	if mc.Option("undefined") != nil {
		t.Errorf("undefined option = %v", mc.Option("undefined"))
	}
	if (&units.MapContext{}).Option("x") != nil {
		t.Error("option of empty options not nil")
	}
}

// test_changed_by_fields: the source fields of direct rules (through
// modifiers) and the changed_by fields of computed mappings.
func TestChangedByFields(t *testing.T) {
	m := &units.Mapper{
		Direct: []units.Rule{
			units.Direct("street", "out_street"),
			units.DirectFrom(units.None(units.Field("in_t")), "out_t"),
			units.DirectFrom(units.None(units.Convert("in_f", units.AsBool)), "out_f"),
		},
		Computed: []units.Computed{
			{Name: "name", ChangedBy: []string{"name", "city"}, Map: noop},
			{Name: "email", ChangedBy: []string{"email"}, Map: noop},
		},
	}
	want := []string{"city", "email", "in_f", "in_t", "name", "street"}
	if got := m.ChangedByFields(); !slices.Equal(got, want) {
		t.Errorf("ChangedByFields = %v, want %v", got, want)
	}
}

// test_mapping_modifier_follow_m2o_relations: follow a relation path.
func TestMappingModifierFollowM2ORelations(t *testing.T) {
	m := &units.Mapper{Direct: []units.Rule{
		units.DirectFrom(units.Follow("parent_id.name"), "parent_name"),
		units.DirectFrom(units.Follow("parent_id.missing.name"), "missing"),
	}}
	checkBoth(t, m, units.Record{"name": "Floyd", "parent_id": units.Record{"name": "Deco Addict"}},
		units.Record{"parent_name": "Deco Addict", "missing": nil})
	if got := m.ChangedByFields(); !slices.Equal(got, []string{"parent_id"}) {
		t.Errorf("ChangedByFields = %v", got)
	}
}

// bindingWork returns a work context whose "country" binder binds external
// 10 to local "ch".
func bindingWork(t *testing.T) (*units.Work, *unitstest.Store) {
	t.Helper()
	store := unitstest.NewStore()
	if err := store.Binder("shop-1", "country").Bind(context.Background(), "10", "ch", timeZero); err != nil {
		t.Fatal(err)
	}
	r := units.NewRegistry()
	r.Backend("shop")
	w := r.NewWork(units.Env{Binders: store.Binder}, units.Backend{ID: "shop-1", Type: "shop"}, "partner")
	return w, store
}

// test_mapping_m2o_to_external: a local relation id becomes the external id
// through the binder of the related model.
func TestMappingM2OToExternal(t *testing.T) {
	w, _ := bindingWork(t)
	m := &units.Mapper{Direct: []units.Rule{units.DirectFrom(units.LocalToExternal("country_id", "country"), "country")}}
	assertValues(t, values(t, m, w, units.Record{"country_id": "ch"}, units.MapOptions{}), units.Record{"country": "10"})
	assertValues(t, values(t, m, w, units.Record{"country_id": nil}, units.MapOptions{}), units.Record{"country": nil})
	_, err := m.MapRecord(w, units.Record{"country_id": "fr"}).Values(context.Background(), units.MapOptions{})
	if !errors.Is(err, units.ErrMapping) {
		t.Errorf("unbound relation: err = %v, want ErrMapping", err)
	}
}

// test_mapping_backend_to_m2o: an external relation id becomes the local id.
func TestMappingBackendToM2O(t *testing.T) {
	w, _ := bindingWork(t)
	m := &units.Mapper{Direct: []units.Rule{units.DirectFrom(units.ExternalToLocal("country", "country"), "country_id")}}
	assertValues(t, values(t, m, w, units.Record{"country": 10}, units.MapOptions{}), units.Record{"country_id": "ch"})
	_, err := m.MapRecord(w, units.Record{"country": 11}).Values(context.Background(), units.MapOptions{})
	if !errors.Is(err, units.ErrMapping) {
		t.Errorf("unbound relation: err = %v, want ErrMapping", err)
	}
}

func lineMapper() *units.Mapper {
	return &units.Mapper{
		Direct: []units.Rule{units.Direct("name", "name")},
		Computed: []units.Computed{
			{Name: "price", Map: func(_ context.Context, _ *units.MapContext, rec units.Record) (units.Record, error) {
				return units.Record{"rate": rec["rate"].(int) * 2}, nil
			}},
			{Name: "discount", OnlyCreate: true, Map: func(context.Context, *units.MapContext, units.Record) (units.Record, error) {
				return units.Record{"test": 0.5}, nil
			}},
		},
	}
}

var ratesRecord = units.Record{
	"name": "SO1",
	"lines": []any{
		units.Record{"name": "2013-11-07", "rate": 10},
		units.Record{"name": "2013-11-08", "rate": 20},
	},
}

// test_mapping_record_children_no_map_child: items mapped by the mapper
// registered for the items' model, default format.
func TestMappingRecordChildrenNoMapChild(t *testing.T) {
	r := units.NewRegistry()
	shop := r.Backend("shop")
	mustRegister(t, shop, units.ImportMapperUsage, "currency.rate", lineMapper())
	w := r.NewWork(units.Env{}, units.Backend{ID: "s", Type: "shop"}, "currency")
	m := &units.Mapper{
		Direct:   []units.Rule{units.Direct("name", "name")},
		Children: []units.Child{{From: "lines", To: "line_ids", Model: "currency.rate"}},
	}
	assertValues(t, values(t, m, w, ratesRecord, units.MapOptions{}), units.Record{
		"name": "SO1",
		"line_ids": []units.Record{
			{"name": "2013-11-07", "rate": 20},
			{"name": "2013-11-08", "rate": 40},
		},
	})
	assertValues(t, values(t, m, w, ratesRecord, units.MapOptions{ForCreate: true}), units.Record{
		"name": "SO1",
		"line_ids": []units.Record{
			{"name": "2013-11-07", "rate": 20, "test": 0.5},
			{"name": "2013-11-08", "rate": 40, "test": 0.5},
		},
	})
}

type command struct {
	Op     string
	Values units.Record
}

func abcFormat(items []units.Record) any {
	out := make([]command, len(items))
	for i, v := range items {
		out[i] = command{"ABC", v}
	}
	return out
}

// test_mapping_record_children: a format hook shapes the items.
func TestMappingRecordChildren(t *testing.T) {
	m := &units.Mapper{
		Direct:   []units.Rule{units.Direct("name", "name")},
		Children: []units.Child{{From: "lines", To: "line_ids", Model: "currency.rate", Mapper: lineMapper(), Format: abcFormat}},
	}
	assertValues(t, values(t, m, nil, ratesRecord, units.MapOptions{}), units.Record{
		"name": "SO1",
		"line_ids": []command{
			{"ABC", units.Record{"name": "2013-11-07", "rate": 20}},
			{"ABC", units.Record{"name": "2013-11-08", "rate": 40}},
		},
	})
	assertValues(t, values(t, m, nil, ratesRecord, units.MapOptions{ForCreate: true}), units.Record{
		"name": "SO1",
		"line_ids": []command{
			{"ABC", units.Record{"name": "2013-11-07", "rate": 20, "test": 0.5}},
			{"ABC", units.Record{"name": "2013-11-08", "rate": 40, "test": 0.5}},
		},
	})
}

// test_mapping_record_children_void: items whose values are empty are left
// out.
func TestMappingRecordChildrenVoid(t *testing.T) {
	line := &units.Mapper{Computed: []units.Computed{{Name: "price", Map: func(_ context.Context, _ *units.MapContext, rec units.Record) (units.Record, error) {
		if rate, _ := rec["rate"].(int); rate > 0 && rate < 40 {
			return units.Record{"rate": rate * 2}, nil
		}
		return nil, nil
	}}}}
	m := &units.Mapper{
		Direct:   []units.Rule{units.Direct("name", "name")},
		Children: []units.Child{{From: "lines", To: "line_ids", Mapper: line, Format: abcFormat}},
	}
	rec := units.Record{"name": "SO1", "lines": []units.Record{{"rate": 10}, {"rate": 20}, {"rate": 30}, {"rate": 40}}}
	assertValues(t, values(t, m, nil, rec, units.MapOptions{}), units.Record{
		"name": "SO1",
		"line_ids": []command{
			{"ABC", units.Record{"rate": 20}},
			{"ABC", units.Record{"rate": 40}},
			{"ABC", units.Record{"rate": 60}},
		},
	})
}

// MapChild.skip_item: the Skip hook leaves items out; it sees the parent.
func TestMappingRecordChildrenSkipItem(t *testing.T) {
	m := &units.Mapper{
		Children: []units.Child{{From: "lines", To: "lines", Mapper: lineMapper(),
			Skip: func(item *units.MapRecord) bool {
				return item.Source["name"] == "2013-11-07" && item.Parent.Source["name"] == "SO1"
			}}},
	}
	assertValues(t, values(t, m, nil, ratesRecord, units.MapOptions{}), units.Record{
		"lines": []units.Record{{"name": "2013-11-08", "rate": 40}},
	})
	// The fields filter selects children by their source field.
	assertValues(t, values(t, m, nil, ratesRecord, units.MapOptions{Fields: []string{"name"}}), units.Record{})
}

// Items are mapped with the parent's options (ForCreate and custom options,
// as the seed passes its options to get_item_values) but not its fields
// filter, which names the parent's fields; the item's work context is
// switched to the items' model; nested children work the same way.
func TestMappingRecordChildrenOptions(t *testing.T) {
	r := units.NewRegistry()
	r.Backend("shop")
	w := r.NewWork(units.Env{}, units.Backend{ID: "s", Type: "shop"}, "order")
	var models []string
	sub := &units.Mapper{Computed: []units.Computed{{Name: "m", Map: func(_ context.Context, mc *units.MapContext, rec units.Record) (units.Record, error) {
		models = append(models, mc.Work.Model)
		return units.Record{"tax": rec["tax"], "parent_sku": mc.Record.Parent.Source["sku"]}, nil
	}}}}
	line := &units.Mapper{
		Direct: []units.Rule{units.Direct("sku", "sku"), units.Direct("qty", "qty")},
		Computed: []units.Computed{
			{Name: "lang", ChangedBy: []string{"lang"}, Map: func(_ context.Context, mc *units.MapContext, _ units.Record) (units.Record, error) {
				models = append(models, mc.Work.Model)
				return units.Record{"lang": mc.Option("lang")}, nil
			}},
			{Name: "new", OnlyCreate: true, Map: func(context.Context, *units.MapContext, units.Record) (units.Record, error) {
				return units.Record{"new": true}, nil
			}},
		},
		Children: []units.Child{{From: "taxes", To: "taxes", Model: "order.line.tax", Mapper: sub}},
	}
	m := &units.Mapper{
		Direct:   []units.Rule{units.Direct("ref", "ref")},
		Children: []units.Child{{From: "lines", To: "lines", Model: "order.line", Mapper: line}},
	}
	rec := units.Record{"ref": "SO1", "lines": []units.Record{{"sku": "A", "qty": 2, "taxes": []units.Record{{"tax": "vat"}}}}}
	got := values(t, m, w, rec, units.MapOptions{ForCreate: true, Fields: []string{"lines"}, Custom: map[string]any{"lang": "fr"}})
	assertValues(t, got, units.Record{"lines": []units.Record{{
		"sku": "A", "qty": 2, "lang": "fr", "new": true,
		"taxes": []units.Record{{"tax": "vat", "parent_sku": "A"}},
	}}})
	if !slices.Equal(models, []string{"order.line", "order.line.tax"}) {
		t.Errorf("item work models %v", models)
	}
}

// A record mapped for export looks its items' mapper up under
// ExportMapperUsage; a Child's own Usage wins.
func TestMappingRecordChildrenUsage(t *testing.T) {
	r := units.NewRegistry()
	shop := r.Backend("shop")
	tagged := func(tag string) *units.Mapper {
		return &units.Mapper{Computed: []units.Computed{{Name: "t", Map: func(context.Context, *units.MapContext, units.Record) (units.Record, error) {
			return units.Record{"by": tag}, nil
		}}}}
	}
	mustRegister(t, shop, units.ImportMapperUsage, "line", tagged("import"))
	mustRegister(t, shop, units.ExportMapperUsage, "line", tagged("export"))
	custom := units.NewUsage[*units.Mapper]("pos.mapper")
	mustRegister(t, shop, custom, "line", tagged("custom"))
	w := r.NewWork(units.Env{}, units.Backend{ID: "s", Type: "shop"}, "order")
	m := &units.Mapper{Children: []units.Child{
		{From: "lines", To: "lines", Model: "line"},
		{From: "lines", To: "pos", Model: "line", Usage: custom},
	}}
	rec := units.Record{"lines": []any{units.Record{"x": 1}}}
	for _, c := range []struct {
		usage units.Usage[*units.Mapper]
		want  string
	}{{units.Usage[*units.Mapper]{}, "import"}, {units.ImportMapperUsage, "import"}, {units.ExportMapperUsage, "export"}} {
		mr := m.MapRecord(w, rec)
		mr.Usage = c.usage
		got, err := mr.Values(context.Background(), units.MapOptions{})
		if err != nil {
			t.Fatal(err)
		}
		assertValues(t, got, units.Record{"lines": []units.Record{{"by": c.want}}, "pos": []units.Record{{"by": "custom"}}})
	}
}

// A children mapping without a mapper and without a registered one fails
// with a NoUnitError naming the model.
func TestMappingRecordChildrenNoMapper(t *testing.T) {
	r := units.NewRegistry()
	r.Backend("shop")
	w := r.NewWork(units.Env{}, units.Backend{ID: "s", Type: "shop"}, "order")
	m := &units.Mapper{Children: []units.Child{{From: "lines", To: "lines", Model: "order.line"}}}
	_, err := m.MapRecord(w, ratesRecord).Values(context.Background(), units.MapOptions{})
	var nu *units.NoUnitError
	if !errors.As(err, &nu) || nu.Model != "order.line" || nu.Usage != "import.mapper" {
		t.Errorf("err = %v", err)
	}
}

func TestMappingComputedError(t *testing.T) {
	boom := errors.New("boom")
	m := &units.Mapper{Computed: []units.Computed{{Name: "x", Map: func(context.Context, *units.MapContext, units.Record) (units.Record, error) {
		return nil, boom
	}}}}
	_, err := m.MapRecord(nil, units.Record{}).Values(context.Background(), units.MapOptions{})
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), `"x"`) {
		t.Errorf("err = %v", err)
	}
}

func TestIsEmpty(t *testing.T) {
	for _, v := range []any{nil, false, 0, 0.0, "", []any{}, map[string]any{}, (*int)(nil)} {
		if !units.IsEmpty(v) {
			t.Errorf("IsEmpty(%#v) = false", v)
		}
	}
	for _, v := range []any{true, 1, "x", []any{1}, fmt.Errorf("x")} {
		if units.IsEmpty(v) {
			t.Errorf("IsEmpty(%#v) = true", v)
		}
	}
}

var timeZero = time.Time{}

// A mapper depends on the source fields of its children too: the fields
// filter runs a child whose From is listed, so a change to the items alone
// must be seen by an export listener filtering on ChangedByFields.
func TestChangedByFieldsIncludesChildren(t *testing.T) {
	m := &units.Mapper{
		Direct:   []units.Rule{units.Direct("name", "name")},
		Children: []units.Child{{From: "lines", To: "line_ids", Model: "order.line"}},
	}
	if got, want := m.ChangedByFields(), []string{"lines", "name"}; !slices.Equal(got, want) {
		t.Errorf("ChangedByFields = %v, want %v", got, want)
	}
}

// Computed mappings without a Name are distinct mappings: Inherit merges by
// name only the named ones, and keeps every unnamed one.
func TestInheritKeepsUnnamedComputedMappings(t *testing.T) {
	set := func(k string) func(context.Context, *units.MapContext, units.Record) (units.Record, error) {
		return func(context.Context, *units.MapContext, units.Record) (units.Record, error) {
			return units.Record{k: true}, nil
		}
	}
	base := &units.Mapper{Computed: []units.Computed{{Map: set("a")}, {Map: set("b")}}}
	m := units.Inherit(units.Mapper{Computed: []units.Computed{{Map: set("c")}}}, base)
	got, err := m.MapRecord(nil, units.Record{}).Values(context.Background(), units.MapOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if want := (units.Record{"a": true, "b": true, "c": true}); !maps.Equal(got, want) {
		t.Errorf("values = %v, want %v", got, want)
	}
}
