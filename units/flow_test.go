package units_test

// The synchronizers' steps, in the order the seed runs them, and the hooks
// of every step.

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/connector-go/connector/job"
	"github.com/connector-go/connector/units"
	"github.com/connector-go/connector/units/unitstest"
)

// flowLog records the calls a run makes to adapters, binders, locks and
// hooks.
type flowLog struct {
	mu     sync.Mutex
	events []string
}

func (l *flowLog) add(format string, a ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.events = append(l.events, fmt.Sprintf(format, a...))
}

func (l *flowLog) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	ev := l.events
	l.events = nil
	return ev
}

type loggedAdapter struct {
	units.Adapter
	log         *flowLog
	side, model string
}

func (a loggedAdapter) Search(ctx context.Context, q units.Query) ([]string, error) {
	a.log.add("%s.search %s", a.side, a.model)
	return a.Adapter.Search(ctx, q)
}

func (a loggedAdapter) Read(ctx context.Context, id string, fields []string) (units.Record, error) {
	a.log.add("%s.read %s/%s", a.side, a.model, id)
	return a.Adapter.Read(ctx, id, fields)
}

func (a loggedAdapter) Create(ctx context.Context, rec units.Record) (string, error) {
	id, err := a.Adapter.Create(ctx, rec)
	a.log.add("%s.create %s", a.side, a.model)
	return id, err
}

func (a loggedAdapter) Write(ctx context.Context, id string, rec units.Record) error {
	a.log.add("%s.write %s/%s", a.side, a.model, id)
	return a.Adapter.Write(ctx, id, rec)
}

func (a loggedAdapter) Delete(ctx context.Context, id string) error {
	a.log.add("%s.delete %s/%s", a.side, a.model, id)
	return a.Adapter.Delete(ctx, id)
}

type loggedBinder struct {
	units.Binder
	log   *flowLog
	model string
}

func (b loggedBinder) ToInternal(ctx context.Context, ext string) (string, bool, error) {
	b.log.add("binder.to_internal %s/%s", b.model, ext)
	return b.Binder.ToInternal(ctx, ext)
}

func (b loggedBinder) ToExternal(ctx context.Context, local string) (string, bool, error) {
	b.log.add("binder.to_external %s/%s", b.model, local)
	return b.Binder.ToExternal(ctx, local)
}

func (b loggedBinder) Bind(ctx context.Context, ext, local string, at time.Time) error {
	b.log.add("binder.bind %s/%s", b.model, ext)
	return b.Binder.Bind(ctx, ext, local, at)
}

func (b loggedBinder) Unbind(ctx context.Context, ext string) error {
	b.log.add("binder.unbind %s/%s", b.model, ext)
	return b.Binder.Unbind(ctx, ext)
}

func (b loggedBinder) SyncDate(ctx context.Context, ext string) (time.Time, bool, error) {
	b.log.add("binder.sync_date %s/%s", b.model, ext)
	return b.Binder.SyncDate(ctx, ext)
}

type loggedLocker struct {
	units.Locker
	log *flowLog
}

func (l loggedLocker) Acquire(ctx context.Context, res string, ttl time.Duration) (func(context.Context) error, error) {
	release, err := l.Locker.Acquire(ctx, res, ttl)
	if err != nil {
		l.log.add("lock %s: held", res)
		return nil, err
	}
	l.log.add("lock %s", res)
	return func(ctx context.Context) error {
		l.log.add("unlock %s", res)
		return release(ctx)
	}, nil
}

// logged wraps the fixture's adapters, binders and locker so that every call
// is recorded, and returns the version-3 node to register hooks on.
func (f *fixture) logged(t *testing.T) (*flowLog, *units.Node) {
	t.Helper()
	log := &flowLog{}
	binders, locker, local := f.env.Binders, f.env.Locker, f.env.Local
	f.env.Binders = func(b, m string) units.Binder { return loggedBinder{binders(b, m), log, m} }
	f.env.Locker = loggedLocker{locker, log}
	f.env.Local = func(m string) (units.Adapter, error) {
		a, err := local(m)
		return loggedAdapter{a, log, "local", m}, err
	}
	v3 := f.reg.Backend("shop").Version("2").Version("3")
	shopAdapter := f.ext.Factory()
	if err := units.Register(v3, units.AdapterUsage, units.AnyModel, units.AdapterFactory(func(w *units.Work) (units.Adapter, error) {
		a, err := shopAdapter(w)
		return loggedAdapter{a, log, "shop", w.Model}, err
	})); err != nil {
		t.Fatal(err)
	}
	return log, v3
}

