package adaptertest_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/connector-go/connector/job"
	"github.com/connector-go/connector/units"
	"github.com/connector-go/connector/units/adaptertest"
	"github.com/connector-go/connector/units/unitstest"
)

// The in-memory adapter connector authors test with passes the suite.
func TestMemoryConformance(t *testing.T) {
	adaptertest.Run(t, adaptertest.Harness{
		New:   func(t *testing.T) units.Adapter { return unitstest.NewMemory("product") },
		Break: func(t *testing.T, a units.Adapter) { a.(*unitstest.Memory).SetDown(true) },
	})
}

// The tracing wrappers the work context puts around the backend adapter and
// the local adapter keep the contract (errors pass through unchanged).
func TestTracedAdapterConformance(t *testing.T) {
	for _, side := range []string{"backend", "local"} {
		t.Run(side, func(t *testing.T) {
			var cur *unitstest.Memory // subtests run one after the other
			reg := units.NewRegistry()
			err := units.Register(reg.Backend("shop"), units.AdapterUsage, "product",
				func(*units.Work) (units.Adapter, error) { return cur, nil })
			if err != nil {
				t.Fatal(err)
			}
			env := units.Env{Local: func(string) (units.Adapter, error) { return cur, nil }}
			adaptertest.Run(t, adaptertest.Harness{
				New: func(t *testing.T) units.Adapter {
					cur = unitstest.NewMemory("product")
					w := reg.NewWork(env, units.Backend{ID: "s1", Type: "shop"}, "product")
					get := w.Adapter
					if side == "local" {
						get = w.Local
					}
					a, err := get()
					if err != nil {
						t.Fatal(err)
					}
					return a
				},
				Break: func(t *testing.T, _ units.Adapter) { cur.SetDown(true) },
			})
		})
	}
}

// broken is an in-memory adapter with one contract violation.
type broken struct {
	*unitstest.Memory
	fault   string
	down    bool                    // down-not-retryable: fail with plain errors
	memDown bool                    // the Memory is down (retryable errors)
	shared  map[string]units.Record // shared-record: the caller's maps, not copies
}

var errNotFound = errors.New("not found")

// fail is the error every call returns while down: not marked retryable.
func (b *broken) fail() error {
	if b.down {
		return errors.New("connection refused")
	}
	return nil
}

func (b *broken) missing(err error) error {
	switch {
	case err == nil || !errors.Is(err, units.ErrMissing):
		return err
	case b.fault == "missing-plain":
		return errNotFound
	case b.fault == "missing-retryable":
		return job.Retry(err)
	}
	return err
}

func (b *broken) Search(ctx context.Context, q units.Query) ([]string, error) {
	if err := b.fail(); err != nil {
		return nil, err
	}
	switch b.fault {
	case "paging-ignored":
		q.Offset, q.Limit = 0, 0
	case "filter-ignored":
		q.Filters = nil
	case "unstable-order":
		// No order asked of the system (a map, SQL without ORDER BY):
		// each Search sees the records in another order, then pages.
		ids, err := b.Memory.Search(ctx, units.Query{Filters: q.Filters})
		if err != nil {
			return nil, err
		}
		rand.Shuffle(len(ids), func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })
		ids = ids[min(q.Offset, len(ids)):]
		if q.Limit > 0 {
			ids = ids[:min(q.Limit, len(ids))]
		}
		return ids, nil
	}
	return b.Memory.Search(ctx, q)
}

func (b *broken) Read(ctx context.Context, id string, fields []string) (units.Record, error) {
	if err := b.fail(); err != nil {
		return nil, err
	}
	r, err := b.Memory.Read(ctx, id, fields)
	if s, ok := b.shared[id]; ok && err == nil {
		return s, nil
	}
	if err == nil && len(fields) == 0 && b.fault == "read-shared" {
		// Copies what it is given, but hands out the record it keeps.
		if b.shared == nil {
			b.shared = map[string]units.Record{}
		}
		b.shared[id] = r
	}
	return r, b.missing(err)
}

func (b *broken) Create(ctx context.Context, rec units.Record) (string, error) {
	if err := b.fail(); err != nil {
		return "", err
	}
	id, err := b.Memory.Create(ctx, rec)
	if err == nil && b.fault == "shared-record" {
		if b.shared == nil {
			b.shared = map[string]units.Record{}
		}
		b.shared[id] = rec
	}
	return id, err
}

func (b *broken) Write(ctx context.Context, id string, rec units.Record) error {
	if err := b.fail(); err != nil {
		return err
	}
	if r, ok := b.shared[id]; ok {
		if err := b.Memory.Write(ctx, id, rec); err != nil {
			return err
		}
		maps.Copy(r, rec)
		return nil
	}
	if b.fault == "write-replaces" {
		if _, err := b.Memory.Read(ctx, id, nil); err != nil {
			return b.missing(err)
		}
		b.Memory.Put(id, rec)
		return nil
	}
	return b.missing(b.Memory.Write(ctx, id, rec))
}

// WriteReturning is Write (with its fault), then the record as stored; for
// returning-stale, the record as it was before the write.
func (b *broken) WriteReturning(ctx context.Context, id string, rec units.Record) (units.Record, error) {
	if err := b.returningDown(); err != nil {
		return nil, err
	}
	before, err := b.Memory.Read(ctx, id, nil)
	if err := b.Write(ctx, id, rec); err != nil {
		return nil, err
	}
	if b.fault != "returning-stale" {
		before, err = b.Memory.Read(ctx, id, nil)
	}
	if b.fault == "returning-unstamped" {
		delete(before, "updated_at") // the stamp the system set, left out
	}
	return before, err
}

