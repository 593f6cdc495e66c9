package units_test

import (
	"context"
	"testing"

	"github.com/connector-go/connector/job"
	"github.com/connector-go/connector/units"
)

// A delete of a record that an import of the same record is writing: the
// import, past its binding lookup, would bind the record again after the
// delete removed it (leaving a binding to a record deleted in the backend).
// The delete waits for the import (a retry that does not count), then
// removes the binding for good.
func TestDeleteWaitsForARunningImportOfTheRecord(t *testing.T) {
	forEachKind(t, func(t *testing.T, f *fixture) {
		f.seedShop()
		if _, err := f.importRecord(t, "category", "c1", false); err != nil {
			t.Fatal(err)
		}
		entered, proceed := make(chan struct{}), make(chan struct{})
		v3 := f.reg.Backend("shop").Version("2").Version("3")
		if err := units.Register(v3, units.ImporterUsage, "category", &units.Importer{
			UpdatedAt: updatedAt,
			Validate: func(context.Context, *units.Work, units.Record, bool) error {
				close(entered) // only one run gets here
				<-proceed
				return nil
			},
		}); err != nil {
			t.Fatal(err)
		}
		imported := make(chan error, 1)
		go func() {
			_, err := f.importRecord(t, "category", "c1", true)
			imported <- err
		}()
		select { // the import holds its lock and has found the binding
		case <-entered:
		case err := <-imported:
			t.Fatalf("the import ended without reaching Validate: %v", err)
		}
		a := units.DeleteRecord{BackendID: backendID, Model: "category", ExternalID: "c1"}
		_, derr := f.reg.RunDelete(context.Background(), f.env, a)
		close(proceed)
		if err := <-imported; err != nil {
			t.Fatal(err)
		}
		if derr != nil {
			if r, ok := job.AsRetryable(derr); !ok || !r.NoCount {
				t.Fatalf("delete during the import: %v, want success or RetryNoCount", derr)
			}
			// The job's retry, once the import is done.
			if _, err := f.reg.RunDelete(context.Background(), f.env, a); err != nil {
				t.Fatal(err)
			}
		}
		if _, ok := f.ext.Model("category").Get("c1"); ok {
			t.Error("not deleted in the shop")
		}
		if l, found, _ := f.binder("category").ToInternal(context.Background(), "c1"); found {
			t.Errorf("deleted c1 still bound to local %s", l)
		}
	})
}