// inOrder checks that want appear in got in this order (other events may
// come between them).
func inOrder(t *testing.T, got []string, want ...string) {
	t.Helper()
	i := 0
	for _, g := range got {
		if i < len(want) && g == want[i] {
			i++
		}
	}
	if i < len(want) {
		t.Errorf("events:\n  %s\nwant, in this order:\n  %s\nmissing from %q on", strings.Join(got, "\n  "), strings.Join(want, "\n  "), want[i])
	}
}

// Importer.Run: read -> skip -> binding -> up to date? -> lock -> binding
// again -> dependencies -> map -> validate -> local create/write -> bind ->
// after -> unlock. A record up to date stops before the lock.
func TestImporterSteps(t *testing.T) {
	forEachKind(t, func(t *testing.T, f *fixture) {
		log, v3 := f.logged(t)
		base, err := units.Lookup(f.reg, "shop", "3", units.ImportMapperUsage, "product")
		if err != nil {
			t.Fatal(err)
		}
		var afterLocal string
		var afterRec units.Record
		if err := units.Register(v3, units.ImporterUsage, "product", &units.Importer{
			Fields:    []string{"name", "price", "category", "updated_at"},
			UpdatedAt: updatedAt,
			Skip: func(context.Context, *units.Work, units.Record) string {
				log.add("skip")
				return ""
			},
			Dependencies: func(_ context.Context, _ *units.Work, rec units.Record) ([]units.Dependency, error) {
				log.add("dependencies")
				return []units.Dependency{{Model: "category", ID: rec["category"].(string)}}, nil
			},
			Mapper: units.Inherit(units.Mapper{Computed: []units.Computed{{Name: "origin", Map: func(_ context.Context, mc *units.MapContext, _ units.Record) (units.Record, error) {
				log.add("map")
				return units.Record{"source": mc.Option("source")}, nil
			}}}}, base),
			Options: map[string]any{"source": "shop import"},
			Validate: func(_ context.Context, _ *units.Work, v units.Record, create bool) error {
				log.add("validate create=%v", create)
				return nil
			},
			After: func(_ context.Context, _ *units.Work, localID string, rec units.Record) error {
				log.add("after")
				afterLocal, afterRec = localID, rec
				return nil
			},
		}); err != nil {
			t.Fatal(err)
		}
		f.seedShop()
		f.ext.Model("product").Put("p1", units.Record{"name": "Hammer", "price": 12.5, "category": "c1", "updated_at": f.clock(), "secret": "not read"})
		f.tick(time.Minute)
		res, err := f.importRecord(t, "product", "p1", false)
		if err != nil {
			t.Fatal(err)
		}
		inOrder(t, log.take(),
			"shop.read product/p1",
			"skip",
			"binder.to_internal product/p1",
			"lock import/shop-1/product/p1",
			"binder.to_internal product/p1",
			"dependencies",
			"lock import/shop-1/category/c1",
			"local.create category",
			"binder.bind category/c1",
			"unlock import/shop-1/category/c1",
			"map",
			"validate create=true",
			"local.create product",
			"binder.bind product/p1",
			"after",
			"unlock import/shop-1/product/p1",
		)
		prodID := bound(t, f.binder("product"), "p1")
		prod, _ := f.local.Model("product").Get(prodID)
		if prod["source"] != "shop import" {
			t.Errorf("Importer.Options did not reach the mapper: %v", prod)
		}
		if afterLocal != prodID || afterRec["name"] != "Hammer" {
			t.Errorf("After got %q %v", afterLocal, afterRec)
		}
		if _, ok := afterRec["secret"]; ok {
			t.Errorf("read %v: Importer.Fields not given to Read", afterRec)
		}
		if want := "product p1 imported from shop-1: local record " + prodID + " created"; res != want {
			t.Errorf("result %q, want %q", res, want)
		}

		// Up to date: nothing past the sync date check, no lock.
		f.tick(time.Minute)
		_, err = f.importRecord(t, "product", "p1", false)
		nothingToDo(t, err, "already up to date")
		ev := log.take()
		inOrder(t, ev, "shop.read product/p1", "skip", "binder.to_internal product/p1", "binder.sync_date product/p1")
		for _, e := range ev {
			if strings.HasPrefix(e, "lock") || e == "dependencies" || e == "map" {
				t.Errorf("up-to-date import went on to %q", e)
			}
		}

		// Forced: an update of the bound record, mapped for write.
		res, err = f.importRecord(t, "product", "p1", true)
		if err != nil {
			t.Fatal(err)
		}
		inOrder(t, log.take(), "lock import/shop-1/product/p1", "dependencies", "validate create=false",
			"local.write product/"+prodID, "binder.bind product/p1", "after", "unlock import/shop-1/product/p1")
		if !strings.HasSuffix(res, prodID+" updated") {
			t.Errorf("result %q", res)
		}
	})
}

