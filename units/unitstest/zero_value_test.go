package unitstest_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/connector-go/connector/job"
	"github.com/connector-go/connector/units"
	"github.com/connector-go/connector/units/unitstest"
)

// noPanic runs f and fails the test, instead of crashing the test binary,
// when f panics.
func noPanic(t *testing.T, what string, f func()) {
	t.Helper()
	defer func() {
		if r := recover(); r != nil {
			t.Fatalf("%s panics: %v", what, r)
		}
	}()
	f()
}

// A search with a negative Offset is a caller's mistake: the Memory says
// so with an error (not retryable: asking again fails the same way), and
// does not panic.
func TestMemorySearchNegativeOffsetIsAnError(t *testing.T) {
	ctx := context.Background()
	m := unitstest.NewMemory("product")
	m.Put("1", units.Record{"name": "a"})
	m.Put("2", units.Record{"name": "b"})
	for _, q := range []units.Query{{Offset: -1}, {Offset: -1, Limit: 1}, {Offset: -5, Limit: 10}} {
		var ids []string
		var err error
		noPanic(t, "Search with a negative offset", func() { ids, err = m.Search(ctx, q) })
		if err == nil {
			t.Errorf("search %+v: ids %v, want an error", q, ids)
		} else if _, retry := job.AsRetryable(err); retry {
			t.Errorf("search %+v: retryable error %v, want a permanent one", q, err)
		}
	}
	// The usual paging still works.
	if ids, err := m.Search(ctx, units.Query{Offset: 1, Limit: 1}); err != nil || len(ids) != 1 || ids[0] != "2" {
		t.Fatalf("search offset 1 limit 1: %v %v, want [2]", ids, err)
	}
}

// The zero values of Memory, System and Store are ready to use, as a
// connector author may declare them (var m unitstest.Memory) or embed them.
func TestMemoryZeroValueWorks(t *testing.T) {
	ctx := context.Background()
	var m unitstest.Memory
	m.Model = "product"
	noPanic(t, "a zero Memory", func() {
		m.Put("seed", units.Record{"name": "seed"})
		id, err := m.Create(ctx, units.Record{"name": "a"})
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Write(ctx, id, units.Record{"price": 2}); err != nil {
			t.Fatal(err)
		}
		rec, err := m.Read(ctx, id, nil)
		if err != nil || rec["name"] != "a" || rec["price"] != 2 {
			t.Fatalf("read %s: %v %v", id, rec, err)
		}
		ids, err := m.Search(ctx, units.Query{})
		if err != nil || len(ids) != 2 {
			t.Fatalf("search: %v %v, want 2 ids", ids, err)
		}
		if m.Calls("create") != 1 || m.Len() != 2 || len(m.Changes()) != 2 {
			t.Fatalf("calls %d, len %d, changes %d", m.Calls("create"), m.Len(), len(m.Changes()))
		}
		if err := m.Delete(ctx, "seed"); err != nil {
			t.Fatal(err)
		}
	})
	var fresh unitstest.Memory
	noPanic(t, "Search, Read and Delete on a zero Memory", func() {
		if ids, err := fresh.Search(ctx, units.Query{}); err != nil || len(ids) != 0 {
			t.Fatalf("search: %v %v", ids, err)
		}
		if _, err := fresh.Read(ctx, "1", nil); !errors.Is(err, units.ErrMissing) {
			t.Fatalf("read: %v, want ErrMissing", err)
		}
		if err := fresh.Delete(ctx, "1"); !errors.Is(err, units.ErrMissing) {
			t.Fatalf("delete: %v, want ErrMissing", err)
		}
		if _, ok := fresh.Get("1"); ok {
			t.Fatal("get: found")
		}
	})
	var fresh2 unitstest.Memory
	noPanic(t, "Calls on a zero Memory", func() { fresh2.SetDown(false); _ = fresh2.Calls("read") })

	var s unitstest.System
	noPanic(t, "a zero System", func() {
		a, err := s.Adapter("customer")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := a.Create(ctx, units.Record{"name": "c"}); err != nil {
			t.Fatal(err)
		}
		if s.Model("customer").Len() != 1 {
			t.Fatal("the system's customer model lost its record")
		}
	})

	var st unitstest.Store
	noPanic(t, "a zero Store", func() {
		b := st.Binder("shop", "product")
		if err := b.Bind(ctx, "e1", "l1", time.Now()); err != nil {
			t.Fatal(err)
		}
		if id, ok, err := st.Binder("shop", "product").ToInternal(ctx, "e1"); err != nil || !ok || id != "l1" {
			t.Fatalf("to internal: %q %v %v", id, ok, err)
		}
		release, err := st.Acquire(ctx, "r", time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if !st.Held("r") || st.Acquired("r") != 1 {
			t.Fatal("lock not held")
		}
		if err := release(ctx); err != nil {
			t.Fatal(err)
		}
	})
}
