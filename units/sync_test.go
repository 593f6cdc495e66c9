package units_test

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/connector-go/connector/bindings"
	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/job"
	"github.com/connector-go/connector/units"
	"github.com/connector-go/connector/units/unitstest"
)

const backendID = "shop-1"

// fixture: a "shop" backend (versions shop <- 2 <- 3, the instance runs 3)
// with products that depend on categories, an in-memory shop (ext) and an
// in-memory local system whose change events feed an export listener that
// enqueues ExportRecord jobs into a trap unless the change comes from the
// shop itself (echo suppression).
type fixture struct {
	reg   *units.Registry
	ext   *unitstest.System
	local *unitstest.System
	trap  *unitstest.Trap
	env   units.Env

	mu  sync.Mutex
	now time.Time
}

func (f *fixture) clock() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

func (f *fixture) tick(d time.Duration) time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = f.now.Add(d)
	return f.now
}

func updatedAt(rec units.Record) (time.Time, bool) {
	t, ok := rec["updated_at"].(time.Time)
	return t, ok
}

type backendKind struct {
	name string
	new  func(t *testing.T) (func(backendID, model string) units.Binder, units.Locker)
}

// kinds runs a flow with the in-memory binder/locker and with the real Redis
// ones of package bindings.
var kinds = []backendKind{
	{"memory", func(t *testing.T) (func(string, string) units.Binder, units.Locker) {
		s := unitstest.NewStore()
		return s.Binder, s
	}},
	{"redis", func(t *testing.T) (func(string, string) units.Binder, units.Locker) {
		rdb, prefix := testenv.Redis(t)
		s := bindings.New(rdb, prefix)
		return func(b, m string) units.Binder { return s.Binder(b, m) }, s
	}},
}

func forEachKind(t *testing.T, fn func(t *testing.T, f *fixture)) {
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			binders, locker := k.new(t)
			fn(t, newFixture(t, binders, locker))
		})
	}
}

func newFixture(t *testing.T, binders func(string, string) units.Binder, locker units.Locker) *fixture {
	t.Helper()
	f := &fixture{
		reg:   units.NewRegistry(),
		ext:   unitstest.NewSystem(),
		local: unitstest.NewSystem(),
		trap:  unitstest.NewTrap(),
		now:   time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC),
	}
	f.local.OnChange = func(ctx context.Context, model string, c unitstest.Change) {
		if c.Origin == backendID {
			return // written by an import from this backend: do not echo it back
		}
		fields := slices.Sorted(maps.Keys(c.Record))
		_, _ = f.trap.Enqueue(ctx, units.ExportRecord{BackendID: backendID, Model: model, LocalID: c.ID, Fields: fields})
	}
	f.env = units.Env{
		Backends: units.Backends(units.Backend{ID: backendID, Type: "shop", Version: "3"}),
		Binders:  binders,
		Locker:   locker,
		Local:    f.local.Adapter,
		Jobs:     f.trap,
		Now:      f.clock,
	}
	shop := f.reg.Backend("shop")
	v2 := shop.Version("2")
	v3 := v2.Version("3")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(units.Register(shop, units.AdapterUsage, units.AnyModel, f.ext.Factory()))
	must(units.Register(shop, units.ImporterUsage, units.AnyModel, &units.Importer{UpdatedAt: updatedAt}))
	must(units.Register(shop, units.ImporterUsage, "product", &units.Importer{
		UpdatedAt: updatedAt,
		Dependencies: func(_ context.Context, _ *units.Work, rec units.Record) ([]units.Dependency, error) {
			c, _ := rec["category"].(string)
			if c == "" {
				return nil, nil
			}
			return []units.Dependency{{Model: "category", ID: c}}, nil
		},
		Skip: func(_ context.Context, _ *units.Work, rec units.Record) string {
			if rec["draft"] == true {
				return "draft products are not imported"
			}
			return ""
		},
	}))
	must(units.Register(shop, units.ImportMapperUsage, "category", &units.Mapper{Direct: []units.Rule{units.Direct("name", "name")}}))
	must(units.Register(shop, units.ImportMapperUsage, "product", &units.Mapper{Direct: []units.Rule{
		units.Direct("name", "name"),
		units.Direct("price", "price"),
		units.DirectFrom(units.ExternalToLocal("category", "category"), "category_id"),
	}}))
	must(units.Register(shop, units.DeleterUsage, units.AnyModel, &units.Deleter{}))
	must(units.Register(shop, units.BatchImporterUsage, units.AnyModel, &units.BatchImporter{PageSize: 2}))
	// Version 2 brings exports; version 3 makes category batch imports delayed.
	must(units.Register(v2, units.ExporterUsage, units.AnyModel, &units.Exporter{UpdatedAt: updatedAt}))
	must(units.Register(v2, units.ExporterUsage, "product", &units.Exporter{
		UpdatedAt:  updatedAt,
		JobOptions: []job.Option{job.WithChannel("root.shop")},
		Dependencies: func(_ context.Context, _ *units.Work, rec units.Record) ([]units.Dependency, error) {
			c, _ := rec["category_id"].(string)
			if c == "" {
				return nil, nil
			}
			return []units.Dependency{{Model: "category", ID: c}}, nil
		},
	}))
	must(units.Register(v2, units.ExportMapperUsage, "category", &units.Mapper{Direct: []units.Rule{units.Direct("name", "name")}}))
	must(units.Register(v2, units.ExportMapperUsage, "product", &units.Mapper{Direct: []units.Rule{
		units.Direct("name", "name"),
		units.Direct("price", "price"),
		units.DirectFrom(units.LocalToExternal("category_id", "category"), "category"),
	}}))
	must(units.Register(v3, units.BatchImporterUsage, "category", &units.BatchImporter{Delayed: true, PageSize: 2,
		JobOptions: []job.Option{job.WithChannel("root.shop")}}))
	return f
}

