package events_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/connector-go/connector/events"
	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/units"
	"github.com/connector-go/connector/units/unitstest"
)

// Echo suppression end to end: the units importer of backend shop-eu writes
// the local record under units.WithOrigin; the local system publishes the
// change event with that origin (Publisher WithOriginFrom(units.OriginFrom));
// the export listener of shop-eu skips it while the export listener of
// shop-us does not. A later user write is exported to shop-eu, and running
// that export writes the shop once: import -> event -> export -> import
// cannot loop.
func TestEchoSuppressionWithUnitsImporter(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	pub := events.NewPublisher(e.js, e.names, events.WithOriginFrom(units.OriginFrom))

	shop, local := unitstest.NewSystem(), unitstest.NewSystem()
	var (
		pubMu     sync.Mutex
		published []events.Event
	)
	local.OnChange = func(ctx context.Context, model string, c unitstest.Change) {
		name := map[string]string{"create": events.Create, "write": events.Write, "delete": events.Unlink}[c.Op]
		fields := make([]string, 0, len(c.Record))
		for f := range c.Record {
			fields = append(fields, f)
		}
		slices.Sort(fields)
		ev := events.Event{Model: model, Name: name, RecordID: c.ID, Fields: fields}
		if _, err := pub.Publish(ctx, ev); err != nil {
			t.Errorf("publish: %v", err)
		}
		ev.Origin = units.OriginFrom(ctx)
		pubMu.Lock()
		published = append(published, ev)
		pubMu.Unlock()
	}
	store := unitstest.NewStore()
	reg := units.NewRegistry()
	b := reg.Backend("shop")
	must(t, units.Register(b, units.AdapterUsage, units.AnyModel, shop.Factory()))
	must(t, units.Register(b, units.ImporterUsage, units.AnyModel, &units.Importer{}))
	must(t, units.Register(b, units.ExporterUsage, units.AnyModel, &units.Exporter{}))
	must(t, units.Register(b, units.ImportMapperUsage, "product", &units.Mapper{Direct: []units.Rule{units.Direct("title", "name")}}))
	must(t, units.Register(b, units.ExportMapperUsage, "product", &units.Mapper{Direct: []units.Rule{units.Direct("name", "title")}}))
	env := units.Env{
		Backends: units.Backends(units.Backend{ID: "shop-eu", Type: "shop"}, units.Backend{ID: "shop-us", Type: "shop"}),
		Binders:  store.Binder,
		Locker:   store,
		Local:    local.Adapter,
	}

	// The export listeners of both backends, enqueuing into a job trap.
	trap := unitstest.NewTrap()
	l := e.listeners()
	for _, backend := range []string{"shop-eu", "shop-us"} {
		must(t, l.On("export_product_"+backend, "product", "", func(ctx context.Context, ev events.Event) error {
			_, err := trap.Enqueue(ctx, units.ExportRecord{BackendID: backend, Model: ev.Model, LocalID: ev.RecordID, Fields: ev.Fields})
			return err
		}, events.WithSkipIf(events.SkipOrigin(backend))))
	}
	e.start(l)

	// Import from shop-eu: the local create carries origin shop-eu.
	shop.Model("product").Put("42", units.Record{"title": "Hammer"})
	if _, err := reg.RunImport(ctx, env, units.ImportRecord{BackendID: "shop-eu", Model: "product", ExternalID: "42"}); err != nil {
		t.Fatal(err)
	}
	// A user edits the record locally: no origin.
	localID := "1"
	if err := local.Model("product").Write(ctx, localID, units.Record{"name": "Hammer XL"}); err != nil {
		t.Fatal(err)
	}
	pubMu.Lock()
	if len(published) != 2 || published[0].Origin != "shop-eu" || published[1].Origin != "" {
		t.Fatalf("published %+v", published)
	}
	pubMu.Unlock()

	exports := func(backend string) []units.ExportRecord {
		var out []units.ExportRecord
		for _, a := range unitstest.ArgsOf[units.ExportRecord](trap) {
			if a.BackendID == backend {
				out = append(out, a)
			}
		}
		return out
	}
	// Both events of the record are in one partition, in order: once the
	// user write's export is enqueued, the import's event was handled too.
	testenv.Eventually(t, 10*time.Second, func() bool {
		return len(exports("shop-eu")) == 1 && len(exports("shop-us")) == 2
	}, "exports enqueued")
	eu := exports("shop-eu")
	if eu[0].LocalID != localID || !slices.Equal(eu[0].Fields, []string{"name"}) {
		t.Fatalf("shop-eu export %+v: want the user's write only", eu[0])
	}

	// Run the shop-eu export: it writes the shop once and nothing comes back.
	if _, err := reg.RunExport(ctx, env, eu[0]); err != nil {
		t.Fatal(err)
	}
	if got, _ := shop.Model("product").Get("42"); got["title"] != "Hammer XL" {
		t.Fatalf("shop record %v", got)
	}
	if n := shop.Model("product").Calls("write"); n != 1 {
		t.Fatalf("shop written %d times", n)
	}
	if n := len(local.Model("product").Changes()); n != 2 {
		t.Fatalf("local changed %d times, want 2 (import, user)", n)
	}
}
