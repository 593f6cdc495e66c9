package units_test

import (
	"context"
	"testing"

	"github.com/connector-go/connector/units"
)

// The record locks of two different records never share a resource name,
// whatever '/' their model names and ids contain: external "y/z" of model
// "x" and external "z" of model "x/y" are two records. Sharing one name,
// an import of the first that depends on the second would find its own
// lock (a false ErrDependencyCycle), and two unrelated imports would wait
// for each other.
func TestLockResourcesOfDifferentRecordsDoNotCollide(t *testing.T) {
	forEachKind(t, func(t *testing.T, f *fixture) {
		shop := f.reg.Backend("shop")
		must := func(err error) {
			t.Helper()
			if err != nil {
				t.Fatal(err)
			}
		}
		must(units.Register(shop, units.ImportMapperUsage, units.AnyModel, &units.Mapper{Direct: []units.Rule{units.Direct("name", "name")}}))
		must(units.Register(shop, units.ImporterUsage, "x", &units.Importer{
			Dependencies: func(context.Context, *units.Work, units.Record) ([]units.Dependency, error) {
				return []units.Dependency{{Model: "x/y", ID: "z"}}, nil
			},
		}))
		f.ext.Model("x").Put("y/z", units.Record{"name": "parent"})
		f.ext.Model("x/y").Put("z", units.Record{"name": "dependency"})
		if _, err := f.importRecord(t, "x", "y/z", false); err != nil {
			t.Fatal(err)
		}
		bound(t, f.binder("x"), "y/z")
		bound(t, f.binder("x/y"), "z")
	})
}
