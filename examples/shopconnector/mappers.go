package shopconnector

import (
	"context"
	"fmt"
	"time"

	"github.com/connector-go/connector/units"
)

// The mappers translate between the shop's fields and the catalog's:
//
//	catalog          shop v1               shop v2
//	product.name     name                  title
//	product.price    price (number)        unit_price {"amount": "12.50", "currency": "EUR"}
//	customer.name    name                  display_name
//	customer.email   email                 email_address
//	order.customer_id customer_id          customer.id
//	order.state      status                state
//	order.lines      lines[]               items[]
//	  .product_id      .product_id           .product.id
//	  .quantity        .quantity             .qty
//	  .price           .price                .unit_price
//
// Related records (an order's customer, a line's product) are translated
// through their bindings: units.ExternalToLocal reads the binding of the
// shop id and gives the catalog id.

// v1 import mappers: shop v1 record -> catalog record.
var (
	importProductV1 = &units.Mapper{Direct: []units.Rule{
		units.Direct("name", "name"),
		units.Direct("price", "price"),
	}}
	importCustomerV1 = &units.Mapper{Direct: []units.Rule{
		units.Direct("name", "name"),
		units.Direct("email", "email"),
	}}
	importOrderV1 = &units.Mapper{
		Direct: []units.Rule{
			units.DirectFrom(units.ExternalToLocal("customer_id", "customer"), "customer_id"),
			units.Direct("status", "state"),
		},
		// The lines are mapped by the "order.line" import mapper of the
		// backend's version (looked up at run time: v2 registers its own).
		Children: []units.Child{{From: "lines", To: "lines", Model: "order.line"}},
	}
	importLineV1 = &units.Mapper{Direct: []units.Rule{
		units.DirectFrom(units.ExternalToLocal("product_id", "product"), "product_id"),
		units.DirectFrom(units.Convert("quantity", units.AsInt), "quantity"),
		units.Direct("price", "price"),
	}}
)

// v1 export mappers: catalog record -> shop v1 record.
var (
	exportProductV1 = &units.Mapper{Direct: []units.Rule{
		units.Direct("name", "name"),
		units.Direct("price", "price"),
	}}
	exportCustomerV1 = &units.Mapper{Direct: []units.Rule{
		units.Direct("name", "name"),
		units.Direct("email", "email"),
	}}
)

// v2 import mappers. Nested values are read with units.Follow.
var (
	importProductV2 = &units.Mapper{Direct: []units.Rule{
		units.Direct("title", "name"),
		units.DirectFrom(amount(units.Follow("unit_price.amount")), "price"),
	}}
	importCustomerV2 = &units.Mapper{Direct: []units.Rule{
		units.Direct("display_name", "name"),
		units.Direct("email_address", "email"),
	}}
	importOrderV2 = &units.Mapper{
		Direct: []units.Rule{
			units.DirectFrom(toLocal(units.Follow("customer.id"), "customer"), "customer_id"),
			units.Direct("state", "state"),
		},
		Children: []units.Child{{From: "items", To: "lines", Model: "order.line"}},
	}
	importLineV2 = &units.Mapper{Direct: []units.Rule{
		units.DirectFrom(toLocal(units.Follow("product.id"), "product"), "product_id"),
		units.DirectFrom(units.Convert("qty", units.AsInt), "quantity"),
		units.DirectFrom(amount(units.Follow("unit_price.amount")), "price"),
	}}
)

// v2 export mappers. The price becomes a money object: a computed mapping,
// run only when "price" is among the changed fields (ChangedBy).
var (
	exportProductV2 = &units.Mapper{
		Direct: []units.Rule{units.Direct("name", "title")},
		Computed: []units.Computed{{
			Name: "unit_price", ChangedBy: []string{"price"},
			Map: func(_ context.Context, _ *units.MapContext, rec units.Record) (units.Record, error) {
				var price float64 // no price: 0.00
				if p, err := units.AsFloat(rec["price"]); err == nil {
					price = p.(float64)
				}
				return units.Record{"unit_price": map[string]any{"amount": fmt.Sprintf("%.2f", price), "currency": "EUR"}}, nil
			},
		}},
	}
	exportCustomerV2 = &units.Mapper{Direct: []units.Rule{
		units.Direct("name", "display_name"),
		units.Direct("email", "email_address"),
	}}
)

// amount converts a decimal string ("12.50") to a number.
func amount(src units.Source) units.Source {
	return units.Modifier(src, func(_ context.Context, _ *units.MapContext, v any) (any, error) {
		if units.IsEmpty(v) {
			return nil, nil
		}
		return units.AsFloat(v)
	})
}

// toLocal translates the shop id given by src into the catalog id of model,
// through the binding: units.ExternalToLocal for a nested value.
func toLocal(src units.Source, model string) units.Source {
	return units.Modifier(src, func(ctx context.Context, mc *units.MapContext, v any) (any, error) {
		if units.IsEmpty(v) {
			return nil, nil
		}
		b, err := mc.Work.BinderFor(model)
		if err != nil {
			return nil, err
		}
		id := idOf(v)
		local, found, err := b.ToInternal(ctx, id)
		if err != nil {
			return nil, err
		}
		if !found {
			return nil, fmt.Errorf("%w: %s %s is not imported", units.ErrMapping, model, id)
		}
		return local, nil
	})
}

// stamp reads the modification time the shop puts in field ("updated_at"
// in v1, "modified" in v2): importers and exporters compare it with the
// binding's sync date.
func stamp(field string) func(units.Record) (time.Time, bool) {
	return func(rec units.Record) (time.Time, bool) {
		s, _ := rec[field].(string)
		t, err := time.Parse(time.RFC3339Nano, s)
		return t, err == nil
	}
}

// orderDeps lists the shop records an order needs in the catalog first: its
// customer and the products of its lines. customer and product extract the
// ids in the version's shape.
func orderDeps(customer func(units.Record) any, lines string, product func(units.Record) any) func(context.Context, *units.Work, units.Record) ([]units.Dependency, error) {
	return func(_ context.Context, _ *units.Work, rec units.Record) ([]units.Dependency, error) {
		deps := []units.Dependency{{Model: "customer", ID: idOf(customer(rec))}}
		items, _ := rec[lines].([]any)
		for _, it := range items {
			if line, ok := it.(map[string]any); ok {
				deps = append(deps, units.Dependency{Model: "product", ID: idOf(product(line))})
			}
		}
		return deps, nil
	}
}

func field(name string) func(units.Record) any {
	return func(r units.Record) any { return r[name] }
}

func nestedID(name string) func(units.Record) any {
	return func(r units.Record) any {
		m, _ := r[name].(map[string]any)
		return m["id"]
	}
}
