package units_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/connector-go/connector/units"
	"github.com/connector-go/connector/units/unitstest"
)

// A relation id decoded from a JSON answer is a float64: ExternalToLocal must
// look up the binding of "1234567", not of "1.234567e+06" (fmt.Sprint's
// rendering of a float64 of 7 digits or more).
func TestRelationIDFromAJSONNumber(t *testing.T) {
	ctx := context.Background()
	store := unitstest.NewStore()
	if err := store.Binder("shop-1", "customer").Bind(ctx, "1234567", "c-1", timeZero); err != nil {
		t.Fatal(err)
	}
	if err := store.Binder("shop-1", "customer").Bind(ctx, "7654321", "c-2", timeZero); err != nil {
		t.Fatal(err)
	}
	r := units.NewRegistry()
	r.Backend("shop")
	w := r.NewWork(units.Env{Binders: store.Binder}, units.Backend{ID: "shop-1", Type: "shop"}, "order")

	var rec units.Record
	if err := json.Unmarshal([]byte(`{"customer_id": 1234567, "customer": {"id": 7654321}}`), &rec); err != nil {
		t.Fatal(err)
	}
	m := &units.Mapper{Direct: []units.Rule{
		units.DirectFrom(units.ExternalToLocal("customer_id", "customer"), "customer_id"),
		units.DirectFrom(units.ExternalToLocalFrom(units.Follow("customer.id"), "customer"), "nested_id"),
	}}
	got, err := m.MapRecord(w, rec).Values(ctx, units.MapOptions{})
	if err != nil {
		t.Fatalf("Values: %v", err)
	}
	assertValues(t, got, units.Record{"customer_id": "c-1", "nested_id": "c-2"})

	back := &units.Mapper{Direct: []units.Rule{units.DirectFrom(units.LocalToExternal("customer_id", "customer"), "customer_id")}}
	if err := store.Binder("shop-1", "customer").Bind(ctx, "x-9", "2000000", timeZero); err != nil {
		t.Fatal(err)
	}
	got, err = back.MapRecord(w, units.Record{"customer_id": 2000000.0}).Values(ctx, units.MapOptions{})
	if err != nil {
		t.Fatalf("Values (to external): %v", err)
	}
	assertValues(t, got, units.Record{"customer_id": "x-9"})
}

// A Finalize that drops every value (returns nil) must not make the forced
// values panic: they are applied to an empty record.
func TestFinalizeReturningNilKeepsForcedValues(t *testing.T) {
	m := &units.Mapper{
		Direct: []units.Rule{units.Direct("name", "name")},
		Finalize: func(context.Context, *units.MapContext, units.Record) (units.Record, error) {
			return nil, nil
		},
	}
	mr := m.MapRecord(nil, units.Record{"name": "x"})
	mr.Update(units.Record{"forced": 1})
	got, err := mr.Values(context.Background(), units.MapOptions{})
	if err != nil {
		t.Fatal(err)
	}
	assertValues(t, got, units.Record{"forced": 1})
}

// AsString renders a JSON number (a float64) in plain decimal, as Python's
// str() does an int: a SKU of 1234567 is "1234567", not "1.234567e+06".
func TestAsStringOfAJSONNumber(t *testing.T) {
	for v, want := range map[any]string{float64(1234567): "1234567", float64(12.5): "12.5", 42: "42", "x": "x"} {
		if got, err := units.AsString(v); err != nil || got != want {
			t.Errorf("AsString(%v) = %v, %v; want %q", v, got, err, want)
		}
	}
}
