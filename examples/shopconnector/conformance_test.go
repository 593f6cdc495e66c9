package shopconnector_test

import (
	"fmt"
	"net/http/httptest"
	"testing"

	"github.com/connector-go/connector/examples/shop"
	"github.com/connector-go/connector/examples/shopconnector"
	"github.com/connector-go/connector/units"
	"github.com/connector-go/connector/units/adaptertest"
)

// The shop adapter passes the framework's adapter conformance suite
// (units/adaptertest), for both API versions and the models it exports,
// each subtest on an empty shop. The shop's lists have no equality
// filters (only updated_since), so that part of the suite is skipped.
func TestShopAdapterConformance(t *testing.T) {
	for _, v := range []struct{ version, listKey string }{{"v1", "items"}, {"v2", "data"}} {
		for _, m := range []struct {
			model, field string
			record       func(i int) units.Record
		}{
			{"product", map[string]string{"v1": "name", "v2": "title"}[v.version], func(i int) units.Record {
				if v.version == "v1" {
					return units.Record{"name": fmt.Sprintf("product %d", i), "price": float64(i) + 0.5}
				}
				return units.Record{"title": fmt.Sprintf("product %d", i), "unit_price": map[string]any{"amount": fmt.Sprintf("%d.50", i), "currency": "EUR"}}
			}},
			{"customer", map[string]string{"v1": "name", "v2": "display_name"}[v.version], func(i int) units.Record {
				if v.version == "v1" {
					return units.Record{"name": fmt.Sprintf("customer %d", i), "email": fmt.Sprintf("c%d@example.com", i)}
				}
				return units.Record{"display_name": fmt.Sprintf("customer %d", i), "email_address": fmt.Sprintf("c%d@example.com", i)}
			}},
		} {
			t.Run(v.version+"/"+m.model, func(t *testing.T) {
				servers := map[units.Adapter]*httptest.Server{}
				adaptertest.Run(t, adaptertest.Harness{
					New: func(t *testing.T) units.Adapter {
						srv := httptest.NewServer(shop.NewServer())
						t.Cleanup(srv.Close)
						a, err := shopconnector.NewShopAdapter(nil, srv.URL, v.version, m.model, v.listKey)
						if err != nil {
							t.Fatal(err)
						}
						servers[a] = srv
						return a
					},
					Record:    m.record,
					Field:     m.field,
					MissingID: "999999",
					NoFilter:  true,
					Break: func(t *testing.T, a units.Adapter) {
						srv := servers[a]
						srv.CloseClientConnections()
						srv.Close()
					},
				})
			})
		}
	}
}
