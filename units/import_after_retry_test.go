package units_test

import (
	"context"
	"errors"
	"runtime"
	"testing"
	"time"

	"github.com/connector-go/connector/units"
)

// withCategoryAfter gives the categories of f an importer of their own, with
// UpdatedAt and the hook after.
func withCategoryAfter(t *testing.T, f *fixture, after func(ctx context.Context, w *units.Work, localID string, rec units.Record) error) {
	t.Helper()
	if err := units.Register(f.reg.Backend("shop"), units.ImporterUsage, "category", &units.Importer{UpdatedAt: updatedAt, After: after}); err != nil {
		t.Fatal(err)
	}
}

// An import whose After failed is retried: the record is written and bound
// already, but the retry must not take it as "already up to date" and skip
// After (the side effects users hang on it, such as importing dependents,
// would never happen). The retry runs the whole flow again, After included.
func TestImportRetryAfterAFailedAfterRunsAfterAgain(t *testing.T) {
	forEachKind(t, func(t *testing.T, f *fixture) {
		f.seedShop()
		f.tick(time.Minute)
		calls, fail := 0, true
		withCategoryAfter(t, f, func(context.Context, *units.Work, string, units.Record) error {
			calls++
			if fail {
				fail = false
				return errors.New("after: follow-up failed")
			}
			return nil
		})
		if _, err := f.importRecord(t, "category", "c1", false); err == nil {
			t.Fatal("first attempt: After's error not returned")
		}
		bound(t, f.binder("category"), "c1") // written and bound by the first attempt
		// The job's retry.
		f.tick(time.Minute)
		if _, err := f.importRecord(t, "category", "c1", false); err != nil {
			t.Fatalf("retry: %v (After ran %d times)", err, calls)
		}
		if calls != 2 {
			t.Fatalf("After ran %d times, want 2: the retry skipped it", calls)
		}
		if n := f.local.Model("category").Len(); n != 1 {
			t.Errorf("%d local categories, want 1", n)
		}
		// Once After has run, the record is up to date again.
		f.tick(time.Minute)
		_, err := f.importRecord(t, "category", "c1", false)
		nothingToDo(t, err, "already up to date")
	})
}

// A worker that dies between the Bind and the end of After (the job is
// never acked) leaves a binding that its retry does not take as up to date:
// After runs on the retry.
func TestImportRetryAfterACrashBeforeAfterRunsAfter(t *testing.T) {
	forEachKind(t, func(t *testing.T, f *fixture) {
		f.seedShop()
		f.tick(time.Minute)
		calls, crash := 0, true
		withCategoryAfter(t, f, func(context.Context, *units.Work, string, units.Record) error {
			if crash {
				crash = false
				runtime.Goexit() // the worker dies: After never completes
			}
			calls++
			return nil
		})
		done := make(chan struct{})
		go func() {
			defer close(done)
			_, _ = f.importRecord(t, "category", "c1", false)
		}()
		<-done
		bound(t, f.binder("category"), "c1")
		f.tick(time.Minute)
		if _, err := f.importRecord(t, "category", "c1", false); err != nil {
			t.Fatalf("retry: %v", err)
		}
		if calls != 1 {
			t.Fatalf("After completed %d times, want 1: the retry skipped it", calls)
		}
	})
}
