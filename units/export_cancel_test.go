package units_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/connector-go/connector/units"
	"github.com/connector-go/connector/units/unitstest"
)

// An export cancelled (a worker's shutdown) right after its write to a
// bound record still binds the write's sync date: else the job's retry
// finds the shop's record changed since the last sync (by the export's own
// write) and imports it first, an echo of the export.
func TestExportCancelledAfterItsWriteStillBinds(t *testing.T) {
	forEachKind(t, func(t *testing.T, f *fixture) {
		prodID, shop := f.stampingShop(t)
		f.tick(time.Minute)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		shop.OnChange = func(_ context.Context, c unitstest.Change) {
			if c.Op == "write" {
				cancel() // the write is done; the job is cancelled now
			}
		}
		rec, _ := f.local.Model("product").Get(prodID)
		rec["name"] = "Claw hammer"
		f.local.Model("product").Put(prodID, rec)
		a := units.ExportRecord{BackendID: backendID, Model: "product", LocalID: prodID, Fields: []string{"name"}}
		_, _ = f.reg.RunExport(ctx, f.env, a)
		shop.OnChange = nil
		if got, _ := shop.Get("p1"); got["name"] != "Claw hammer" {
			t.Fatalf("shop record %v: the write did not happen", got)
		}
		// The job's retry.
		f.tick(time.Minute)
		res, err := f.reg.RunExport(context.Background(), f.env, a)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(res, "import") {
			t.Errorf("retry: %q: the export's own write read as a change of the shop", res)
		}
	})
}