// Exporter.Run: binding -> external changed? -> lock -> local read -> skip
// -> dependencies -> map -> validate -> backend create/write -> bind ->
// after -> unlock.
func TestExporterSteps(t *testing.T) {
	forEachKind(t, func(t *testing.T, f *fixture) {
		log, v3 := f.logged(t)
		var afterExt string
		skip := ""
		if err := units.Register(v3, units.ExporterUsage, "product", &units.Exporter{
			UpdatedAt: updatedAt,
			Skip: func(context.Context, *units.Work, units.Record) string {
				log.add("skip")
				return skip
			},
			Dependencies: func(context.Context, *units.Work, units.Record) ([]units.Dependency, error) {
				log.add("dependencies")
				return nil, nil
			},
			Mapper: &units.Mapper{
				Direct: []units.Rule{units.Direct("name", "name"), units.Direct("price", "price")},
				Computed: []units.Computed{{Name: "channel", ChangedBy: []string{"name"}, Map: func(_ context.Context, mc *units.MapContext, _ units.Record) (units.Record, error) {
					log.add("map")
					return units.Record{"channel": mc.Option("channel")}, nil
				}}},
			},
			Options: map[string]any{"channel": "web"},
			Validate: func(_ context.Context, _ *units.Work, v units.Record, create bool) error {
				log.add("validate create=%v", create)
				if v["price"] == -1.0 {
					return errNegative
				}
				return nil
			},
			After: func(_ context.Context, _ *units.Work, externalID string, _ units.Record) error {
				log.add("after")
				afterExt = externalID
				return nil
			},
		}); err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		id, _ := f.local.Model("product").Create(ctx, units.Record{"name": "Saw", "price": 20.0})
		if _, err := f.exportRecord(t, "product", id); err != nil {
			t.Fatal(err)
		}
		ext, _, _ := f.binder("product").ToExternal(ctx, id)
		inOrder(t, log.take(),
			"binder.to_external product/"+id,
			"lock export/shop-1/product/"+id,
			"local.read product/"+id,
			"skip",
			"dependencies",
			"map",
			"validate create=true",
			"shop.create product",
			"binder.bind product/"+ext,
			"after",
			"unlock export/shop-1/product/"+id,
		)
		if got, _ := f.ext.Model("product").Get(ext); got["channel"] != "web" || afterExt != ext {
			t.Errorf("created %v (Exporter.Options), After got %q", got, afterExt)
		}

		// An update: the changed-externally check first (the shop's record
		// was last changed by our export), then only the changed field is
		// mapped and written.
		f.ext.Model("product").Put(ext, units.Record{"name": "Saw", "price": 20.0, "updated_at": f.clock()})
		f.tick(time.Minute)
		if _, err := f.exportRecord(t, "product", id, "price"); err != nil {
			t.Fatal(err)
		}
		ev := log.take()
		inOrder(t, ev,
			"binder.to_external product/"+id,
			"shop.read product/"+ext,
			"binder.sync_date product/"+ext,
			"lock export/shop-1/product/"+id,
			"local.read product/"+id,
			"skip",
			"dependencies",
			"validate create=false",
			"shop.write product/"+ext,
			"binder.bind product/"+ext,
			"after",
			"unlock export/shop-1/product/"+id,
		)
		if slices.Contains(ev, "map") {
			t.Error("a computed mapping changed by name ran for a price change")
		}

		// Skip ends the run as nothing to do, before anything is written.
		skip = "not for this shop"
		writes := len(f.ext.Model("product").Changes())
		_, err := f.exportRecord(t, "product", id, "price")
		nothingToDo(t, err, "not for this shop")
		if ev := log.take(); slices.Contains(ev, "dependencies") || len(f.ext.Model("product").Changes()) != writes {
			t.Errorf("skipped export went on: %v", ev)
		}
		skip = ""

		// A validation error stops the export and releases the lock.
		_ = f.local.Model("product").Write(ctx, id, units.Record{"price": -1.0})
		if _, err := f.exportRecord(t, "product", id, "price"); !errors.Is(err, errNegative) {
			t.Fatalf("err = %v, want the validation error", err)
		}
		ev = log.take()
		if len(f.ext.Model("product").Changes()) != writes || ev[len(ev)-1] != "unlock export/shop-1/product/"+id {
			t.Errorf("after a validation error: %d shop writes, events %v", len(f.ext.Model("product").Changes()), ev)
		}
	})
}

