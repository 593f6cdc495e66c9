// Package adaptertest is a conformance suite for units.Adapter
// implementations, like the shared pub/sub test suite every Watermill adapter
// runs. An adapter author calls Run from a test with a Harness that builds a
// fresh adapter (on an empty test namespace) for each subtest:
//
//	func TestConformance(t *testing.T) {
//		adaptertest.Run(t, adaptertest.Harness{
//			New: func(t *testing.T) units.Adapter { return newTestAdapter(t) },
//			Break: func(t *testing.T, a units.Adapter) { a.(*myAdapter).server.Close() },
//		})
//	}
//
// The suite checks create/read/write/delete/search semantics (a write sets
// only the given fields, search filters and pages, deleted records are gone),
// that records are values (changing a record after Create or Read does not
// change the system), the units.ErrMissing error for absent records (never
// retryable) and, when Break is given, that network failures are retryable
// (job.AsRetryable). An adapter that is a units.ReturningWriter has its
// CreateReturning and WriteReturning checked too: the id reads back, the
// records returned hold the fields written and the others kept, and their
// network failures are retryable (the Exporter writes through them).
package adaptertest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/connector-go/connector/job"
	"github.com/connector-go/connector/units"
)

// Harness describes the adapter under test.
type Harness struct {
	// New returns an adapter over an empty namespace of the system.
	New func(t *testing.T) units.Adapter
	// Record returns the i-th sample record (nil: {Field: "record <i>",
	// "note": "note <i>"}). Give records two fields at least, so that the
	// suite can see that a write leaves the other fields alone.
	Record func(i int) units.Record
	// Field is a string field the suite writes and filters on (default
	// "name"). With Record set, Record(i)[Field] must differ for each i.
	Field string
	// MissingID is an id the system never has (default "does-not-exist-0").
	MissingID string
	// Break makes the system unreachable for a (e.g. closes its server);
	// nil skips the retryable-errors test.
	Break func(t *testing.T, a units.Adapter)
	// NoFilter: Search ignores equality filters (skips that test).
	NoFilter bool
	// NoPaging: Search ignores Offset/Limit (skips that test).
	NoPaging bool
	// Settle, if set, waits until writes are visible to Search (for
	// eventually consistent systems).
	Settle func(t *testing.T)
	// Timeout bounds each call (default 10 s).
	Timeout time.Duration
}

// Run runs the conformance suite as subtests of t.
func Run(t *testing.T, h Harness) {
	t.Helper()
	if h.New == nil {
		t.Fatal("adaptertest: Harness.New is nil")
	}
	if h.Field == "" {
		h.Field = "name"
	}
	if h.Record == nil {
		h.Record = func(i int) units.Record {
			return units.Record{h.Field: fmt.Sprintf("record %d", i), "note": fmt.Sprintf("note %d", i)}
		}
	}
	if h.MissingID == "" {
		h.MissingID = "does-not-exist-0"
	}
	if h.Timeout <= 0 {
		h.Timeout = 10 * time.Second
	}
	s := &suite{h: h}
	t.Run("CreateRead", s.createRead)
	t.Run("ReadFields", s.readFields)
	t.Run("Write", s.write)
	t.Run("Delete", s.delete)
	t.Run("Isolation", s.isolation)
	t.Run("MissingRecord", s.missing)
	t.Run("Search", s.search)
	if !h.NoFilter {
		t.Run("SearchFilter", s.searchFilter)
	}
	if !h.NoPaging {
		t.Run("SearchPaging", s.searchPaging)
	}
	if h.Break != nil {
		t.Run("RetryableErrors", s.retryable)
	}
	t.Run("Returning", s.returning)
}

type suite struct{ h Harness }

func (s *suite) ctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), s.h.Timeout)
	t.Cleanup(cancel)
	return ctx
}

func (s *suite) create(t *testing.T, a units.Adapter, i int) string {
	t.Helper()
	id, err := a.Create(s.ctx(t), s.h.Record(i))
	if err != nil {
		t.Fatalf("Create(record %d): %v", i, err)
	}
	if id == "" {
		t.Fatalf("Create(record %d) returned an empty id", i)
	}
	return id
}

func (s *suite) settle(t *testing.T) {
	if s.h.Settle != nil {
		s.h.Settle(t)
	}
}

func (s *suite) createRead(t *testing.T) {
	a := s.h.New(t)
	id1 := s.create(t, a, 1)
	id2 := s.create(t, a, 2)
	if id1 == id2 {
		t.Fatalf("two creates returned the same id %q", id1)
	}
	got, err := a.Read(s.ctx(t), id1, nil)
	if err != nil {
		t.Fatalf("Read(%q): %v", id1, err)
	}
	want := s.h.Record(1)
	for k, v := range want {
		if fmt.Sprint(got[k]) != fmt.Sprint(v) {
			t.Errorf("Read(%q)[%q] = %v, want %v", id1, k, got[k], v)
		}
	}
}

