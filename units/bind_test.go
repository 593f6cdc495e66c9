package units_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/connector-go/connector/bindings"
	"github.com/connector-go/connector/job"
	"github.com/connector-go/connector/units"
	"github.com/connector-go/connector/units/unitstest"
)

// The tests below run an import and an export of the same record pair at
// the moment between the create of one and its Bind. Categories have no
// dependencies, so that each run makes exactly one record.

// hookBinder runs its first Bind through first instead: bind is given the
// Bind of the binder underneath.
type hookBinder struct {
	units.Binder
	first *bool
	bind  func(externalID, localID string, through func() error) error
}

func (b hookBinder) Bind(ctx context.Context, externalID, localID string, at time.Time) error {
	through := func() error { return b.Binder.Bind(ctx, externalID, localID, at) }
	if *b.first {
		*b.first = false
		return b.bind(externalID, localID, through)
	}
	return through()
}

// onFirstBind makes f's binders run bind instead of their first Bind.
func onFirstBind(f *fixture, bind func(externalID, localID string, through func() error) error) {
	first := true
	binders := f.env.Binders
	f.env.Binders = func(b, m string) units.Binder { return hookBinder{binders(b, m), &first, bind} }
}

// beforeFirstBind makes f's binders call fn (once) ahead of the first Bind.
func beforeFirstBind(f *fixture, fn func(externalID, localID string)) {
	onFirstBind(f, func(externalID, localID string, through func() error) error {
		fn(externalID, localID)
		return through()
	})
}

// onFirstCreate makes m call fn (once) inside its first Create, after the
// record is stored and before Create returns: as a change event that is
// handled before the creating run has its answer.
func onFirstCreate(m *unitstest.Memory, fn func(id string)) {
	done := false
	m.OnChange = func(_ context.Context, c unitstest.Change) {
		if c.Op == "create" && !done {
			done = true
			fn(c.ID)
		}
	}
}

func noCountRetry(t *testing.T, err error) {
	t.Helper()
	if r, ok := job.AsRetryable(err); !ok || !r.NoCount {
		t.Fatalf("err = %v, want a retry that does not count", err)
	}
}

func boundPair(t *testing.T, b units.Binder, ext, local string) {
	t.Helper()
	ctx := context.Background()
	if got, found, err := b.ToInternal(ctx, ext); err != nil || !found || got != local {
		t.Errorf("external %s bound to local %q (found %v, err %v), want %s", ext, got, found, err, local)
	}
	if got, found, err := b.ToExternal(ctx, local); err != nil || !found || got != ext {
		t.Errorf("local %s bound to external %q (found %v, err %v), want %s", local, got, found, err, ext)
	}
}

// An export of the local record an import has just created, started before
// the import bound it, waits for the binding (the import holds the export's
// lock on the new record while it binds) and then updates the shop's record
// instead of creating a second one.
func TestExportWaitsWhileAnImportBindsItsRecord(t *testing.T) {
	forEachKind(t, func(t *testing.T, f *fixture) {
		f.seedShop()
		var during error
		beforeFirstBind(f, func(_, localID string) { _, during = f.exportRecord(t, "category", localID) })
		if _, err := f.importRecord(t, "category", "c1", false); err != nil {
			t.Fatal(err)
		}
		if !errors.Is(during, bindings.ErrLocked) {
			t.Errorf("export during the import's Bind: %v, want the record locked", during)
		}
		noCountRetry(t, during)
		local := bound(t, f.binder("category"), "c1")
		f.tick(time.Minute)
		res, err := f.exportRecord(t, "category", local)
		if err != nil {
			t.Fatal(err)
		}
		if n := f.ext.Model("category").Calls("create"); n != 0 {
			t.Errorf("the shop got %d creates, want none (%s)", n, res)
		}
	})
}

// Mirror image: an import of the shop record an export has just created
// waits for the binding, and finds the record up to date.
func TestImportWaitsWhileAnExportBindsItsRecord(t *testing.T) {
	forEachKind(t, func(t *testing.T, f *fixture) {
		local, _ := f.local.Model("category").Create(context.Background(), units.Record{"name": "Tools"})
		var during error
		beforeFirstBind(f, func(externalID, _ string) { _, during = f.importRecord(t, "category", externalID, false) })
		if _, err := f.exportRecord(t, "category", local); err != nil {
			t.Fatal(err)
		}
		if !errors.Is(during, bindings.ErrLocked) {
			t.Errorf("import during the export's Bind: %v, want the record locked", during)
		}
		noCountRetry(t, during)
		ext, _, _ := f.binder("category").ToExternal(context.Background(), local)
		if _, err := f.importRecord(t, "category", ext, false); err != nil && !units.IsNothingToDo(err) {
			t.Fatal(err)
		}
		if n := f.local.Model("category").Len(); n != 1 {
			t.Errorf("%d local categories, want 1", n)
		}
	})
}