func (f *fixture) binder(model string) units.Binder { return f.env.Binders(backendID, model) }

func (f *fixture) importRecord(t *testing.T, model, id string, force bool) (string, error) {
	t.Helper()
	return f.reg.RunImport(context.Background(), f.env, units.ImportRecord{BackendID: backendID, Model: model, ExternalID: id, Force: force})
}

func (f *fixture) exportRecord(t *testing.T, model, id string, fields ...string) (string, error) {
	t.Helper()
	return f.reg.RunExport(context.Background(), f.env, units.ExportRecord{BackendID: backendID, Model: model, LocalID: id, Fields: fields})
}

func bound(t *testing.T, b units.Binder, ext string) string {
	t.Helper()
	id, found, err := b.ToInternal(context.Background(), ext)
	if err != nil || !found {
		t.Fatalf("external %q not bound (found %v, err %v)", ext, found, err)
	}
	return id
}

func nothingToDo(t *testing.T, err error, want string) {
	t.Helper()
	var n *job.NothingToDoError
	if !errors.As(err, &n) || !strings.Contains(n.Msg, want) {
		t.Fatalf("err = %v, want job.NothingToDo(%q)", err, want)
	}
}

func (f *fixture) seedShop() {
	f.ext.Model("category").Put("c1", units.Record{"name": "Tools", "updated_at": f.clock()})
	f.ext.Model("product").Put("p1", units.Record{"name": "Hammer", "price": 12.5, "category": "c1", "updated_at": f.clock()})
}

// Importing a product imports its category first, maps the category to its
// local id, creates the local product marked as coming from the shop, and
// binds both with the sync date.
func TestImportWithDependency(t *testing.T) {
	forEachKind(t, func(t *testing.T, f *fixture) {
		f.seedShop()
		f.tick(time.Minute)
		res, err := f.importRecord(t, "product", "p1", false)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(res, "created") {
			t.Errorf("result %q", res)
		}
		catID := bound(t, f.binder("category"), "c1")
		prodID := bound(t, f.binder("product"), "p1")
		cat, _ := f.local.Model("category").Get(catID)
		prod, _ := f.local.Model("product").Get(prodID)
		if cat["name"] != "Tools" || prod["name"] != "Hammer" || prod["price"] != 12.5 || prod["category_id"] != catID {
			t.Errorf("local category %v product %v", cat, prod)
		}
		synced, found, err := f.binder("product").SyncDate(context.Background(), "p1")
		if err != nil || !found || !synced.Equal(f.clock()) {
			t.Errorf("sync date %v %v %v, want %v", synced, found, err, f.clock())
		}
		for _, m := range []string{"category", "product"} {
			for _, c := range f.local.Model(m).Changes() {
				if c.Origin != backendID {
					t.Errorf("%s %s written with origin %q, want %q", m, c.Op, c.Origin, backendID)
				}
			}
		}

		// A bound dependency is not imported again ...
		reads := f.ext.Model("category").Calls("read")
		f.tick(time.Minute)
		if _, err := f.importRecord(t, "product", "p1", true); err != nil {
			t.Fatal(err)
		}
		if got := f.ext.Model("category").Calls("read"); got != reads {
			t.Errorf("bound category read again (%d -> %d reads)", reads, got)
		}
		// ... unless asked to always import it.
		w, err := f.reg.Work(context.Background(), f.env, backendID, "product")
		if err != nil {
			t.Fatal(err)
		}
		if err := units.ImportDependency(context.Background(), w, units.Dependency{Model: "category", ID: "c1", Always: true}); err != nil {
			t.Fatal(err)
		}
		if got := f.ext.Model("category").Calls("read"); got != reads+1 {
			t.Errorf("Always: %d category reads, want %d", got, reads+1)
		}
	})
}

// Without force, a record not updated since the last sync is skipped as
// "already up to date"; forced, or updated later, it is imported again.
func TestImportAlreadyUpToDate(t *testing.T) {
	forEachKind(t, func(t *testing.T, f *fixture) {
		f.seedShop()
		f.tick(time.Minute)
		if _, err := f.importRecord(t, "product", "p1", false); err != nil {
			t.Fatal(err)
		}
		writes := len(f.local.Model("product").Changes())
		f.tick(time.Minute)
		_, err := f.importRecord(t, "product", "p1", false)
		nothingToDo(t, err, "already up to date")
		if got := len(f.local.Model("product").Changes()); got != writes {
			t.Errorf("up-to-date import wrote the local record")
		}

		res, err := f.importRecord(t, "product", "p1", true)
		if err != nil || !strings.Contains(res, "updated") {
			t.Fatalf("forced import: %q, %v", res, err)
		}

		f.ext.Model("product").Put("p1", units.Record{"name": "Big hammer", "price": 13.0, "category": "c1", "updated_at": f.tick(time.Minute)})
		f.tick(time.Minute)
		if _, err := f.importRecord(t, "product", "p1", false); err != nil {
			t.Fatal(err)
		}
		prod, _ := f.local.Model("product").Get(bound(t, f.binder("product"), "p1"))
		if prod["name"] != "Big hammer" {
			t.Errorf("newer record not imported: %v", prod)
		}
	})
}

