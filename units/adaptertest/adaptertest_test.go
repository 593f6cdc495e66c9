package adaptertest_test

import (
	"testing"

	"github.com/connector-go/connector/units"
	"github.com/connector-go/connector/units/adaptertest"
	"github.com/connector-go/connector/units/unitstest"
)

// The in-memory adapter connector authors test with passes the suite.
func TestMemoryConformance(t *testing.T) {
	adaptertest.Run(t, adaptertest.Harness{
		New:   func(t *testing.T) units.Adapter { return unitstest.NewMemory("product") },
		Break: func(t *testing.T, a units.Adapter) { a.(*unitstest.Memory).SetDown(true) },
	})
}

// The tracing wrapper the work context puts around adapters keeps the
// contract (errors pass through unchanged).
func TestTracedAdapterConformance(t *testing.T) {
	var cur *unitstest.Memory // subtests run one after the other
	reg := units.NewRegistry()
	err := units.Register(reg.Backend("shop"), units.AdapterUsage, "product",
		func(*units.Work) (units.Adapter, error) { return cur, nil })
	if err != nil {
		t.Fatal(err)
	}
	adaptertest.Run(t, adaptertest.Harness{
		New: func(t *testing.T) units.Adapter {
			cur = unitstest.NewMemory("product")
			w := reg.NewWork(units.Env{}, units.Backend{ID: "s1", Type: "shop"}, "product")
			a, err := w.Adapter()
			if err != nil {
				t.Fatal(err)
			}
			return a
		},
		Break: func(t *testing.T, _ units.Adapter) { cur.SetDown(true) },
	})
}