func (s *suite) readFields(t *testing.T) {
	a := s.h.New(t)
	id := s.create(t, a, 1)
	got, err := a.Read(s.ctx(t), id, []string{s.h.Field})
	if err != nil {
		t.Fatalf("Read(%q, [%s]): %v", id, s.h.Field, err)
	}
	if fmt.Sprint(got[s.h.Field]) != fmt.Sprint(s.h.Record(1)[s.h.Field]) {
		t.Errorf("Read with fields: %q = %v, want %v", s.h.Field, got[s.h.Field], s.h.Record(1)[s.h.Field])
	}
}

func (s *suite) write(t *testing.T) {
	a := s.h.New(t)
	id := s.create(t, a, 1)
	other := s.create(t, a, 2)
	if err := a.Write(s.ctx(t), id, units.Record{s.h.Field: "changed"}); err != nil {
		t.Fatalf("Write(%q): %v", id, err)
	}
	got, err := a.Read(s.ctx(t), id, nil)
	if err != nil {
		t.Fatalf("Read after Write: %v", err)
	}
	if fmt.Sprint(got[s.h.Field]) != "changed" {
		t.Errorf("after Write, %q = %v, want changed", s.h.Field, got[s.h.Field])
	}
	for k, v := range s.h.Record(1) {
		if k != s.h.Field && fmt.Sprint(got[k]) != fmt.Sprint(v) {
			t.Errorf("Write of %q changed field %q: %v, want %v (a write sets only the given fields)", s.h.Field, k, got[k], v)
		}
	}
	got, err = a.Read(s.ctx(t), other, nil)
	if err != nil {
		t.Fatalf("Read(other): %v", err)
	}
	if fmt.Sprint(got[s.h.Field]) != fmt.Sprint(s.h.Record(2)[s.h.Field]) {
		t.Errorf("Write changed another record: %v", got)
	}
}

func (s *suite) delete(t *testing.T) {
	a := s.h.New(t)
	id := s.create(t, a, 1)
	keep := s.create(t, a, 2)
	if err := a.Delete(s.ctx(t), id); err != nil {
		t.Fatalf("Delete(%q): %v", id, err)
	}
	if _, err := a.Read(s.ctx(t), id, nil); !errors.Is(err, units.ErrMissing) {
		t.Errorf("Read after Delete: err = %v, want units.ErrMissing", err)
	}
	if _, err := a.Read(s.ctx(t), keep, nil); err != nil {
		t.Errorf("Delete removed another record: %v", err)
	}
	s.settle(t)
	ids, err := a.Search(s.ctx(t), units.Query{})
	if err != nil {
		t.Fatalf("Search: %v", err)
	}
	if slices.Contains(ids, id) {
		t.Errorf("Search after Delete still finds %q", id)
	}
	if err := a.Delete(s.ctx(t), id); !errors.Is(err, units.ErrMissing) {
		t.Errorf("second Delete(%q): err = %v, want units.ErrMissing", id, err)
	}
	if err := a.Write(s.ctx(t), id, units.Record{s.h.Field: "x"}); !errors.Is(err, units.ErrMissing) {
		t.Errorf("Write(%q) after Delete: err = %v, want units.ErrMissing", id, err)
	}
}

// isolation: the records given to Create and Write and returned by Read are
// the caller's; changing them does not change the system.
func (s *suite) isolation(t *testing.T) {
	a := s.h.New(t)
	rec := s.h.Record(1)
	want := fmt.Sprint(rec[s.h.Field])
	id, err := a.Create(s.ctx(t), rec)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	rec[s.h.Field] = "changed by the caller after Create"
	got, err := a.Read(s.ctx(t), id, nil)
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	if fmt.Sprint(got[s.h.Field]) != want {
		t.Errorf("changing the record given to Create changed the system: %q = %v", s.h.Field, got[s.h.Field])
	}
	got[s.h.Field] = "changed by the caller after Read"
	got, err = a.Read(s.ctx(t), id, nil)
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	if fmt.Sprint(got[s.h.Field]) != want {
		t.Errorf("changing the record returned by Read changed the system: %q = %v", s.h.Field, got[s.h.Field])
	}
	upd := units.Record{s.h.Field: "written"}
	if err := a.Write(s.ctx(t), id, upd); err != nil {
		t.Fatalf("Write: %v", err)
	}
	upd[s.h.Field] = "changed by the caller after Write"
	again, err := a.Read(s.ctx(t), id, nil)
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	if fmt.Sprint(again[s.h.Field]) != "written" {
		t.Errorf("changing the record given to Write changed the system: %q = %v", s.h.Field, again[s.h.Field])
	}
}

