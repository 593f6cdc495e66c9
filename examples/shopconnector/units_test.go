package shopconnector_test

import (
	"testing"
	"time"

	"github.com/connector-go/connector/examples/shopconnector"
	"github.com/connector-go/connector/units"
)

// The version tree: what no version changes (batch importer, deleter) is
// registered once, on the type, and found from both versions; v2 registers
// only what differs (its mappers, and its importers and exporters, which
// read v2's timestamp field "modified" instead of v1's "updated_at").
func TestVersionTree(t *testing.T) {
	reg, err := shopconnector.Units(nil)
	if err != nil {
		t.Fatal(err)
	}
	lookup := func(version string, f func(version string) (any, error)) any {
		t.Helper()
		u, err := f(version)
		if err != nil {
			t.Fatalf("%s: %v", version, err)
		}
		return u
	}
	for _, model := range shopconnector.ImportedModels {
		shared := map[string]func(string) (any, error){
			"batch importer": func(v string) (any, error) {
				return units.Lookup(reg, shopconnector.Type, v, units.BatchImporterUsage, model)
			},
			"deleter": func(v string) (any, error) {
				return units.Lookup(reg, shopconnector.Type, v, units.DeleterUsage, model)
			},
		}
		for name, f := range shared {
			if lookup("v1", f) != lookup("v2", f) {
				t.Errorf("%s %s: v2 has its own; want the type's, inherited", model, name)
			}
		}
	}
	mappers := map[string][]string{
		"import": {"product", "customer", "order", "order.line"},
		"export": shopconnector.ExportedModels,
	}
	for dir, models := range mappers {
		usage := units.ImportMapperUsage
		if dir == "export" {
			usage = units.ExportMapperUsage
		}
		for _, model := range models {
			f := func(v string) (any, error) { return units.Lookup(reg, shopconnector.Type, v, usage, model) }
			if lookup("v1", f) == lookup("v2", f) {
				t.Errorf("%s mapper of %s: v2 inherits v1's, but the field names differ", dir, model)
			}
		}
	}
	// Importers and exporters read the version's timestamp field.
	now := time.Now().UTC().Truncate(time.Microsecond)
	for version, field := range map[string]string{"v1": "updated_at", "v2": "modified"} {
		rec := units.Record{field: now.Format(time.RFC3339Nano)}
		for _, model := range shopconnector.ImportedModels {
			imp, err := units.Lookup(reg, shopconnector.Type, version, units.ImporterUsage, model)
			if err != nil {
				t.Fatal(err)
			}
			if got, ok := imp.UpdatedAt(rec); !ok || !got.Equal(now) {
				t.Errorf("%s %s importer: reads %v %v from %q, want %v", version, model, got, ok, field, now)
			}
		}
		exp, err := units.Lookup(reg, shopconnector.Type, version, units.ExporterUsage, "product")
		if err != nil {
			t.Fatal(err)
		}
		if got, ok := exp.UpdatedAt(rec); !ok || !got.Equal(now) {
			t.Errorf("%s exporter: reads %v %v from %q, want %v", version, got, ok, field, now)
		}
	}
}
