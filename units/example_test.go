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

// Line items are mapped by the mapper of the items' model; Skip leaves items
// out and Format shapes the list (here into Odoo-like create commands).
func ExampleChild() {
	line := &units.Mapper{Direct: []units.Rule{
		units.Direct("sku", "product_code"),
		units.DirectFrom(units.Convert("qty", units.AsInt), "quantity"),
	}}
	order := &units.Mapper{
		Direct: []units.Rule{units.Direct("ref", "name")},
		Children: []units.Child{{
			From: "lines", To: "order_line", Model: "order.line", Mapper: line,
			Skip: func(item *units.MapRecord) bool { return item.Source["qty"] == "0" },
			Format: func(items []units.Record) any {
				cmds := make([]any, len(items))
				for i, v := range items {
					cmds[i] = []any{0, 0, v}
				}
				return cmds
			},
		}},
	}
	rec := units.Record{"ref": "SO42", "lines": []any{
		units.Record{"sku": "HAM", "qty": "2"},
		units.Record{"sku": "SAW", "qty": "0"},
	}}
	v, _ := order.MapRecord(nil, rec).Values(context.Background(), units.MapOptions{})
	fmt.Println(v["name"], v["order_line"])
	// Output: SO42 [[0 0 map[product_code:HAM quantity:2]]]
}

// An export creates the record with every mapped field, then sends only the
// changed fields; a record imported from the shop is not echoed back.
func ExampleExporter() {
	shop, local, store := unitstest.NewSystem(), unitstest.NewSystem(), unitstest.NewStore()
	reg := units.NewRegistry()
	b := reg.Backend("shop")
	_ = units.Register(b, units.AdapterUsage, units.AnyModel, shop.Factory())
	_ = units.Register(b, units.ExporterUsage, units.AnyModel, &units.Exporter{})
	_ = units.Register(b, units.ExportMapperUsage, "product", &units.Mapper{Direct: []units.Rule{
		units.Direct("name", "title"),
		units.Direct("price", "price"),
	}})
	env := units.Env{
		Backends: units.Backends(units.Backend{ID: "shop-eu", Type: "shop"}),
		Binders:  store.Binder, Locker: store, Local: local.Adapter,
	}
	// The local system's change events: export unless the change comes
	// from the shop itself.
	local.OnChange = func(ctx context.Context, model string, c unitstest.Change) {
		if c.Origin == "shop-eu" {
			fmt.Println("skip echo of", c.ID)
			return
		}
		var fields []string
		for f := range c.Record {
			fields = append(fields, f)
		}
		res, err := reg.RunExport(ctx, env, units.ExportRecord{BackendID: "shop-eu", Model: model, LocalID: c.ID, Fields: fields})
		fmt.Println(res, err)
	}
	ctx := context.Background()
	id, _ := local.Model("product").Create(ctx, units.Record{"name": "Hammer", "price": 12.5})
	_ = local.Model("product").Write(ctx, id, units.Record{"price": 13.0})
	_ = local.Model("product").Write(units.WithOrigin(ctx, "shop-eu"), id, units.Record{"name": "Hammer (shop)"})
	for _, c := range shop.Model("product").Changes() {
		fmt.Println("shop", c.Op, c.Record)
	}
	// Output:
	// product 1 exported to shop-eu: record 1 created <nil>
	// product 1 exported to shop-eu: record 1 updated <nil>
	// skip echo of 1
	// shop create map[price:12.5 title:Hammer]
	// shop write map[price:13]
}