var errNegative = errors.New("price must not be negative")

// A failing step after the lock releases it: the next run can take it.
func TestImportReleasesLockOnError(t *testing.T) {
	forEachKind(t, func(t *testing.T, f *fixture) {
		log, v3 := f.logged(t)
		fail := errors.New("after hook failed")
		if err := units.Register(v3, units.ImporterUsage, "category", &units.Importer{
			After: func(context.Context, *units.Work, string, units.Record) error { return fail },
		}); err != nil {
			t.Fatal(err)
		}
		f.seedShop()
		for range 2 { // the second run finds the lock free
			if _, err := f.importRecord(t, "category", "c1", true); !errors.Is(err, fail) {
				t.Fatalf("err = %v, want the After error", err)
			}
			ev := log.take()
			if ev[len(ev)-1] != "unlock import/shop-1/category/c1" {
				t.Fatalf("events %v: the lock was not released last", ev)
			}
		}
	})
}

// Deleter.Run: lock -> backend delete -> unbind -> after -> unlock; a lock
// held elsewhere is a retry that does not count.
func TestDeleterSteps(t *testing.T) {
	forEachKind(t, func(t *testing.T, f *fixture) {
		log, v3 := f.logged(t)
		var deleted []string
		if err := units.Register(v3, units.DeleterUsage, "category", &units.Deleter{
			After: func(_ context.Context, _ *units.Work, ext string) error {
				log.add("after")
				deleted = append(deleted, ext)
				return nil
			},
		}); err != nil {
			t.Fatal(err)
		}
		f.seedShop()
		if _, err := f.importRecord(t, "category", "c1", false); err != nil {
			t.Fatal(err)
		}
		log.take()
		ctx := context.Background()
		release, err := f.env.Locker.Acquire(ctx, "delete/shop-1/category/c1", time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		a := units.DeleteRecord{BackendID: backendID, Model: "category", ExternalID: "c1"}
		_, err = f.reg.RunDelete(ctx, f.env, a)
		if r, ok := job.AsRetryable(err); !ok || !r.NoCount {
			t.Fatalf("delete while locked: %v, want RetryNoCount", err)
		}
		if _, ok := f.ext.Model("category").Get("c1"); !ok {
			t.Fatal("deleted while locked")
		}
		_ = release(ctx)
		log.take()
		res, err := f.reg.RunDelete(ctx, f.env, a)
		if err != nil || res != "category c1 deleted in shop-1" {
			t.Fatalf("%q %v", res, err)
		}
		inOrder(t, log.take(), "lock delete/shop-1/category/c1", "shop.delete category/c1",
			"binder.unbind category/c1", "after", "unlock delete/shop-1/category/c1")
		if !slices.Equal(deleted, []string{"c1"}) {
			t.Errorf("After got %v", deleted)
		}
	})
}

// Records that depend on each other: the import fails for good with
// ErrDependencyCycle naming the chain, instead of retrying forever on its
// own lock.
func TestImportDependencyCycle(t *testing.T) {
	forEachKind(t, func(t *testing.T, f *fixture) {
		v3 := f.reg.Backend("shop").Version("2").Version("3")
		if err := units.Register(v3, units.ImporterUsage, "category", &units.Importer{
			Dependencies: func(_ context.Context, _ *units.Work, rec units.Record) ([]units.Dependency, error) {
				return []units.Dependency{{Model: "category", ID: rec["parent"].(string)}}, nil
			},
		}); err != nil {
			t.Fatal(err)
		}
		f.ext.Model("category").Put("a", units.Record{"name": "A", "parent": "b"})
		f.ext.Model("category").Put("b", units.Record{"name": "B", "parent": "a"})
		_, err := f.importRecord(t, "category", "a", false)
		if !errors.Is(err, units.ErrDependencyCycle) {
			t.Fatalf("err = %v, want ErrDependencyCycle", err)
		}
		if _, ok := job.AsRetryable(err); ok {
			t.Errorf("a cycle must not be retried: %v", err)
		}
		if !strings.Contains(err.Error(), "category/a -> import/shop-1/category/b -> import/shop-1/category/a") {
			t.Errorf("error does not name the chain: %v", err)
		}
		if n := f.local.Model("category").Len(); n != 0 {
			t.Errorf("%d categories written", n)
		}
		// Both locks were released: without the cycle, the records import.
		f.ext.Model("category").Put("b", units.Record{"name": "B", "parent": "c"})
		f.ext.Model("category").Put("c", units.Record{"name": "C", "parent": ""})
		if err := units.Replace(v3, units.ImporterUsage, "category", &units.Importer{
			Dependencies: func(_ context.Context, _ *units.Work, rec units.Record) ([]units.Dependency, error) {
				if p := rec["parent"].(string); p != "" {
					return []units.Dependency{{Model: "category", ID: p}}, nil
				}
				return nil, nil
			},
		}); err != nil {
			t.Fatal(err)
		}
		if _, err := f.importRecord(t, "category", "a", false); err != nil {
			t.Fatal(err)
		}
		if n := f.local.Model("category").Len(); n != 3 {
			t.Errorf("%d categories, want 3", n)
		}
	})
}

// Line items of an exported record are mapped with the export mapper of the
// items' model, those of an imported record with its import mapper (the
// seed's export and import map children).
func TestChildrenFollowTheSyncDirection(t *testing.T) {
	f := newFixture(t, unitstest.NewStore().Binder, unitstest.NewStore())
	shop := f.reg.Backend("shop")
	line := func(dir string) *units.Mapper {
		return &units.Mapper{Direct: []units.Rule{units.Direct("sku", "sku")}, Computed: []units.Computed{{Name: "dir",
			Map: func(context.Context, *units.MapContext, units.Record) (units.Record, error) {
				return units.Record{"mapped_by": dir}, nil
			}}}}
	}
	order := &units.Mapper{Direct: []units.Rule{units.Direct("ref", "ref")}, Children: []units.Child{{From: "lines", To: "lines", Model: "order.line"}}}
	for _, r := range []error{
		units.Register(shop, units.ImportMapperUsage, "order.line", line("import")),
		units.Register(shop, units.ExportMapperUsage, "order.line", line("export")),
		units.Register(shop, units.ImportMapperUsage, "order", order),
		units.Register(shop, units.ExportMapperUsage, "order", order),
		units.Register(shop, units.ExporterUsage, "order", &units.Exporter{}),
	} {
		if r != nil {
			t.Fatal(r)
		}
	}
	f.ext.Model("order").Put("o1", units.Record{"ref": "SO1", "lines": []any{units.Record{"sku": "A"}}})
	if _, err := f.importRecord(t, "order", "o1", false); err != nil {
		t.Fatal(err)
	}
	local, _ := f.local.Model("order").Get(bound(t, f.binder("order"), "o1"))
	want := []units.Record{{"sku": "A", "mapped_by": "import"}}
	if got, _ := local["lines"].([]units.Record); len(got) != 1 || !maps.Equal(got[0], want[0]) {
		t.Errorf("imported lines %v, want %v", local["lines"], want)
	}

	id, _ := f.local.Model("order").Create(context.Background(), units.Record{"ref": "SO2", "lines": []any{units.Record{"sku": "B"}}})
	if _, err := f.exportRecord(t, "order", id); err != nil {
		t.Fatal(err)
	}
	ext, _, _ := f.binder("order").ToExternal(context.Background(), id)
	remote, _ := f.ext.Model("order").Get(ext)
	want = []units.Record{{"sku": "B", "mapped_by": "export"}}
	if got, _ := remote["lines"].([]units.Record); len(got) != 1 || !maps.Equal(got[0], want[0]) {
		t.Errorf("exported lines %v, want %v", remote["lines"], want)
	}
}
