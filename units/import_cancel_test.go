package units_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/connector-go/connector/units"
	"github.com/connector-go/connector/units/unitstest"
)

// An import cancelled (a worker's shutdown) right after its write to a bound
// local record still binds the read's sync date: else the shop's change it
// imported reads as not synced, and the export of a user's edit made next
// imports it first, over the edit, instead of exporting it.
func TestImportCancelledAfterItsWriteStillBinds(t *testing.T) {
	forEachKind(t, func(t *testing.T, f *fixture) {
		f.seedShop()
		f.tick(time.Minute)
		if _, err := f.importRecord(t, "product", "p1", false); err != nil {
			t.Fatal(err)
		}
		prodID := bound(t, f.binder("product"), "p1")
		f.ext.Model("product").Put("p1", units.Record{"name": "Hammer", "price": 14.0, "category": "c1", "updated_at": f.tick(time.Minute)})
		f.tick(time.Minute)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		echo := f.local.OnChange
		f.local.OnChange = func(ctx context.Context, model string, c unitstest.Change) {
			if model == "product" && c.Op == "write" {
				cancel() // the local write is done; the job is cancelled now
			}
			echo(ctx, model, c)
		}
		_, _ = f.reg.RunImport(ctx, f.env, units.ImportRecord{BackendID: backendID, Model: "product", ExternalID: "p1"})
		f.local.OnChange = echo
		if prod, _ := f.local.Model("product").Get(prodID); prod["price"] != 14.0 {
			t.Fatalf("local product %v: the import's write did not happen", prod)
		}
		// A user's edit, exported.
		f.tick(time.Minute)
		if err := f.local.Model("product").Write(context.Background(), prodID, units.Record{"name": "Claw hammer"}); err != nil {
			t.Fatal(err)
		}
		res, err := f.exportRecord(t, "product", prodID, "name")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(res, "updated") {
			t.Errorf("export of the user's edit: %q: the imported change read as not synced", res)
		}
	})
}