// An export that ran to its end inside the import's create (before the
// import could lock anything) made a second shop record and bound it to the
// new local record. The import's Bind fails; the import deletes that shop
// copy and binds its own pair.
func TestImportDeletesAnExportsCopy(t *testing.T) {
	forEachKind(t, func(t *testing.T, f *fixture) {
		f.seedShop()
		var copied string
		onFirstCreate(f.local.Model("category"), func(id string) {
			if _, err := f.exportRecord(t, "category", id); err != nil {
				t.Errorf("export inside the create: %v", err)
			}
			copied, _, _ = f.binder("category").ToExternal(context.Background(), id)
		})
		if _, err := f.importRecord(t, "category", "c1", false); err != nil {
			t.Fatal(err)
		}
		if copied == "" || copied == "c1" {
			t.Fatalf("the export made no copy (bound to %q)", copied)
		}
		if _, ok := f.ext.Model("category").Get(copied); ok {
			t.Errorf("the shop copy %s is still there", copied)
		}
		if n := f.ext.Model("category").Len(); n != 1 {
			t.Errorf("%d shop categories, want 1", n)
		}
		boundPair(t, f.binder("category"), "c1", bound(t, f.binder("category"), "c1"))
		if _, found, _ := f.binder("category").ToInternal(context.Background(), copied); found {
			t.Errorf("the copy %s is still bound", copied)
		}
	})
}

// Mirror image: an import that ran inside the export's create made a second
// local record; the export deletes it (as a change from the shop, so that
// it is not echoed) and binds its own pair.
func TestExportDeletesAnImportsCopy(t *testing.T) {
	forEachKind(t, func(t *testing.T, f *fixture) {
		local := f.local.Model("category")
		id, _ := local.Create(context.Background(), units.Record{"name": "Tools"})
		var copied string
		onFirstCreate(f.ext.Model("category"), func(ext string) {
			if _, err := f.importRecord(t, "category", ext, false); err != nil {
				t.Errorf("import inside the create: %v", err)
			}
			copied, _, _ = f.binder("category").ToInternal(context.Background(), ext)
		})
		if _, err := f.exportRecord(t, "category", id); err != nil {
			t.Fatal(err)
		}
		if copied == "" || copied == id {
			t.Fatalf("the import made no copy (bound to %q)", copied)
		}
		if _, ok := local.Get(copied); ok {
			t.Errorf("the local copy %s is still there", copied)
		}
		ch := local.Changes()
		if last := ch[len(ch)-1]; last.Op != "delete" || last.ID != copied || last.Origin != backendID {
			t.Errorf("last local change %+v, want the copy's delete with origin %s", last, backendID)
		}
		ext, _, _ := f.binder("category").ToExternal(context.Background(), id)
		boundPair(t, f.binder("category"), ext, id)
		if n := f.ext.Model("category").Len(); n != 1 {
			t.Errorf("%d shop categories, want 1", n)
		}
	})
}

// An import whose local create raced with an export that bound the shop
// record first: the import's own local record is the second copy. It is
// deleted, and the import runs again (not counted) and updates the bound
// record.
func TestImportDeletesItsOwnCopy(t *testing.T) {
	forEachKind(t, func(t *testing.T, f *fixture) {
		ctx := context.Background()
		localM := f.local.Model("category")
		first, _ := localM.Create(ctx, units.Record{"name": "Tools"})
		importing := make(chan error, 1)
		created, exported := make(chan struct{}), make(chan struct{})
		// The export creates the shop record; the shop's change starts its
		// import, which creates its local record and waits until the
		// export has bound the shop record to the first local record.
		onFirstCreate(f.ext.Model("category"), func(ext string) {
			go func() {
				_, err := f.importRecord(t, "category", ext, false)
				importing <- err
			}()
			<-created
		})
		onFirstCreate(localM, func(string) {
			close(created)
			<-exported
		})
		if _, err := f.exportRecord(t, "category", first); err != nil {
			t.Fatal(err)
		}
		close(exported)
		err := <-importing
		noCountRetry(t, err)
		if n := localM.Len(); n != 1 {
			t.Errorf("%d local categories, want 1", n)
		}
		ext, _, _ := f.binder("category").ToExternal(ctx, first)
		boundPair(t, f.binder("category"), ext, first)
		if res, err := f.importRecord(t, "category", ext, false); err != nil || localM.Len() != 1 {
			t.Errorf("import again: %q, %v, with %d local categories", res, err, localM.Len())
		}
	})
}

