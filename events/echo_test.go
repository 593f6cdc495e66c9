package events_test

import (
	"context"
	"maps"
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
	pub := e.publisher(events.WithOriginFrom(units.OriginFrom))

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

// echoLoop is a connector between a shop and the local system, closed into
// a loop as in production: the shop's webhook enqueues an import of every
// record written in the shop (by a shop user or by the connector's own
// export), the local system publishes an event for every write (with the
// importer's origin), and the export listener enqueues an export of every
// event it does not skip. Jobs run in rounds, each after the listener has
// handled every event published so far.
type echoLoop struct {
	e           *env
	reg         *units.Registry
	env         units.Env
	jobs        *unitstest.Trap
	shop, local *unitstest.System
}

func newEchoLoop(t *testing.T, suppress bool) *echoLoop {
	e := newEnv(t)
	pub := e.publisher(events.WithOriginFrom(units.OriginFrom))
	lp := &echoLoop{e: e, reg: units.NewRegistry(), jobs: unitstest.NewTrap(),
		shop: unitstest.NewSystem(), local: unitstest.NewSystem()}
	lp.local.OnChange = func(ctx context.Context, model string, c unitstest.Change) {
		name := map[string]string{"create": events.Create, "write": events.Write, "delete": events.Unlink}[c.Op]
		fields := slices.Sorted(maps.Keys(c.Record))
		if _, err := pub.Publish(ctx, events.Event{Model: model, Name: name, RecordID: c.ID, Fields: fields}); err != nil {
			t.Errorf("publish: %v", err)
		}
	}
	lp.shop.OnChange = func(ctx context.Context, model string, c unitstest.Change) {
		_, _ = lp.jobs.Enqueue(ctx, units.ImportRecord{BackendID: "shop-eu", Model: model, ExternalID: c.ID})
	}
	store := unitstest.NewStore()
	b := lp.reg.Backend("shop")
	must(t, units.Register(b, units.AdapterUsage, units.AnyModel, lp.shop.Factory()))
	must(t, units.Register(b, units.ImporterUsage, units.AnyModel, &units.Importer{}))
	must(t, units.Register(b, units.ExporterUsage, units.AnyModel, &units.Exporter{}))
	must(t, units.Register(b, units.ImportMapperUsage, "product", &units.Mapper{Direct: []units.Rule{units.Direct("title", "name")}}))
	must(t, units.Register(b, units.ExportMapperUsage, "product", &units.Mapper{Direct: []units.Rule{units.Direct("name", "title")}}))
	lp.env = units.Env{
		Backends: units.Backends(units.Backend{ID: "shop-eu", Type: "shop"}),
		Binders:  store.Binder, Locker: store, Local: lp.local.Adapter,
	}
	var opts []events.ListenOption
	if suppress {
		opts = append(opts, events.WithSkipIf(events.SkipOrigin("shop-eu")))
	}
	l := e.listeners()
	must(t, l.On("export_product_shop-eu", "product", "", func(ctx context.Context, ev events.Event) error {
		_, err := lp.jobs.Enqueue(ctx, units.ExportRecord{BackendID: "shop-eu", Model: ev.Model, LocalID: ev.RecordID, Fields: ev.Fields})
		return err
	}, append(opts, events.WithPartitions(2))...))
	e.start(l)
	return lp
}

// listenerIdle: every event published so far has been handled or skipped.
func (lp *echoLoop) listenerIdle() bool { return lp.e.caughtUp("export_product_shop-eu", 2) }

// settle runs rounds of jobs until none is left (true) or maxRounds ran.
func (lp *echoLoop) settle(t *testing.T, maxRounds int) (rounds int, quiet bool) {
	t.Helper()
	ctx := context.Background()
	for rounds = 0; rounds < maxRounds; rounds++ {
		testenv.Eventually(t, 10*time.Second, lp.listenerIdle, "listener handled every event")
		jobs := lp.jobs.Jobs()
		lp.jobs.Reset()
		if len(jobs) == 0 {
			return rounds, true
		}
		for _, j := range jobs {
			if _, err := lp.reg.RunJob(ctx, lp.env, j.Args); err != nil && !units.IsNothingToDo(err) {
				t.Fatalf("job %s: %v", j.Args.JobName(), err)
			}
		}
	}
	return rounds, false
}

// The echo-suppression loop test, end to end: shop webhook -> units
// importer (writes under units.WithOrigin) -> local event with that origin
// -> export listener with SkipOrigin -> export job -> shop write -> webhook
// ... over real NATS. With SkipOrigin the loop settles: a shop change is
// imported once and not sent back; a local change is exported once, and
// its re-import is not exported again. Without SkipOrigin the same setup
// never settles, which shows the test would catch a broken suppression.
func TestEchoLoopSettlesWithSkipOrigin(t *testing.T) {
	t.Run("suppressed", func(t *testing.T) {
		lp := newEchoLoop(t, true)
		ctx := context.Background()
		// A shop user creates a product: webhook, import, local create.
		extID, err := lp.shop.Model("product").Create(ctx, units.Record{"title": "Hammer"})
		must(t, err)
		if rounds, quiet := lp.settle(t, 6); !quiet || rounds != 1 {
			t.Fatalf("shop change: quiet %v after %d rounds, want quiet after 1 (the import)", quiet, rounds)
		}
		changes := lp.local.Model("product").Changes()
		if len(changes) != 1 || changes[0].Origin != "shop-eu" || lp.shop.Model("product").Calls("write") != 0 {
			t.Fatalf("local changes %+v, shop writes %d: want one import, nothing sent back", changes, lp.shop.Model("product").Calls("write"))
		}
		// A local user renames it: export, shop write, webhook, re-import
		// (origin shop-eu: skipped), quiet.
		must(t, lp.local.Model("product").Write(ctx, changes[0].ID, units.Record{"name": "Hammer XL"}))
		if rounds, quiet := lp.settle(t, 6); !quiet || rounds != 2 {
			t.Fatalf("local change: quiet %v after %d rounds, want quiet after 2 (export, re-import)", quiet, rounds)
		}
		if got, _ := lp.shop.Model("product").Get(extID); got["title"] != "Hammer XL" || lp.shop.Model("product").Calls("write") != 1 {
			t.Fatalf("shop record %v written %d times, want Hammer XL once", got, lp.shop.Model("product").Calls("write"))
		}
		origins := []string{}
		for _, c := range lp.local.Model("product").Changes() {
			origins = append(origins, c.Origin)
		}
		if !slices.Equal(origins, []string{"shop-eu", "", "shop-eu"}) {
			t.Fatalf("local change origins %q, want import, user, re-import", origins)
		}
	})
	t.Run("not suppressed: the loop is real", func(t *testing.T) {
		lp := newEchoLoop(t, false)
		_, err := lp.shop.Model("product").Create(context.Background(), units.Record{"title": "Hammer"})
		must(t, err)
		if rounds, quiet := lp.settle(t, 6); quiet {
			t.Fatalf("settled after %d rounds without echo suppression: the loop test proves nothing", rounds)
		}
		if n := lp.shop.Model("product").Calls("write"); n < 2 {
			t.Fatalf("shop written %d times; want the echo loop to write it again and again", n)
		}
	})
}
