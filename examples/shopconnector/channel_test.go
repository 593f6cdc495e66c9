package shopconnector_test

import (
	"context"
	"testing"
	"time"

	"github.com/connector-go/connector/examples/catalog"
	"github.com/connector-go/connector/examples/shopconnector"
	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/job"
	"github.com/connector-go/connector/units"
)

// Every job of the connector goes to its channel (root.shop), including
// the import an exporter enqueues instead of exporting a record that
// changed in the shop since its last sync: the channel's capacity (and a
// throttle that keeps the connector within the shop's rate limit) holds
// for it too.
func TestExportersImportRunsOnTheConnectorsChannel(t *testing.T) {
	e := newE2E(t, "v1")
	ctx := context.Background()
	f := fieldsOf("v1")
	if _, err := e.d.Enqueue(ctx, units.ImportRecord{BackendID: e.shop.ID, Model: "product", ExternalID: "1"},
		job.WithChannel(shopconnector.Channel)); err != nil {
		t.Fatal(err)
	}
	var p1 string
	testenv.Eventually(t, 10*time.Second, func() bool {
		id, found, err := e.binder("product").ToInternal(ctx, "1")
		p1 = id
		return err == nil && found
	}, "product 1 imported and bound")
	// Changed on both sides: the shop's change comes first, so the export
	// of the catalog's change imports the shop's record instead.
	e.shopCall(t, "PATCH", "/v1/products/1", f.price(9.5), nil)
	e.catCall(t, "PATCH", "/products/"+p1, map[string]any{"name": "Espresso cup XL"}, nil)
	testenv.Eventually(t, 10*time.Second, func() bool {
		return e.catRecord(catalog.Product, p1)["price"] == 9.5
	}, "the shop's change imported by the exporter")
	e.listenersIdle(t)
	e.jobs.mu.Lock()
	imports := append([]string(nil), e.jobs.imports...)
	e.jobs.mu.Unlock()
	if len(imports) != 1 {
		t.Fatalf("%d imports enqueued by the synchronizers, want 1", len(imports))
	}
	testenv.Eventually(t, 5*time.Second, func() bool {
		rec, err := e.d.Job(ctx, imports[0])
		return err == nil && rec.State == job.StateDone
	}, "import %s done", imports[0])
	if rec, _ := e.d.Job(ctx, imports[0]); rec.Channel != shopconnector.Channel {
		t.Fatalf("the exporter's import ran on channel %q, want %q", rec.Channel, shopconnector.Channel)
	}
}