// Mirror image: an export whose shop create raced with an import that bound
// the local record first deletes its own shop record and runs again to
// update the bound one.
func TestExportDeletesItsOwnCopy(t *testing.T) {
	forEachKind(t, func(t *testing.T, f *fixture) {
		f.seedShop()
		exporting := make(chan error, 1)
		created, imported := make(chan struct{}), make(chan struct{})
		onFirstCreate(f.local.Model("category"), func(id string) {
			go func() {
				_, err := f.exportRecord(t, "category", id)
				exporting <- err
			}()
			<-created
		})
		onFirstCreate(f.ext.Model("category"), func(string) {
			close(created)
			<-imported
		})
		if _, err := f.importRecord(t, "category", "c1", false); err != nil {
			t.Fatal(err)
		}
		close(imported)
		err := <-exporting
		noCountRetry(t, err)
		if n := f.ext.Model("category").Len(); n != 1 {
			t.Errorf("%d shop categories, want 1", n)
		}
		local := bound(t, f.binder("category"), "c1")
		boundPair(t, f.binder("category"), "c1", local)
		f.tick(time.Minute)
		res, err := f.exportRecord(t, "category", local)
		if err != nil {
			t.Fatal(err)
		}
		if n := f.ext.Model("category").Calls("create"); n != 1 {
			t.Errorf("the shop got %d creates, want only the copy's (%s)", n, res)
		}
	})
}

var errBindDown = errors.New("test: binder unavailable")

// A created record whose Bind fails (Redis unavailable) is deleted, so that
// the retry creates it once; a Bind that failed to answer after it bound
// keeps the record.
func TestCreatedRecordThatCannotBeBound(t *testing.T) {
	down := func(_, _ string, _ func() error) error { return job.Retry(errBindDown) }
	lostAnswer := func(_, _ string, through func() error) error {
		if err := through(); err != nil {
			return err
		}
		return job.Retry(errBindDown)
	}
	t.Run("import", func(t *testing.T) {
		forEachKind(t, func(t *testing.T, f *fixture) {
			f.seedShop()
			localM := f.local.Model("category")
			onFirstBind(f, down)
			_, err := f.importRecord(t, "category", "c1", false)
			if r, ok := job.AsRetryable(err); !ok || r.NoCount || !errors.Is(err, errBindDown) {
				t.Fatalf("import: %v, want the bind's retryable error", err)
			}
			ch := localM.Changes()
			if localM.Len() != 0 || len(ch) != 2 || ch[1].Op != "delete" || ch[1].Origin != backendID {
				t.Fatalf("local changes %+v, want the create undone (with the origin)", ch)
			}
			if _, err := f.importRecord(t, "category", "c1", false); err != nil {
				t.Fatal(err)
			}
			if localM.Len() != 1 {
				t.Errorf("%d local categories after the retry, want 1", localM.Len())
			}
			bound(t, f.binder("category"), "c1")
		})
	})
	t.Run("export", func(t *testing.T) {
		forEachKind(t, func(t *testing.T, f *fixture) {
			id, _ := f.local.Model("category").Create(context.Background(), units.Record{"name": "Tools"})
			extM := f.ext.Model("category")
			onFirstBind(f, down)
			if _, err := f.exportRecord(t, "category", id); !errors.Is(err, errBindDown) {
				t.Fatalf("export: %v, want the bind's error", err)
			}
			if extM.Len() != 0 || extM.Calls("delete") != 1 {
				t.Fatalf("%d shop categories, %d deletes: want the create undone", extM.Len(), extM.Calls("delete"))
			}
			if _, err := f.exportRecord(t, "category", id); err != nil {
				t.Fatal(err)
			}
			if extM.Len() != 1 {
				t.Errorf("%d shop categories after the retry, want 1", extM.Len())
			}
		})
	})
	t.Run("bound after all", func(t *testing.T) {
		forEachKind(t, func(t *testing.T, f *fixture) {
			f.seedShop()
			onFirstBind(f, lostAnswer)
			if _, err := f.importRecord(t, "category", "c1", false); err != nil {
				t.Fatalf("import: %v, want success (the pair is bound)", err)
			}
			local := bound(t, f.binder("category"), "c1")
			if _, ok := f.local.Model("category").Get(local); !ok {
				t.Error("the bound local record was deleted")
			}
		})
	})
}

// A job cancelled while its created record is bound (a worker's shutdown)
// still binds it: the retry finds it bound instead of creating it again.
func TestBindOutlivesTheJobsCancel(t *testing.T) {
	forEachKind(t, func(t *testing.T, f *fixture) {
		f.seedShop()
		ctx, cancel := context.WithCancel(context.Background())
		f.local.Model("category").OnChange = func(context.Context, unitstest.Change) { cancel() }
		_, err := f.reg.RunImport(ctx, f.env, units.ImportRecord{BackendID: backendID, Model: "category", ExternalID: "c1"})
		if err != nil {
			t.Fatalf("import cancelled after its create: %v", err)
		}
		bound(t, f.binder("category"), "c1")
	})
}
