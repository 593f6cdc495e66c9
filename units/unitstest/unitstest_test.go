package unitstest_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/connector-go/connector/job"
	"github.com/connector-go/connector/units"
	"github.com/connector-go/connector/units/unitstest"
)

type ping struct{ N int }

func (ping) JobName() string { return "test.ping" }

func TestTrapCapturesAndDeduplicates(t *testing.T) {
	tr := unitstest.NewTrap()
	ctx := context.Background()
	id1, _ := tr.Enqueue(ctx, ping{1}, job.WithIdentityKey("k"), job.WithPriority(3))
	id2, _ := tr.Enqueue(ctx, ping{2}, job.WithIdentityKey("k"))
	id3, _ := tr.Enqueue(ctx, ping{3})
	if id1 != id2 || id1 == id3 {
		t.Errorf("ids %s %s %s", id1, id2, id3)
	}
	jobs := tr.Jobs()
	if len(jobs) != 2 || *jobs[0].Options.Priority != 3 || jobs[1].Args != (ping{3}) {
		t.Fatalf("jobs %+v", jobs)
	}
	if got := unitstest.ArgsOf[ping](tr); len(got) != 2 || got[0].N != 1 {
		t.Errorf("ArgsOf = %v", got)
	}
	var ran []int
	err := tr.Perform(ctx, func(ctx context.Context, a job.Args) (string, error) {
		n := a.(ping).N
		ran = append(ran, n)
		if n == 1 {
			_, _ = tr.Enqueue(ctx, ping{4}) // enqueued while performing: runs too
		}
		return "", job.NothingToDo("fine")
	})
	if err != nil || fmt.Sprint(ran) != "[1 3 4]" || len(tr.Jobs()) != 0 {
		t.Errorf("Perform: %v %v %d", err, ran, len(tr.Jobs()))
	}
	_, _ = tr.Enqueue(ctx, ping{5})
	boom := errors.New("boom")
	if err := tr.Perform(ctx, func(context.Context, job.Args) (string, error) { return "", boom }); !errors.Is(err, boom) {
		t.Errorf("Perform error = %v", err)
	}
	tr.Reset()
	if len(tr.Named("test.ping")) != 0 {
		t.Error("Reset")
	}
}

func TestStoreBinderAndLocks(t *testing.T) {
	s := unitstest.NewStore()
	ctx := context.Background()
	b := s.Binder("shop", "product")
	now := time.Now()
	if err := b.Bind(ctx, "e1", "l1", now); err != nil {
		t.Fatal(err)
	}
	if err := b.Bind(ctx, "e1", "l2", now); err == nil {
		t.Error("conflicting bind accepted")
	}
	if err := b.Bind(ctx, "e2", "l1", now); err == nil {
		t.Error("conflicting bind accepted")
	}
	if l, ok, _ := b.ToInternal(ctx, "e1"); !ok || l != "l1" {
		t.Error("ToInternal")
	}
	if e, ok, _ := b.ToExternal(ctx, "l1"); !ok || e != "e1" {
		t.Error("ToExternal")
	}
	if d, ok, _ := b.SyncDate(ctx, "e1"); !ok || !d.Equal(now) {
		t.Error("SyncDate")
	}
	if _, ok, _ := s.Binder("shop", "order").ToInternal(ctx, "e1"); ok {
		t.Error("binders share models")
	}
	_ = b.Unbind(ctx, "e1")
	if _, ok, _ := b.ToExternal(ctx, "l1"); ok {
		t.Error("Unbind kept the reverse link")
	}

	rel, err := s.Acquire(ctx, "r", time.Minute)
	if err != nil || !s.Held("r") {
		t.Fatal(err)
	}
	_, err = s.Acquire(ctx, "r", time.Minute)
	if r, ok := job.AsRetryable(err); !ok || !r.NoCount || !errors.Is(err, unitstest.ErrLocked) {
		t.Errorf("held lock: %v", err)
	}
	_ = rel(ctx)
	_ = rel(ctx)
	if _, err := s.Acquire(ctx, "r", time.Minute); err != nil || s.Acquired("r") != 2 {
		t.Errorf("after release: %v %d", err, s.Acquired("r"))
	}
}

func TestMemoryRecordsOriginsAndCopies(t *testing.T) {
	m := unitstest.NewMemory("product")
	m.Prefix = "P"
	var seen []unitstest.Change
	m.OnChange = func(_ context.Context, c unitstest.Change) { seen = append(seen, c) }
	rec := units.Record{"name": "a"}
	id, _ := m.Create(units.WithOrigin(context.Background(), "shop-1"), rec)
	rec["name"] = "mutated"
	got, _ := m.Get(id)
	if id != "P1" || got["name"] != "a" {
		t.Errorf("id %s record %v: the memory must keep its own copy", id, got)
	}
	_ = m.Write(context.Background(), id, units.Record{"price": 1})
	if len(seen) != 2 || seen[0].Origin != "shop-1" || seen[1].Origin != "" || seen[1].Op != "write" {
		t.Errorf("changes %+v", seen)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := m.Read(ctx, id, nil); err == nil {
		t.Error("cancelled context accepted")
	}
}

// Capture the jobs a piece of connector code enqueues, then run them.
func ExampleTrap() {
	tr := unitstest.NewTrap()
	ctx := context.Background()
	for _, id := range []string{"7", "8", "7"} {
		a := units.ImportRecord{BackendID: "shop-eu", Model: "product", ExternalID: id}
		_, _ = tr.Enqueue(ctx, a, job.WithIdentityKey(a.IdentityKey()))
	}
	for _, a := range unitstest.ArgsOf[units.ImportRecord](tr) {
		fmt.Println(a.JobName(), a.ExternalID)
	}
	_ = tr.Perform(ctx, func(_ context.Context, a job.Args) (string, error) {
		fmt.Println("run", a.(units.ImportRecord).ExternalID)
		return "", nil
	})
	// Output:
	// connector.import_record 7
	// connector.import_record 8
	// run 7
	// run 8
}