// Echo suppression: local writes made by an import carry the backend as
// origin, so the export listener enqueues nothing; a user's edit is exported.
func TestImportEchoSuppression(t *testing.T) {
	forEachKind(t, func(t *testing.T, f *fixture) {
		f.seedShop()
		if _, err := f.importRecord(t, "product", "p1", false); err != nil {
			t.Fatal(err)
		}
		if n := len(f.trap.Jobs()); n != 0 {
			t.Fatalf("import echoed %d export jobs: %+v", n, f.trap.Jobs())
		}
		prodID := bound(t, f.binder("product"), "p1")
		if err := f.local.Model("product").Write(context.Background(), prodID, units.Record{"price": 15.0}); err != nil {
			t.Fatal(err)
		}
		got := unitstest.ArgsOf[units.ExportRecord](f.trap)
		want := units.ExportRecord{BackendID: backendID, Model: "product", LocalID: prodID, Fields: []string{"price"}}
		if len(got) != 1 || got[0].LocalID != want.LocalID || !slices.Equal(got[0].Fields, want.Fields) {
			t.Fatalf("export jobs = %+v, want [%+v]", got, want)
		}
		// Running the trapped export sends only the changed field.
		if err := f.trap.Perform(context.Background(), func(ctx context.Context, a job.Args) (string, error) {
			return f.reg.RunJob(ctx, f.env, a)
		}); err != nil {
			t.Fatal(err)
		}
		ch := f.ext.Model("product").Changes()
		if len(ch) != 1 || ch[0].Op != "write" || ch[0].ID != "p1" || !maps.Equal(ch[0].Record, units.Record{"price": 15.0}) {
			t.Errorf("shop writes = %+v", ch)
		}
	})
}

