package units_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/connector-go/connector/units"
	"github.com/connector-go/connector/units/unitstest"
)

// Versions inherit units from their parents and override them.
func ExampleRegistry() {
	reg := units.NewRegistry()
	magento := reg.Backend("magento")
	m23 := magento.Version("2.3")
	m24 := m23.Version("2.4")

	greeting := units.NewUsage[string]("greeting")
	_ = units.Register(magento, greeting, "product", "hello from magento")
	_ = units.Register(m24, greeting, "product", "hello from 2.4")

	for _, v := range []string{"", "2.3", "2.4"} {
		g, _ := units.Lookup(reg, "magento", v, greeting, "product")
		fmt.Printf("magento %q: %s\n", v, g)
	}

	err := units.Register(m24, greeting, "product", "again")
	fmt.Println(errors.Is(err, units.ErrDuplicateUnit))

	_, err = units.Lookup(reg, "magento", "2.3", greeting, "order")
	fmt.Println(err)
	// Output:
	// magento "": hello from magento
	// magento "2.3": hello from magento
	// magento "2.4": hello from 2.4
	// true
	// units: no unit "greeting" for model "order" on backend "magento 2.3"
}

// A mapper with direct rules, modifiers, a computed mapping that runs only
// on create, and the fields filter an export uses.
func ExampleMapper() {
	m := &units.Mapper{
		Direct: []units.Rule{
			units.Direct("name", "title"),
			units.DirectFrom(units.Convert("qty", units.AsInt), "quantity"),
			units.DirectFrom(units.None(units.Field("note")), "comment"),
		},
		Computed: []units.Computed{{
			Name: "code", OnlyCreate: true, ChangedBy: []string{"name"},
			Map: func(_ context.Context, mc *units.MapContext, rec units.Record) (units.Record, error) {
				return units.Record{"code": fmt.Sprintf("%v-%v", mc.Option("prefix"), rec["name"])}, nil
			},
		}},
	}
	mr := m.MapRecord(nil, units.Record{"name": "Hammer", "qty": "3", "note": ""})
	ctx := context.Background()

	v, _ := mr.Values(ctx, units.MapOptions{ForCreate: true, Custom: map[string]any{"prefix": "P"}})
	fmt.Println(v)
	v, _ = mr.Values(ctx, units.MapOptions{Fields: []string{"qty"}})
	fmt.Println(v)
	fmt.Println(m.ChangedByFields())
	// Output:
	// map[code:P-Hammer comment:<nil> quantity:3 title:Hammer]
	// map[quantity:3]
	// [name note qty]
}

// A complete import: the shop is an in-memory system, the binder and lock
// are in memory, and the local write is marked with the shop as origin.
func ExampleImporter() {
	shop := unitstest.NewSystem()
	local := unitstest.NewSystem()
	local.OnChange = func(_ context.Context, model string, c unitstest.Change) {
		fmt.Printf("local %s %s %s (origin %q)\n", model, c.Op, c.ID, c.Origin)
	}
	store := unitstest.NewStore()

	reg := units.NewRegistry()
	b := reg.Backend("shop")
	_ = units.Register(b, units.AdapterUsage, units.AnyModel, shop.Factory())
	_ = units.Register(b, units.ImporterUsage, units.AnyModel, &units.Importer{
		UpdatedAt: func(rec units.Record) (time.Time, bool) { t, ok := rec["updated"].(time.Time); return t, ok },
	})
	_ = units.Register(b, units.ImportMapperUsage, "product", &units.Mapper{
		Direct: []units.Rule{units.Direct("title", "name")},
	})

	env := units.Env{
		Backends: units.Backends(units.Backend{ID: "shop-eu", Type: "shop"}),
		Binders:  store.Binder,
		Locker:   store,
		Local:    local.Adapter,
	}
	shop.Model("product").Put("42", units.Record{"title": "Hammer", "updated": time.Now().Add(-time.Hour)})

	ctx := context.Background()
	job := units.ImportRecord{BackendID: "shop-eu", Model: "product", ExternalID: "42"}
	res, err := reg.RunImport(ctx, env, job)
	fmt.Println(res, err)
	_, err = reg.RunImport(ctx, env, job)
	fmt.Println(err)
	// Output:
	// local product create 1 (origin "shop-eu")
	// product 42 imported from shop-eu: local record 1 created <nil>
	// nothing to do: already up to date
}

// Local writes made for a backend carry its id, so listeners can skip them.
func ExampleWithOrigin() {
	ctx := units.WithOrigin(context.Background(), "shop-eu")
	fmt.Printf("%q %q\n", units.OriginFrom(ctx), units.OriginFrom(context.Background()))
	// Output: "shop-eu" ""
}
