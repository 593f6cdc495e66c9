package shopconnector_test

import (
	"fmt"
	"net/http/httptest"
	"testing"

	"github.com/connector-go/connector/examples/catalog"
	"github.com/connector-go/connector/examples/shopconnector"
	"github.com/connector-go/connector/units"
	"github.com/connector-go/connector/units/adaptertest"
)

// The catalog adapter (the local side) passes the adapter conformance suite
// too, each subtest on an empty catalog. The catalog's lists have no
// equality filters, so that part of the suite is skipped.
func TestCatalogAdapterConformance(t *testing.T) {
	for _, m := range []struct {
		model  string
		record func(i int) units.Record
	}{
		{"product", func(i int) units.Record {
			return units.Record{"name": fmt.Sprintf("product %d", i), "price": float64(i) + 0.5}
		}},
		{"customer", func(i int) units.Record {
			return units.Record{"name": fmt.Sprintf("customer %d", i), "email": fmt.Sprintf("c%d@example.com", i)}
		}},
	} {
		t.Run(m.model, func(t *testing.T) {
			servers := map[units.Adapter]*httptest.Server{}
			adaptertest.Run(t, adaptertest.Harness{
				New: func(t *testing.T) units.Adapter {
					srv := httptest.NewServer(catalog.New())
					t.Cleanup(srv.Close)
					a, err := shopconnector.NewCatalogAdapter(nil, srv.URL, m.model)
					if err != nil {
						t.Fatal(err)
					}
					servers[a] = srv
					return a
				},
				Record:    m.record,
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