// CreateReturning is the Memory's (with the returning-down fault).
func (b *broken) CreateReturning(ctx context.Context, rec units.Record) (string, units.Record, error) {
	if err := b.returningDown(); err != nil {
		return "", nil, err
	}
	return b.Memory.CreateReturning(ctx, rec)
}

// returningDown: for returning-down-not-retryable, the Returning methods
// (the ones the Exporter calls) fail with a plain error while the system is
// down; Create and Write stay retryable.
func (b *broken) returningDown() error {
	if b.fault == "returning-down-not-retryable" && b.memDown {
		return errors.New("connection refused")
	}
	return nil
}

func (b *broken) Delete(ctx context.Context, id string) error {
	if err := b.fail(); err != nil {
		return err
	}
	delete(b.shared, id)
	return b.missing(b.Memory.Delete(ctx, id))
}

// TestBrokenAdapterHelper runs the suite on one broken adapter; it only runs
// as the child process of TestSuiteCatchesBrokenAdapters.
func TestBrokenAdapterHelper(t *testing.T) {
	fault := os.Getenv("ADAPTERTEST_FAULT")
	if fault == "" {
		t.Skip("helper of TestSuiteCatchesBrokenAdapters")
	}
	adaptertest.Run(t, adaptertest.Harness{
		New: func(t *testing.T) units.Adapter {
			m := unitstest.NewMemory("product")
			if fault == "returning-unstamped" {
				m.StampField = "updated_at"
			}
			return &broken{Memory: m, fault: fault}
		},
		Break: func(t *testing.T, a units.Adapter) {
			if fault == "down-not-retryable" {
				a.(*broken).down = true
			} else {
				a.(*broken).SetDown(true)
				a.(*broken).memDown = true
			}
		},
	})
}

// The suite fails an adapter that breaks the contract, in the subtests that
// check the broken rule (and only there).
func TestSuiteCatchesBrokenAdapters(t *testing.T) {
	for fault, subtests := range map[string][]string{
		"missing-plain":       {"Delete", "MissingRecord", "Returning"},
		"missing-retryable":   {"MissingRecord"},
		"write-replaces":      {"Returning", "Write"},
		"paging-ignored":      {"SearchPaging"},
		"filter-ignored":      {"SearchFilter"},
		"unstable-order":      {"SearchPaging"},
		"shared-record":       {"Isolation"},
		"read-shared":         {"Isolation"},
		"down-not-retryable":  {"RetryableErrors"},
		"returning-stale":     {"Returning"},
		"returning-unstamped": {"Returning"},
		// CreateReturning and WriteReturning are what the Exporter calls.
		"returning-down-not-retryable": {"RetryableErrors"},
	} {
		t.Run(fault, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestBrokenAdapterHelper$", "-test.v", "-test.count=1")
			cmd.Env = append(os.Environ(), "ADAPTERTEST_FAULT="+fault)
			out, err := cmd.CombinedOutput()
			var exit *exec.ExitError
			if !errors.As(err, &exit) {
				t.Fatalf("the suite passed an adapter with fault %q (err %v):\n%s", fault, err, out)
			}
			var failed []string
			for _, line := range strings.Split(string(out), "\n") {
				if name, ok := strings.CutPrefix(strings.TrimSpace(line), "--- FAIL: TestBrokenAdapterHelper/"); ok {
					failed = append(failed, strings.Fields(name)[0])
				}
			}
			slices.Sort(failed)
			if !slices.Equal(failed, subtests) {
				t.Errorf("fault %q failed subtests %v, want %v:\n%s", fault, failed, subtests, out)
			}
		})
	}
}

// An adapter's own test runs the suite (compiled, not run here: a real
// adapter would reach a test instance of its system).
func ExampleRun() {
	testMyAdapter := func(t *testing.T) {
		adaptertest.Run(t, adaptertest.Harness{
			New: func(t *testing.T) units.Adapter { return unitstest.NewMemory("product") },
			Record: func(i int) units.Record {
				return units.Record{"name": fmt.Sprintf("product %d", i), "sku": fmt.Sprintf("SKU-%d", i)}
			},
			Break: func(t *testing.T, a units.Adapter) { a.(*unitstest.Memory).SetDown(true) },
		})
	}
	_ = testMyAdapter
}

// capped is an adapter whose Search answers at most one id per call, below
// any Limit asked (an API's own page cap): the units.Query contract allows
// it, callers paging on from Offset plus the ids received.
type capped struct{ *unitstest.Memory }

func (c capped) Search(ctx context.Context, q units.Query) ([]string, error) {
	if q.Limit > 1 {
		q.Limit = 1
	}
	return c.Memory.Search(ctx, q)
}

// A Search that caps its pages below the limit keeps the contract.
func TestCappedPagesConformance(t *testing.T) {
	adaptertest.Run(t, adaptertest.Harness{
		New:   func(t *testing.T) units.Adapter { return capped{unitstest.NewMemory("product")} },
		Break: func(t *testing.T, a units.Adapter) { a.(capped).SetDown(true) },
	})
}