func (s *suite) missing(t *testing.T) {
	a := s.h.New(t)
	id := s.h.MissingID
	check := func(op string, err error) {
		t.Helper()
		if !errors.Is(err, units.ErrMissing) {
			t.Errorf("%s(%q): err = %v, want an error matching units.ErrMissing", op, id, err)
		}
		if _, ok := job.AsRetryable(err); ok {
			t.Errorf("%s(%q): a missing record must not be retryable", op, id)
		}
	}
	_, err := a.Read(s.ctx(t), id, nil)
	check("Read", err)
	check("Write", a.Write(s.ctx(t), id, units.Record{s.h.Field: "x"}))
	check("Delete", a.Delete(s.ctx(t), id))
}

func (s *suite) search(t *testing.T) {
	a := s.h.New(t)
	var want []string
	for i := 1; i <= 3; i++ {
		want = append(want, s.create(t, a, i))
	}
	s.settle(t)
	ids, err := a.Search(s.ctx(t), units.Query{})
	if err != nil {
		t.Fatalf("Search: %v", err)
	}
	for _, id := range want {
		if !slices.Contains(ids, id) {
			t.Errorf("Search() = %v, missing %q", ids, id)
		}
	}
}

func (s *suite) searchFilter(t *testing.T) {
	a := s.h.New(t)
	s.create(t, a, 1)
	id2 := s.create(t, a, 2)
	s.create(t, a, 3)
	s.settle(t)
	ids, err := a.Search(s.ctx(t), units.Query{Filters: map[string]any{s.h.Field: s.h.Record(2)[s.h.Field]}})
	if err != nil {
		t.Fatalf("Search with filter: %v", err)
	}
	if len(ids) != 1 || ids[0] != id2 {
		t.Errorf("Search(%s = %v) = %v, want [%s]", s.h.Field, s.h.Record(2)[s.h.Field], ids, id2)
	}
	// A write is seen by the filter: the new value matches, the old no more.
	if err := a.Write(s.ctx(t), id2, units.Record{s.h.Field: "filtered after write"}); err != nil {
		t.Fatalf("Write: %v", err)
	}
	s.settle(t)
	ids, err = a.Search(s.ctx(t), units.Query{Filters: map[string]any{s.h.Field: "filtered after write"}})
	if err != nil {
		t.Fatalf("Search with filter: %v", err)
	}
	if len(ids) != 1 || ids[0] != id2 {
		t.Errorf("Search(%s = written value) = %v, want [%s]", s.h.Field, ids, id2)
	}
	ids, err = a.Search(s.ctx(t), units.Query{Filters: map[string]any{s.h.Field: s.h.Record(2)[s.h.Field]}})
	if err != nil {
		t.Fatalf("Search with filter: %v", err)
	}
	if len(ids) != 0 {
		t.Errorf("Search(%s = value before the write) = %v, want none", s.h.Field, ids)
	}
}

func (s *suite) searchPaging(t *testing.T) {
	a := s.h.New(t)
	var all []string
	for i := 1; i <= 5; i++ {
		all = append(all, s.create(t, a, i))
	}
	s.settle(t)
	// Paged as callers page (units.Query): on from Offset plus the ids
	// received, to an empty answer; a page may hold fewer than Limit ids
	// before the end (an API's own page cap).
	var paged []string
	for off, pages := 0, 0; ; pages++ {
		ids, err := a.Search(s.ctx(t), units.Query{Offset: off, Limit: 2})
		if err != nil {
			t.Fatalf("Search(offset %d, limit 2): %v", off, err)
		}
		if len(ids) > 2 {
			t.Fatalf("Search(limit 2) returned %d ids", len(ids))
		}
		if len(ids) == 0 {
			break
		}
		for _, id := range ids {
			if slices.Contains(paged, id) {
				t.Fatalf("Search(offset %d, limit 2) = %v: %q was on an earlier page", off, ids, id)
			}
		}
		paged = append(paged, ids...)
		if pages > 2*len(all) {
			t.Fatalf("paging through Search does not end: %v", paged)
		}
		off += len(ids)
	}
	// The order is stable (units.Query): two searches agree, and the pages
	// follow it (else paging skips and repeats records at random).
	full, err := a.Search(s.ctx(t), units.Query{})
	if err != nil {
		t.Fatalf("Search: %v", err)
	}
	again, err := a.Search(s.ctx(t), units.Query{})
	if err != nil {
		t.Fatalf("Search: %v", err)
	}
	if !slices.Equal(full, again) || !slices.Equal(paged[:min(len(full), len(paged))], full) {
		t.Errorf("Search() = %v, then %v, and paged %v: the order is not stable", full, again, paged)
	}
	slices.Sort(all)
	slices.Sort(paged)
	if !slices.Equal(all, paged) {
		t.Errorf("paging through Search gave %v, want each of %v once", paged, all)
	}
}

