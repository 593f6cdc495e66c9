package shopconnector_test

import (
	"context"
	"fmt"

	"github.com/connector-go/connector/examples/shopconnector"
	"github.com/connector-go/connector/units"
)

// The version tree at work: v2 has its own mappers, and finds the units it
// does not override (here the deleter) on the backend type.
func ExampleUnits() {
	reg, err := shopconnector.Units(nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx := context.Background()
	fmt.Println(reg.Versions(shopconnector.Type))

	imp, _ := units.Lookup(reg, "shop", "v2", units.ImportMapperUsage, "product")
	shopRec := units.Record{"id": 1.0, "title": "Espresso cup", "unit_price": map[string]any{"amount": "6.50", "currency": "EUR"}}
	local, _ := imp.MapRecord(nil, shopRec).Values(ctx, units.MapOptions{})
	fmt.Println(local)

	// An export maps only the changed fields: a price change sends the price.
	exp, _ := units.Lookup(reg, "shop", "v2", units.ExportMapperUsage, "product")
	out, _ := exp.MapRecord(nil, units.Record{"name": "Espresso cup", "price": 7.0}).Values(ctx, units.MapOptions{Fields: []string{"price"}})
	fmt.Println(out)

	_, err = units.Lookup(reg, "shop", "v2", units.DeleterUsage, "product")
	fmt.Println("v2 deleter inherited:", err == nil)
	// Output:
	// [ v1 v2]
	// map[name:Espresso cup price:6.5]
	// map[unit_price:map[amount:7.00 currency:EUR]]
	// v2 deleter inherited: true
}