// Lock contention: while another job holds the record lock, the import fails
// with a retryable error that does not count as an attempt, and writes
// nothing; once released, it runs.
func TestImportLockContention(t *testing.T) {
	forEachKind(t, func(t *testing.T, f *fixture) {
		f.seedShop()
		ctx := context.Background()
		release, err := f.env.Locker.Acquire(ctx, "import/"+backendID+"/product/p1", time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		_, err = f.importRecord(t, "product", "p1", false)
		r, ok := job.AsRetryable(err)
		if !ok || !r.NoCount {
			t.Fatalf("err = %v, want a job.RetryNoCount", err)
		}
		if f.local.Model("product").Len() != 0 {
			t.Error("import wrote while the lock was held")
		}
		if err := release(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := f.importRecord(t, "product", "p1", false); err != nil {
			t.Fatal(err)
		}
	})
}

// Two imports of one record at the same time: the second one, arriving while
// the first holds the lock, is retried without counting; retried after the
// first finished, it finds the record up to date. One local record only.
func TestImportConcurrentSameRecord(t *testing.T) {
	forEachKind(t, func(t *testing.T, f *fixture) {
		f.seedShop()
		entered, proceed := make(chan struct{}), make(chan struct{})
		v3 := f.reg.Backend("shop").Version("2").Version("3")
		if err := units.Register(v3, units.ImporterUsage, "category", &units.Importer{
			UpdatedAt: updatedAt,
			Validate: func(context.Context, *units.Work, units.Record, bool) error {
				close(entered) // only the first run gets here
				<-proceed
				return nil
			},
		}); err != nil {
			t.Fatal(err)
		}
		first := make(chan error, 1)
		go func() {
			_, err := f.importRecord(t, "category", "c1", false)
			first <- err
		}()
		select { // the first import holds the lock
		case <-entered:
		case err := <-first:
			t.Fatalf("the first import ended without reaching Validate: %v", err)
		}
		_, err := f.importRecord(t, "category", "c1", false)
		if r, ok := job.AsRetryable(err); !ok || !r.NoCount {
			t.Fatalf("second import while the first runs: err = %v, want RetryNoCount", err)
		}
		close(proceed)
		if err := <-first; err != nil {
			t.Fatal(err)
		}
		f.tick(time.Second)
		_, err = f.importRecord(t, "category", "c1", false)
		nothingToDo(t, err, "already up to date")
		if n := f.local.Model("category").Len(); n != 1 {
			t.Errorf("%d local categories, want 1", n)
		}
	})
}

func TestImportSkipMissingAndBackendDown(t *testing.T) {
	f := newFixture(t, unitstest.NewStore().Binder, unitstest.NewStore())
	f.ext.Model("product").Put("p2", units.Record{"name": "Draft", "draft": true})
	_, err := f.importRecord(t, "product", "p2", false)
	nothingToDo(t, err, "draft products are not imported")

	_, err = f.importRecord(t, "product", "nope", false)
	nothingToDo(t, err, "no longer exists")

	f.ext.Model("product").SetDown(true)
	_, err = f.importRecord(t, "product", "p2", false)
	if _, ok := job.AsRetryable(err); !ok {
		t.Errorf("backend down: err = %v, want retryable", err)
	}

	_, err = f.reg.RunImport(context.Background(), f.env, units.ImportRecord{BackendID: "other", Model: "product", ExternalID: "x"})
	if !errors.Is(err, units.ErrUnknownInstance) {
		t.Errorf("unknown backend: %v", err)
	}
	_, err = f.reg.RunExport(context.Background(), f.env, units.ExportRecord{BackendID: backendID, Model: "product", LocalID: "x"})
	nothingToDo(t, err, "no longer exists")
}

// Validation failures stop the import before anything is written.
func TestImportValidate(t *testing.T) {
	f := newFixture(t, unitstest.NewStore().Binder, unitstest.NewStore())
	bad := errors.New("price must be positive")
	v3 := f.reg.Backend("shop").Version("2").Version("3")
	if err := units.Register(v3, units.ImporterUsage, "product", &units.Importer{
		Validate: func(_ context.Context, _ *units.Work, v units.Record, create bool) error {
			if p, _ := v["price"].(float64); p <= 0 {
				return bad
			}
			return nil
		},
	}); err != nil {
		t.Fatal(err)
	}
	f.ext.Model("product").Put("p3", units.Record{"name": "Free", "price": 0.0})
	if _, err := f.importRecord(t, "product", "p3", false); !errors.Is(err, bad) {
		t.Fatalf("err = %v", err)
	}
	if f.local.Model("product").Len() != 0 {
		t.Error("invalid record written")
	}
}

// Export: the first run exports the category dependency, then creates the
// product with all fields; the next run writes only the changed fields.
func TestExportFlow(t *testing.T) {
	forEachKind(t, func(t *testing.T, f *fixture) {
		ctx := context.Background()
		catID, _ := f.local.Model("category").Create(ctx, units.Record{"name": "Tools"})
		prodID, _ := f.local.Model("product").Create(ctx, units.Record{"name": "Saw", "price": 20.0, "category_id": catID})
		res, err := f.exportRecord(t, "product", prodID, "price")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(res, "created") {
			t.Errorf("result %q", res)
		}
		catExt, found, _ := f.binder("category").ToExternal(ctx, catID)
		if !found {
			t.Fatal("category dependency not exported")
		}
		prodExt, found, _ := f.binder("product").ToExternal(ctx, prodID)
		if !found {
			t.Fatal("product not bound")
		}
		got, _ := f.ext.Model("product").Get(prodExt)
		if !maps.Equal(got, units.Record{"name": "Saw", "price": 20.0, "category": catExt}) {
			t.Errorf("created with %v (create maps all fields, whatever the changed fields)", got)
		}

		f.tick(time.Minute)
		if _, err := f.exportRecord(t, "product", prodID, "price"); err != nil {
			t.Fatal(err)
		}
		ch := f.ext.Model("product").Changes()
		last := ch[len(ch)-1]
		if last.Op != "write" || !maps.Equal(last.Record, units.Record{"price": 20.0}) {
			t.Errorf("update sent %+v, want only the price", last)
		}
		if n := len(f.ext.Model("category").Changes()); n != 1 {
			t.Errorf("bound category exported again (%d writes)", n)
		}
		_, err = f.exportRecord(t, "product", prodID, "unmapped")
		nothingToDo(t, err, "nothing to export")
	})
}

// When the shop's record changed after our last sync, the exporter imports it
// (a forced ImportRecord job) instead of overwriting it.
func TestExportImportsFirstWhenExternalChanged(t *testing.T) {
	forEachKind(t, func(t *testing.T, f *fixture) {
		f.seedShop()
		if _, err := f.importRecord(t, "product", "p1", false); err != nil {
			t.Fatal(err)
		}
		prodID := bound(t, f.binder("product"), "p1")
		f.ext.Model("product").Put("p1", units.Record{"name": "Renamed in shop", "price": 12.5, "category": "c1", "updated_at": f.tick(time.Minute)})
		writes := len(f.ext.Model("product").Changes())

		res, err := f.exportRecord(t, "product", prodID, "name")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(res, "import enqueued") {
			t.Errorf("result %q", res)
		}
		jobs := f.trap.Named("connector.import_record")
		want := units.ImportRecord{BackendID: backendID, Model: "product", ExternalID: "p1", Force: true}
		if len(jobs) != 1 || jobs[0].Args != want || jobs[0].Options.IdentityKey != want.IdentityKey() ||
			jobs[0].Options.Channel != "root.shop" { // the exporter's JobOptions
			t.Fatalf("jobs = %+v", f.trap.Jobs())
		}
		if len(f.ext.Model("product").Changes()) != writes {
			t.Error("exporter overwrote the changed record")
		}

		// With jobs run inline, the import happens right away.
		in := unitstest.NewInline(f.reg, f.env)
		if _, err := f.reg.RunExport(context.Background(), in.Env(), units.ExportRecord{BackendID: backendID, Model: "product", LocalID: prodID}); err != nil {
			t.Fatal(err)
		}
		prod, _ := f.local.Model("product").Get(prodID)
		if prod["name"] != "Renamed in shop" {
			t.Errorf("local after inline import: %v", prod)
		}
		if r := in.Results(); len(r) != 1 || r[0].Err != nil {
			t.Errorf("inline results %+v", r)
		}
	})
}

func TestExportLockContention(t *testing.T) {
	forEachKind(t, func(t *testing.T, f *fixture) {
		ctx := context.Background()
		id, _ := f.local.Model("category").Create(ctx, units.Record{"name": "Tools"})
		release, err := f.env.Locker.Acquire(ctx, "export/"+backendID+"/category/"+id, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		_, err = f.exportRecord(t, "category", id)
		if r, ok := job.AsRetryable(err); !ok || !r.NoCount {
			t.Fatalf("err = %v, want RetryNoCount", err)
		}
		if f.ext.Model("category").Len() != 0 {
			t.Error("exported while locked")
		}
		_ = release(ctx)
		if _, err := f.exportRecord(t, "category", id); err != nil {
			t.Fatal(err)
		}
	})
}

func TestDeleter(t *testing.T) {
	forEachKind(t, func(t *testing.T, f *fixture) {
		f.seedShop()
		if _, err := f.importRecord(t, "category", "c1", false); err != nil {
			t.Fatal(err)
		}
		a := units.DeleteRecord{BackendID: backendID, Model: "category", ExternalID: "c1"}
		if _, err := f.reg.RunDelete(context.Background(), f.env, a); err != nil {
			t.Fatal(err)
		}
		if _, ok := f.ext.Model("category").Get("c1"); ok {
			t.Error("not deleted in the shop")
		}
		if _, found, _ := f.binder("category").ToInternal(context.Background(), "c1"); found {
			t.Error("binding kept")
		}
		_, err := f.reg.RunDelete(context.Background(), f.env, a)
		nothingToDo(t, err, "already deleted")
	})
}

// Direct batch import pages through the search (page size 2, 5 records).
func TestBatchImportDirect(t *testing.T) {
	f := newFixture(t, unitstest.NewStore().Binder, unitstest.NewStore())
	for _, id := range []string{"a", "b", "c", "d", "e"} {
		f.ext.Model("product").Put(id, units.Record{"name": id})
	}
	f.ext.Model("product").Put("x", units.Record{"name": "x", "draft": true})
	res, err := f.reg.RunBatchImport(context.Background(), f.env, units.ImportBatch{BackendID: backendID, Model: "product"})
	if err != nil {
		t.Fatal(err)
	}
	if f.local.Model("product").Len() != 5 || f.ext.Model("product").Calls("search") != 4 { // 3 full pages of 2, then an empty one
		t.Errorf("%d products, %d searches", f.local.Model("product").Len(), f.ext.Model("product").Calls("search"))
	}
	if !strings.Contains(res, "5 product records imported") || !strings.Contains(res, "1 had nothing to do") {
		t.Errorf("result %q", res)
	}
	// Filters reach the search: only the matching records are imported.
	f.ext.Model("product").Put("f", units.Record{"name": "f", "brand": "acme"})
	f.ext.Model("product").Put("g", units.Record{"name": "g", "brand": "other"})
	res, err = f.reg.RunBatchImport(context.Background(), f.env, units.ImportBatch{BackendID: backendID, Model: "product", Filters: map[string]any{"brand": "acme"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, found, _ := f.binder("product").ToInternal(context.Background(), "g"); found || !strings.Contains(res, "1 product records imported") {
		t.Errorf("filtered batch: %q, g imported %v", res, found)
	}
	bound(t, f.binder("product"), "f")
	// A failing record fails the batch (retryable stays retryable).
	f.ext.Model("product").SetDown(true)
	_, err = f.reg.RunBatchImport(context.Background(), f.env, units.ImportBatch{BackendID: backendID, Model: "product"})
	if _, ok := job.AsRetryable(err); !ok {
		t.Errorf("backend down: %v, want retryable", err)
	}
}

// unpaged is a backend whose Search ignores Offset and Limit (an API without
// paging, as adaptertest.Harness.NoPaging allows). It fails past 10 searches
// rather than let a batch loop for ever.
type unpaged struct {
	units.Adapter
	searches int
}

func (u *unpaged) Search(ctx context.Context, q units.Query) ([]string, error) {
	if u.searches++; u.searches > 10 {
		return nil, errors.New("unpaged: too many searches")
	}
	q.Offset, q.Limit = 0, 0
	return u.Adapter.Search(ctx, q)
}

// A batch import over a backend that ignores paging imports each record
// once and stops, instead of searching the same page again for ever.
func TestBatchImportOverABackendWithoutPaging(t *testing.T) {
	for _, delayed := range []bool{false, true} {
		f := newFixture(t, unitstest.NewStore().Binder, unitstest.NewStore())
		v3 := f.reg.Backend("shop").Version("2").Version("3")
		ad := &unpaged{Adapter: f.ext.Model("product")}
		if err := units.Register(v3, units.AdapterUsage, "product", func(*units.Work) (units.Adapter, error) { return ad, nil }); err != nil {
			t.Fatal(err)
		}
		if err := units.Register(v3, units.BatchImporterUsage, "product", &units.BatchImporter{PageSize: 2, Delayed: delayed}); err != nil {
			t.Fatal(err)
		}
		in := unitstest.NewInline(f.reg, f.env)
		f.env.Jobs = in
		for _, id := range []string{"a", "b", "c"} {
			f.ext.Model("product").Put(id, units.Record{"name": id})
		}
		res, err := f.reg.RunBatchImport(context.Background(), f.env, units.ImportBatch{BackendID: backendID, Model: "product"})
		if err != nil {
			t.Fatalf("delayed %v: %v", delayed, err)
		}
		if n := len(in.Results()); delayed && n != 3 {
			t.Errorf("delayed: %d import jobs, want 3: %q", n, res)
		}
		if !delayed && !strings.Contains(res, "3 product records imported") {
			t.Errorf("direct: result %q", res)
		}
		if n := f.local.Model("product").Len(); n != 3 {
			t.Errorf("delayed %v: %d local products, want 3", delayed, n)
		}
	}
}

// Delayed batch import (registered on version 3) enqueues one job per record
// with an identity key: a second batch adds no duplicate while they pend.
func TestBatchImportDelayed(t *testing.T) {
	f := newFixture(t, unitstest.NewStore().Binder, unitstest.NewStore())
	for _, id := range []string{"c1", "c2", "c3"} {
		f.ext.Model("category").Put(id, units.Record{"name": id})
	}
	a := units.ImportBatch{BackendID: backendID, Model: "category"}
	for range 2 {
		if _, err := f.reg.RunBatchImport(context.Background(), f.env, a); err != nil {
			t.Fatal(err)
		}
	}
	jobs := f.trap.Named("connector.import_record")
	if len(jobs) != 3 {
		t.Fatalf("%d jobs, want 3: %+v", len(jobs), jobs)
	}
	for i, j := range jobs {
		want := units.ImportRecord{BackendID: backendID, Model: "category", ExternalID: []string{"c1", "c2", "c3"}[i]}
		if j.Args != want || j.Options.IdentityKey != want.IdentityKey() || j.Options.Channel != "root.shop" {
			t.Errorf("job %d = %+v", i, j)
		}
	}
	if f.local.Model("category").Len() != 0 {
		t.Error("delayed batch imported directly")
	}
	if err := f.trap.Perform(context.Background(), func(ctx context.Context, a job.Args) (string, error) {
		return f.reg.RunJob(ctx, f.env, a)
	}); err != nil {
		t.Fatal(err)
	}
	if f.local.Model("category").Len() != 3 || len(f.trap.Jobs()) != 0 {
		t.Errorf("after Perform: %d categories, %d jobs", f.local.Model("category").Len(), len(f.trap.Jobs()))
	}
	f.env.Jobs = nil
	if _, err := f.reg.RunBatchImport(context.Background(), f.env, a); !errors.Is(err, units.ErrEnv) {
		t.Errorf("delayed batch without Env.Jobs: %v, want ErrEnv", err)
	}
}

// With the inline runner, a delayed batch import runs its jobs at once.
func TestInlineRunner(t *testing.T) {
	f := newFixture(t, unitstest.NewStore().Binder, unitstest.NewStore())
	f.ext.Model("category").Put("c1", units.Record{"name": "Tools"})
	in := unitstest.NewInline(f.reg, f.env)
	var custom []string
	in.Handle("custom.job", func(_ context.Context, a job.Args) (string, error) {
		custom = append(custom, a.JobName())
		return "ok", nil
	})
	if _, err := in.Enqueue(context.Background(), units.ImportBatch{BackendID: backendID, Model: "category"}); err != nil {
		t.Fatal(err)
	}
	if f.local.Model("category").Len() != 1 {
		t.Error("inline batch did not import")
	}
	if _, err := in.Enqueue(context.Background(), customJob{}); err != nil || len(custom) != 1 {
		t.Errorf("custom handler: %v %v", err, custom)
	}
	res := in.Results()
	if len(res) != 3 || res[0].Args.JobName() != "connector.import_record" || res[1].Args.JobName() != "connector.import_batch" { // a job is recorded when it ends
		t.Errorf("results %+v", res)
	}
	_, err := f.reg.RunJob(context.Background(), f.env, customJob{})
	if !errors.Is(err, units.ErrUnknownArgs) {
		t.Errorf("RunJob(custom) = %v", err)
	}
}

type customJob struct{}

func (customJob) JobName() string { return "custom.job" }

// A usage the framework does not ship, found through the work context.
func TestCustomUsageThroughWork(t *testing.T) {
	type pricer func(units.Record) float64
	pricing := units.NewUsage[pricer]("pricing")
	r := units.NewRegistry()
	shop := r.Backend("shop")
	v2 := shop.Version("2")
	mustRegister(t, shop, pricing, "product", pricer(func(units.Record) float64 { return 1 }))
	mustRegister(t, v2, pricing, "product", pricer(func(units.Record) float64 { return 2 }))
	w := r.NewWork(units.Env{}, units.Backend{ID: "s", Type: "shop", Version: "2"}, "order")
	if _, err := units.Find(w, pricing); !errors.Is(err, units.ErrNoUnit) {
		t.Errorf("order pricing: %v", err)
	}
	p, err := units.Find(w.WithModel("product"), pricing)
	if err != nil || p(nil) != 2 {
		t.Errorf("product pricing: %v", err)
	}
}

// A bound record deleted on the other side is created again (all fields),
// and the stale binding is replaced.
func TestRecreateMissingBoundRecords(t *testing.T) {
	forEachKind(t, func(t *testing.T, f *fixture) {
		ctx := context.Background()
		f.seedShop()
		if _, err := f.importRecord(t, "category", "c1", false); err != nil {
			t.Fatal(err)
		}
		oldLocal := bound(t, f.binder("category"), "c1")
		_ = f.local.Model("category").Delete(ctx, oldLocal)
		res, err := f.importRecord(t, "category", "c1", true)
		if err != nil || !strings.Contains(res, "created") {
			t.Fatalf("re-import: %q %v", res, err)
		}
		newLocal := bound(t, f.binder("category"), "c1")
		if newLocal == oldLocal || f.local.Model("category").Len() != 1 {
			t.Errorf("local %s -> %s, %d records", oldLocal, newLocal, f.local.Model("category").Len())
		}

		// Export side, without (category) and with (product) the
		// changed-externally check.
		_ = f.ext.Model("category").Delete(ctx, "c1")
		if res, err := f.exportRecord(t, "category", newLocal, "name"); err != nil || !strings.Contains(res, "created") {
			t.Fatalf("re-export category: %q %v", res, err)
		}
		catExt, _, _ := f.binder("category").ToExternal(ctx, newLocal)
		if got, ok := f.ext.Model("category").Get(catExt); !ok || got["name"] != "Tools" {
			t.Errorf("category recreated as %v", got)
		}
		prodID, _ := f.local.Model("product").Create(ctx, units.Record{"name": "Saw", "price": 1.0, "category_id": newLocal})
		if _, err := f.exportRecord(t, "product", prodID); err != nil {
			t.Fatal(err)
		}
		prodExt, _, _ := f.binder("product").ToExternal(ctx, prodID)
		_ = f.ext.Model("product").Delete(ctx, prodExt)
		if res, err := f.exportRecord(t, "product", prodID, "price"); err != nil || !strings.Contains(res, "created") {
			t.Fatalf("re-export product: %q %v", res, err)
		}
		newExt, _, _ := f.binder("product").ToExternal(ctx, prodID)
		if got, _ := f.ext.Model("product").Get(newExt); newExt == prodExt || got["name"] != "Saw" {
			t.Errorf("product recreated as %s %v", newExt, got)
		}
	})
}

// Without Env.Jobs, an exporter that finds the external record changed
// imports it inline.
func TestExportImportsInlineWithoutJobs(t *testing.T) {
	f := newFixture(t, unitstest.NewStore().Binder, unitstest.NewStore())
	f.env.Jobs = nil
	f.seedShop()
	if _, err := f.importRecord(t, "category", "c1", false); err != nil {
		t.Fatal(err)
	}
	f.ext.Model("category").Put("c1", units.Record{"name": "Renamed", "updated_at": f.tick(time.Minute)})
	res, err := f.exportRecord(t, "category", bound(t, f.binder("category"), "c1"))
	if err != nil || !strings.Contains(res, "imported instead of exported") {
		t.Fatalf("%q %v", res, err)
	}
	got, _ := f.local.Model("category").Get(bound(t, f.binder("category"), "c1"))
	if got["name"] != "Renamed" {
		t.Errorf("local %v", got)
	}
	if len(f.ext.Model("category").Changes()) != 0 {
		t.Error("exported anyway")
	}
}

// A change the backend takes while its record is being imported (after the
// read, before the bind) is imported in its turn: the binding's sync date
// is when the record was read, so the change is not taken for one the
// import already brought.
func TestImportDoesNotSwallowAChangeMadeDuringIt(t *testing.T) {
	forEachKind(t, func(t *testing.T, f *fixture) {
		f.seedShop()
		f.tick(time.Minute)
		changed := false
		err := units.Register(f.reg.Backend("shop"), units.ImporterUsage, "category", &units.Importer{
			UpdatedAt: updatedAt,
			Validate: func(context.Context, *units.Work, units.Record, bool) error {
				if !changed {
					changed = true
					// The shop takes a change now; the import binds a moment later.
					f.ext.Model("category").Put("c1", units.Record{"name": "Hand tools", "updated_at": f.tick(time.Second)})
					f.tick(time.Second)
				}
				return nil
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.importRecord(t, "category", "c1", false); err != nil {
			t.Fatal(err)
		}
		// The change's own import (its event, or the next batch import).
		if _, err := f.importRecord(t, "category", "c1", false); err != nil {
			t.Fatalf("the change made during the first import was not imported: %v", err)
		}
		cat, _ := f.local.Model("category").Get(bound(t, f.binder("category"), "c1"))
		if cat["name"] != "Hand tools" {
			t.Errorf("local category %v, want the shop's change", cat)
		}
	})
}

// stampingShop imports the shop's product p1, then makes the shop stamp
// its records' updated_at at each write, as shops do. It returns the local
// product's id and the shop's products.
func (f *fixture) stampingShop(t *testing.T) (string, *unitstest.Memory) {
	t.Helper()
	f.seedShop()
	f.tick(time.Minute)
	if _, err := f.importRecord(t, "product", "p1", false); err != nil {
		t.Fatal(err)
	}
	shop := f.ext.Model("product")
	shop.StampField, shop.Clock = "updated_at", f.clock
	return bound(t, f.binder("product"), "p1"), shop
}

// changeAfterExportWrite (on a stampingShop) arranges that someone changes
// p1's price in the shop right after the next export's write, before the
// export binds (and, with andImport, that the change's own import runs
// then too). The flag says whether the change was made.
func (f *fixture) changeAfterExportWrite(t *testing.T, andImport bool) (string, *unitstest.Memory, *bool) {
	t.Helper()
	prodID, shop := f.stampingShop(t)
	changed := new(bool)
	shop.OnChange = func(ctx context.Context, c unitstest.Change) {
		if c.Op != "write" || *changed {
			return
		}
		*changed = true
		rec, _ := shop.Get("p1")
		rec["price"], rec["updated_at"] = 99.0, f.tick(time.Second)
		shop.Put("p1", rec)
		f.tick(time.Second)
		if !andImport {
			return
		}
		if res, err := f.importRecord(t, "product", "p1", false); err != nil {
			t.Errorf("concurrent import: %q, %v", res, err)
		}
	}
	f.tick(time.Minute)
	return prodID, shop, changed
}

// A change someone makes in the shop just after an export's write (before
// the export binds) is newer than the binding's sync date, since the
// adapter returns the stored record (units.ReturningWriter) and its stamp
// is the sync date: the next export imports first instead of overwriting
// it, and the change's own import is not "already up to date".
func TestExportDoesNotSwallowAChangeMadeRightAfterItsWrite(t *testing.T) {
	forEachKind(t, func(t *testing.T, f *fixture) {
		prodID, shop, changed := f.changeAfterExportWrite(t, false)
		res, err := f.exportRecord(t, "product", prodID, "name")
		if err != nil || !strings.Contains(res, "updated") || !*changed {
			t.Fatalf("first export: %q, %v (shop changed: %v)", res, err, *changed)
		}
		writes := len(shop.Changes())
		res, err = f.exportRecord(t, "product", prodID, "name")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(res, "import enqueued") || len(shop.Changes()) != writes {
			t.Fatalf("second export: %q: the shop's change was taken as synced", res)
		}
		if _, err := f.importRecord(t, "product", "p1", false); err != nil {
			t.Fatalf("the shop's change was not imported: %v", err)
		}
		if prod, _ := f.local.Model("product").Get(prodID); prod["price"] != 99.0 {
			t.Errorf("local product %v, want the shop's price", prod)
		}
	})
}

// An import that runs while an export of the same record writes (they take
// different locks), after a change made in the shop, binds a later sync
// date than the stamp of the export's write: the export must not take it
// back. Else the change reads as not synced, and the next export imports
// first, over a local change, which is lost.
func TestExportDoesNotTakeBackAConcurrentImportsSyncDate(t *testing.T) {
	forEachKind(t, func(t *testing.T, f *fixture) {
		prodID, shop, changed := f.changeAfterExportWrite(t, true)
		rename := func(name string) {
			rec, _ := f.local.Model("product").Get(prodID)
			rec["name"] = name
			f.local.Model("product").Put(prodID, rec)
		}
		rename("Claw hammer")
		if res, err := f.exportRecord(t, "product", prodID, "name"); err != nil || !strings.Contains(res, "updated") || !*changed {
			t.Fatalf("first export: %q, %v", res, err)
		}
		f.tick(time.Minute)
		rename("Nail")
		res, err := f.exportRecord(t, "product", prodID, "name")
		if err != nil || !strings.Contains(res, "updated") {
			t.Fatalf("second export: %q, %v: the imported change read as not synced", res, err)
		}
		if rec, _ := shop.Get("p1"); rec["name"] != "Nail" || rec["price"] != 99.0 {
			t.Errorf("shop record %v", rec)
		}
	})
}

// staleAnswer is a shop whose write answers carry the record as it was
// before the write (a stamp set by the database, not in the answer).
type staleAnswer struct{ *unitstest.Memory }

func (s staleAnswer) WriteReturning(ctx context.Context, id string, rec units.Record) (units.Record, error) {
	before, err := s.Memory.Read(ctx, id, nil)
	if err != nil {
		return nil, err
	}
	return before, s.Memory.Write(ctx, id, rec)
}

// A write answer whose stamp is not after the one read before the write is
// not that write's: the sync date is the time of the bind, and the export's
// own write does not read as a change of the shop at the next export.
func TestExportIgnoresAStaleStampInTheAnswer(t *testing.T) {
	forEachKind(t, func(t *testing.T, f *fixture) {
		prodID, _ := f.stampingShop(t)
		if err := units.Replace(f.reg.Backend("shop"), units.AdapterUsage, units.AnyModel, func(w *units.Work) (units.Adapter, error) {
			return staleAnswer{f.ext.Model(w.Model)}, nil
		}); err != nil {
			t.Fatal(err)
		}
		for i, name := range []string{"Claw hammer", "Nail"} {
			f.tick(time.Minute)
			rec, _ := f.local.Model("product").Get(prodID)
			rec["name"] = name
			f.local.Model("product").Put(prodID, rec)
			if res, err := f.exportRecord(t, "product", prodID, "name"); err != nil || !strings.Contains(res, "updated") {
				t.Fatalf("export %d: %q, %v", i+1, res, err)
			}
		}
	})
}

// An import's identity key tells records apart even when their parts hold
// the separator: backend "a:b", model "c" and backend "a", model "b:c"
// are two records, two pending imports. Keys without ':' are unchanged.
func TestImportIdentityKeysDoNotCollide(t *testing.T) {
	recs := []units.ImportRecord{
		{BackendID: "a:b", Model: "c", ExternalID: "1"},
		{BackendID: "a", Model: "b:c", ExternalID: "1"},
		{BackendID: "a", Model: "b", ExternalID: "c:1"},
		{BackendID: `a\`, Model: "b", ExternalID: "c:1"},
		{BackendID: `a\:b`, Model: "c", ExternalID: "1"},
		{BackendID: `a\`, Model: `:b`, ExternalID: "c:1"},
	}
	seen := map[string]units.ImportRecord{}
	for _, r := range recs {
		k := r.IdentityKey()
		if o, dup := seen[k]; dup {
			t.Errorf("%+v and %+v share the identity key %q", o, r, k)
		}
		seen[k] = r
	}
	plain := units.ImportRecord{BackendID: "shop", Model: "product", ExternalID: "42"}
	if got, want := plain.IdentityKey(), "connector.import_record:shop:product:42"; got != want {
		t.Errorf("identity key %q, want %q (unchanged for parts without ':')", got, want)
	}
}

// capped is a backend whose pages hold at most 3 ids, whatever the Limit
// asked (as many APIs cap theirs).
type capped struct{ units.Adapter }

func (c capped) Search(ctx context.Context, q units.Query) ([]string, error) {
	if q.Limit == 0 || q.Limit > 3 {
		q.Limit = 3
	}
	return c.Adapter.Search(ctx, q)
}

// A batch import over a backend that caps its pages below PageSize
// imports every record, not the first page only.
func TestBatchImportOverABackendThatCapsItsPages(t *testing.T) {
	for _, delayed := range []bool{false, true} {
		f := newFixture(t, unitstest.NewStore().Binder, unitstest.NewStore())
		v3 := f.reg.Backend("shop").Version("2").Version("3")
		ids := []string{"a", "b", "c", "d", "e", "f", "g"}
		for _, id := range ids {
			f.ext.Model("product").Put(id, units.Record{"name": id})
		}
		if err := units.Register(v3, units.AdapterUsage, "product", func(*units.Work) (units.Adapter, error) { return capped{f.ext.Model("product")}, nil }); err != nil {
			t.Fatal(err)
		}
		if err := units.Register(v3, units.BatchImporterUsage, "product", &units.BatchImporter{PageSize: 10, Delayed: delayed}); err != nil {
			t.Fatal(err)
		}
		f.env.Jobs = unitstest.NewInline(f.reg, f.env)
		res, err := f.reg.RunBatchImport(context.Background(), f.env, units.ImportBatch{BackendID: backendID, Model: "product"})
		if err != nil {
			t.Fatalf("delayed %v: %v", delayed, err)
		}
		if n := f.local.Model("product").Len(); n != len(ids) {
			t.Errorf("delayed %v: %d local products, want %d: %q", delayed, n, len(ids), res)
		}
	}
}

// An importer that reads some fields only (Importer.Fields) updates those
// alone: the mapper's rules from fields it did not read do not clear the
// local values (a missing field maps to nil).
func TestImporterWithFieldsLeavesTheOthersAlone(t *testing.T) {
	f := newFixture(t, unitstest.NewStore().Binder, unitstest.NewStore())
	v3 := f.reg.Backend("shop").Version("2").Version("3")
	if err := units.Register(v3, units.ImporterUsage, "category", &units.Importer{Fields: []string{"name"}}); err != nil {
		t.Fatal(err)
	}
	if err := units.Register(v3, units.ImportMapperUsage, "category", &units.Mapper{Direct: []units.Rule{
		units.Direct("name", "name"), units.Direct("code", "code"),
	}}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	f.ext.Model("category").Put("c1", units.Record{"name": "Shoes", "code": "SH"})
	a := units.ImportRecord{BackendID: backendID, Model: "category", ExternalID: "c1"}
	if _, err := f.reg.RunImport(ctx, f.env, a); err != nil {
		t.Fatal(err)
	}
	localID := bound(t, f.binder("category"), "c1")
	if err := f.local.Model("category").Write(ctx, localID, units.Record{"code": "SH-local"}); err != nil {
		t.Fatal(err)
	}
	f.ext.Model("category").Put("c1", units.Record{"name": "Boots", "code": "SH"})
	a.Force = true
	if _, err := f.reg.RunImport(ctx, f.env, a); err != nil {
		t.Fatal(err)
	}
	got, _ := f.local.Model("category").Get(localID)
	if got["name"] != "Boots" || got["code"] != "SH-local" {
		t.Errorf("local category after the import of its name: %v, want name Boots and code SH-local kept", got)
	}
}
