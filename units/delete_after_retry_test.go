package units_test

import (
	"context"
	"errors"
	"testing"

	"github.com/connector-go/connector/units"
)

// A delete whose After failed is retried: the record is gone from the
// backend already, but the retry must still run After (what users hang on
// it would never happen otherwise), then report nothing to do.
func TestDeleteRetryAfterAFailedAfterRunsAfterAgain(t *testing.T) {
	forEachKind(t, func(t *testing.T, f *fixture) {
		calls, fail := 0, true
		if err := units.Register(f.reg.Backend("shop"), units.DeleterUsage, "category", &units.Deleter{
			After: func(context.Context, *units.Work, string) error {
				calls++
				if fail {
					fail = false
					return errors.New("after: follow-up failed")
				}
				return nil
			},
		}); err != nil {
			t.Fatal(err)
		}
		f.seedShop()
		if _, err := f.importRecord(t, "category", "c1", false); err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		a := units.DeleteRecord{BackendID: backendID, Model: "category", ExternalID: "c1"}
		if _, err := f.reg.RunDelete(ctx, f.env, a); err == nil {
			t.Fatal("first attempt: After's error not returned")
		}
		if _, ok := f.ext.Model("category").Get("c1"); ok {
			t.Fatal("the first attempt did not delete the record")
		}
		// The job's retry.
		_, err := f.reg.RunDelete(ctx, f.env, a)
		nothingToDo(t, err, "already deleted")
		if calls != 2 {
			t.Fatalf("After ran %d times, want 2: the retry skipped it", calls)
		}
	})
}
