package units_test

import (
	"context"
	"errors"
	"testing"

	"github.com/connector-go/connector/job"
	"github.com/connector-go/connector/units"
)

// RunJob answers nil arguments, or a nil pointer to a synchronizer job,
// with ErrUnknownArgs rather than a panic.
func TestRunJobOfNilArgsIsAnError(t *testing.T) {
	r := units.NewRegistry()
	for _, args := range []job.Args{nil, (*units.ImportRecord)(nil), (*units.ExportRecord)(nil), (*units.DeleteRecord)(nil), (*units.ImportBatch)(nil)} {
		func() {
			defer func() {
				if p := recover(); p != nil {
					t.Errorf("RunJob(%T nil) panicked: %v", args, p)
				}
			}()
			if _, err := r.RunJob(context.Background(), units.Env{}, args); !errors.Is(err, units.ErrUnknownArgs) {
				t.Errorf("RunJob(%T nil): %v, want ErrUnknownArgs", args, err)
			}
		}()
	}
}