func (s *suite) retryable(t *testing.T) {
	a := s.h.New(t)
	id := s.create(t, a, 1)
	s.h.Break(t, a)
	check := func(op string, err error) {
		t.Helper()
		if err == nil {
			t.Errorf("%s on a broken system: no error", op)
			return
		}
		if _, ok := job.AsRetryable(err); !ok {
			t.Errorf("%s on a broken system: %v is not retryable (wrap it with job.Retry)", op, err)
		}
	}
	_, err := a.Search(s.ctx(t), units.Query{})
	check("Search", err)
	_, err = a.Read(s.ctx(t), id, nil)
	check("Read", err)
	_, err = a.Create(s.ctx(t), s.h.Record(2))
	check("Create", err)
	check("Write", a.Write(s.ctx(t), id, units.Record{s.h.Field: "x"}))
	check("Delete", a.Delete(s.ctx(t), id))
	// The Exporter writes through these when the adapter has them.
	if rw, ok := a.(units.ReturningWriter); ok {
		_, _, err = rw.CreateReturning(s.ctx(t), s.h.Record(2))
		check("CreateReturning", err)
		_, err = rw.WriteReturning(s.ctx(t), id, units.Record{s.h.Field: "x"})
		check("WriteReturning", err)
	}
}

func (s *suite) returning(t *testing.T) {
	a := s.h.New(t)
	rw, ok := a.(units.ReturningWriter)
	if !ok {
		t.Skip("not a units.ReturningWriter")
	}
	want := s.h.Record(1)
	id, stored, err := rw.CreateReturning(s.ctx(t), want)
	if err != nil || id == "" {
		t.Fatalf("CreateReturning(record 1) = %q, %v", id, err)
	}
	for k, v := range want {
		if fmt.Sprint(stored[k]) != fmt.Sprint(v) {
			t.Errorf("CreateReturning returned %q = %v, want %v", k, stored[k], v)
		}
	}
	// The answer is the record as stored: what a Read finds right after,
	// with the fields the system sets (its update stamp, which the
	// Exporter binds with), and a copy.
	sameAsRead := func(op string, stored units.Record) {
		t.Helper()
		got, err := a.Read(s.ctx(t), id, nil)
		if err != nil {
			t.Fatalf("Read(%q) after %s: %v", id, op, err)
		}
		for k, v := range got {
			if fmt.Sprint(stored[k]) != fmt.Sprint(v) {
				t.Errorf("%s returned %q = %v; a Read right after finds %v (the record as stored)", op, k, stored[k], v)
			}
		}
	}
	sameAsRead("CreateReturning", stored)
	stored[s.h.Field] = "mutated by the caller"
	if got, err := a.Read(s.ctx(t), id, nil); err != nil || fmt.Sprint(got[s.h.Field]) != fmt.Sprint(want[s.h.Field]) {
		t.Errorf("Read after changing the record CreateReturning returned = %v, %v: records must be values", got, err)
	}
	stored, err = rw.WriteReturning(s.ctx(t), id, units.Record{s.h.Field: "changed"})
	if err != nil {
		t.Fatalf("WriteReturning(%q): %v", id, err)
	}
	for k, v := range want {
		if k == s.h.Field {
			v = "changed"
		}
		if fmt.Sprint(stored[k]) != fmt.Sprint(v) {
			t.Errorf("WriteReturning returned %q = %v, want %v (the record as stored)", k, stored[k], v)
		}
	}
	sameAsRead("WriteReturning", stored)
	stored[s.h.Field] = "mutated by the caller"
	if got, err := a.Read(s.ctx(t), id, nil); err != nil || fmt.Sprint(got[s.h.Field]) != "changed" {
		t.Errorf("Read after changing the returned record = %v, %v: records must be values", got, err)
	}
	if _, err := rw.WriteReturning(s.ctx(t), s.h.MissingID, units.Record{s.h.Field: "x"}); !errors.Is(err, units.ErrMissing) {
		t.Errorf("WriteReturning(missing id) = %v, want units.ErrMissing", err)
	}
}
