package unitstest_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/connector-go/connector/bindings"
	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/internal/wire"
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

// storeKinds gives the in-memory Store and the real Redis one of package
// bindings, so that one contract runs against both: the in-memory store must
// behave (and fail) like the real one.
var storeKinds = []struct {
	name string
	new  func(t *testing.T) (func(backendID, model string) units.Binder, units.Locker)
}{
	{"memory", func(t *testing.T) (func(string, string) units.Binder, units.Locker) {
		s := unitstest.NewStore()
		return s.Binder, s
	}},
	{"redis", func(t *testing.T) (func(string, string) units.Binder, units.Locker) {
		rdb, prefix := testenv.Redis(t)
		s := bindings.New(rdb, prefix)
		return func(b, m string) units.Binder { return s.Binder(b, m) }, s
	}},
}

func TestStoreBehavesLikeBindings(t *testing.T) {
	for _, k := range storeKinds {
		t.Run(k.name, func(t *testing.T) {
			binders, locker := k.new(t)
			ctx := context.Background()
			b := binders("shop", "product")
			now := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
			if err := b.Bind(ctx, "e1", "l1", now); err != nil {
				t.Fatal(err)
			}
			for _, pair := range [][2]string{{"e1", "l2"}, {"e2", "l1"}} {
				err := b.Bind(ctx, pair[0], pair[1], now)
				var ce *bindings.ConflictError
				if !errors.Is(err, bindings.ErrConflict) || !errors.As(err, &ce) || ce.Model != "product" {
					t.Errorf("conflicting Bind(%s, %s) = %v, want a *bindings.ConflictError", pair[0], pair[1], err)
				}
			}
			if err := b.Bind(ctx, "", "l9", now); !errors.Is(err, bindings.ErrInvalid) {
				t.Errorf("Bind with an empty id = %v, want bindings.ErrInvalid", err)
			}
			later := now.Add(time.Hour)
			if err := b.Bind(ctx, "e1", "l1", later); err != nil {
				t.Errorf("binding a bound pair again: %v", err)
			}
			if l, ok, _ := b.ToInternal(ctx, "e1"); !ok || l != "l1" {
				t.Error("ToInternal")
			}
			if e, ok, _ := b.ToExternal(ctx, "l1"); !ok || e != "e1" {
				t.Error("ToExternal")
			}
			if d, ok, _ := b.SyncDate(ctx, "e1"); !ok || !d.Equal(later) {
				t.Errorf("SyncDate = %v %v, want %v (the last bind's date)", d, ok, later)
			}
			if _, ok, _ := binders("shop", "order").ToInternal(ctx, "e1"); ok {
				t.Error("binders share models")
			}
			if _, ok, _ := binders("shop-2", "product").ToInternal(ctx, "e1"); ok {
				t.Error("binders share backend instances")
			}
			if err := b.Unbind(ctx, "e1"); err != nil {
				t.Fatal(err)
			}
			if _, ok, _ := b.ToExternal(ctx, "l1"); ok {
				t.Error("Unbind kept the reverse link")
			}
			if _, ok, _ := b.SyncDate(ctx, "e1"); ok {
				t.Error("Unbind kept the sync date")
			}
			if err := b.Unbind(ctx, "never-bound"); err != nil {
				t.Errorf("Unbind of an unbound id: %v", err)
			}

			rel, err := locker.Acquire(ctx, "r", time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			_, err = locker.Acquire(ctx, "r", time.Minute)
			var le *bindings.LockedError
			if r, ok := job.AsRetryable(err); !ok || !r.NoCount || !errors.Is(err, unitstest.ErrLocked) || !errors.As(err, &le) || le.Resource != "r" {
				t.Errorf("held lock: %v, want a job.RetryNoCount of a *bindings.LockedError", err)
			}
			if _, err := locker.Acquire(ctx, "other", time.Minute); err != nil {
				t.Errorf("another resource: %v", err)
			}
			if err := rel(ctx); err != nil {
				t.Fatal(err)
			}
			if err := rel(ctx); !errors.Is(err, bindings.ErrLockLost) {
				t.Errorf("second release = %v, want bindings.ErrLockLost", err)
			}
			if _, err := locker.Acquire(ctx, "r", time.Minute); err != nil {
				t.Errorf("after release: %v", err)
			}
			if _, err := locker.Acquire(ctx, "", time.Minute); !errors.Is(err, bindings.ErrInvalid) {
				t.Errorf("empty resource: %v, want bindings.ErrInvalid", err)
			}
		})
	}
}

func TestStoreCountsLocks(t *testing.T) {
	s := unitstest.NewStore()
	ctx := context.Background()
	rel, err := s.Acquire(ctx, "r", time.Minute)
	if err != nil || !s.Held("r") {
		t.Fatal(err)
	}
	_ = rel(ctx)
	if _, err := s.Acquire(ctx, "r", time.Minute); err != nil || s.Acquired("r") != 2 || !s.Held("r") {
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

// Run a connector's jobs inline: a batch import enqueues one job per record
// (delayed), and each runs at once, in the test.
func ExampleInline() {
	shop, local, store := unitstest.NewSystem(), unitstest.NewSystem(), unitstest.NewStore()
	reg := units.NewRegistry()
	b := reg.Backend("shop")
	_ = units.Register(b, units.AdapterUsage, units.AnyModel, shop.Factory())
	_ = units.Register(b, units.BatchImporterUsage, units.AnyModel, &units.BatchImporter{Delayed: true})
	_ = units.Register(b, units.ImporterUsage, units.AnyModel, &units.Importer{})
	_ = units.Register(b, units.ImportMapperUsage, "product", &units.Mapper{Direct: []units.Rule{units.Direct("title", "name")}})
	shop.Model("product").Put("7", units.Record{"title": "Hammer"})
	shop.Model("product").Put("8", units.Record{"title": "Saw"})

	in := unitstest.NewInline(reg, units.Env{
		Backends: units.Backends(units.Backend{ID: "shop-eu", Type: "shop"}),
		Binders:  store.Binder, Locker: store, Local: local.Adapter,
	})
	_, err := in.Enqueue(context.Background(), units.ImportBatch{BackendID: "shop-eu", Model: "product"})
	fmt.Println(err)
	for _, r := range in.Results() {
		fmt.Println(r.Args.JobName(), r.Result)
	}
	// Output:
	// <nil>
	// connector.import_record product 7 imported from shop-eu: local record 1 created
	// connector.import_record product 8 imported from shop-eu: local record 2 created
	// connector.import_batch 2 product import jobs enqueued for shop-eu
}

// The trap deduplicates as the dispatcher does: an identity computed from
// the arguments (job.WithIdentityExact, WithIdentityFunc) counts as much as
// a key given as such, and a caller-chosen id enqueued twice is one job
// (JetStream drops the repeat: Nats-Msg-Id).
func TestTrapDeduplicatesLikeTheDispatcher(t *testing.T) {
	tr := unitstest.NewTrap()
	ctx := context.Background()
	id1, err1 := tr.Enqueue(ctx, ping{1}, job.WithIdentityExact())
	id2, err2 := tr.Enqueue(ctx, ping{1}, job.WithIdentityExact())
	id3, err3 := tr.Enqueue(ctx, ping{2}, job.WithIdentityExact())
	if err1 != nil || err2 != nil || err3 != nil || id1 != id2 || id1 == id3 {
		t.Errorf("identity exact: ids %s %s %s (%v %v %v), want the first two equal", id1, id2, id3, err1, err2, err3)
	}
	byName := job.WithIdentityFunc(func(name string, _ []byte) string { return name })
	a, _ := tr.Enqueue(ctx, ping{7}, byName)
	if b, _ := tr.Enqueue(ctx, ping{8}, byName); a == id1 || b != a {
		t.Errorf("identity func: ids %s %s, want one new job", a, b)
	}
	c1, _ := tr.Enqueue(ctx, ping{3}, job.WithID("order-42"))
	c2, _ := tr.Enqueue(ctx, ping{3}, job.WithID("order-42"))
	if c1 != "order-42" || c2 != "order-42" {
		t.Errorf("chosen ids %s %s", c1, c2)
	}
	if n := len(tr.Jobs()); n != 4 {
		t.Errorf("%d jobs captured, want 4 (ping 1, 2, 7 and order-42): %+v", n, tr.Jobs())
	}
}

// A held lock retries the job after the same delay with both stores (the
// real one's default, 1 s, not the job's retry pattern), and both refuse a
// TTL below the millisecond the real one counts in.
func TestStoreLockRetriesLikeBindings(t *testing.T) {
	for _, k := range storeKinds {
		t.Run(k.name, func(t *testing.T) {
			_, locker := k.new(t)
			ctx := context.Background()
			if _, err := locker.Acquire(ctx, "r", time.Minute); err != nil {
				t.Fatal(err)
			}
			_, err := locker.Acquire(ctx, "r", time.Minute)
			if r, ok := job.AsRetryable(err); !ok || !r.NoCount || r.Delay != time.Second {
				t.Errorf("held lock: %#v, want a job.RetryNoCount after 1s", err)
			}
			if _, err := locker.Acquire(ctx, "sub-ms", 500*time.Microsecond); !errors.Is(err, bindings.ErrInvalid) {
				t.Errorf("a TTL of 500µs: %v, want bindings.ErrInvalid", err)
			}
		})
	}
}

// A record seeded with Put(id, nil) is an empty record: it is written like
// any other, and a Create does not reuse its id.
func TestMemoryPutNilIsAnEmptyRecord(t *testing.T) {
	m := unitstest.NewMemory("product")
	ctx := context.Background()
	m.Put("1", nil)
	id, err := m.Create(ctx, units.Record{"name": "a"})
	if err != nil || id == "1" {
		t.Fatalf("Create = %q, %v: the id of the seeded record was reused", id, err)
	}
	if err := m.Write(ctx, "1", units.Record{"name": "b"}); err != nil {
		t.Fatalf("Write to the seeded record: %v", err)
	}
	if got, ok := m.Get("1"); !ok || got["name"] != "b" {
		t.Errorf("seeded record = %v, %v", got, ok)
	}
	if ids, err := m.Search(ctx, units.Query{}); err != nil || !slices.Equal(ids, []string{"1", id}) {
		t.Errorf("Search = %v, %v", ids, err)
	}
	// So is a record created from nil, stamped like any other.
	m.StampField = "updated_at"
	id, err = m.Create(ctx, nil)
	if got, ok := m.Get(id); err != nil || !ok || got["updated_at"] == nil {
		t.Errorf("Create(nil) = %q, %v: %v", id, err, got)
	}
}

// wired has what the wire changes: a map of any (numbers come back as the
// smallest msgpack integer, int8 for 5) and a field that does not travel.
type wired struct {
	Filters map[string]any `msgpack:"filters"`
	local   string
}

func (wired) JobName() string { return "test.wired" }

// unsendable cannot be encoded: a dispatcher refuses it.
type unsendable struct {
	C chan int `msgpack:"c"`
}

func (unsendable) JobName() string { return "test.unsendable" }

// Jobs run by the trap and the inline runner get their arguments as a
// worker does: encoded, then decoded into their type. Arguments that do
// not encode are refused at enqueue, as a dispatcher refuses them.
func TestJobsRunWithArgsAsAWorkerDecodesThem(t *testing.T) {
	ctx := context.Background()
	args := wired{Filters: map[string]any{"n": 5}, local: "kept in memory only"}
	raw, err := wire.Marshal(args)
	if err != nil {
		t.Fatal(err)
	}
	var want wired
	if err := wire.Unmarshal(raw, &want); err != nil {
		t.Fatal(err)
	}
	check := func(kit string, got job.Args) {
		t.Helper()
		w, ok := got.(wired)
		if !ok {
			t.Fatalf("%s: ran %T, want wired", kit, got)
		}
		if fmt.Sprintf("%T %q", w.Filters["n"], w.local) != fmt.Sprintf("%T %q", want.Filters["n"], want.local) {
			t.Errorf("%s: the job saw n %T, local %q; a worker sees n %T, local %q", kit, w.Filters["n"], w.local, want.Filters["n"], want.local)
		}
	}

	tr := unitstest.NewTrap()
	if _, err := tr.Enqueue(ctx, args); err != nil {
		t.Fatal(err)
	}
	if err := tr.Perform(ctx, func(_ context.Context, a job.Args) (string, error) { check("Trap.Perform", a); return "", nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := tr.Enqueue(ctx, unsendable{C: make(chan int)}); err == nil {
		t.Errorf("Trap.Enqueue of arguments that do not encode: no error")
	}

	in := unitstest.NewInline(units.NewRegistry(), units.Env{})
	in.Handle("test.wired", func(_ context.Context, a job.Args) (string, error) { check("Inline", a); return "", nil })
	if _, err := in.Enqueue(ctx, args); err != nil {
		t.Fatal(err)
	}
	in.Handle("test.unsendable", func(context.Context, job.Args) (string, error) { return "ran", nil })
	if _, err := in.Enqueue(ctx, unsendable{C: make(chan int)}); err == nil {
		t.Errorf("Inline.Enqueue of arguments that do not encode: no error")
	}
}

// A sync date reads back as the real store keeps it: the instant, in UTC,
// without a monotonic clock reading; a date the real store cannot keep
// (outside the years 0000-9999 in UTC) is refused by both.
func TestStoreSyncDateLikeBindings(t *testing.T) {
	for _, k := range storeKinds {
		t.Run(k.name, func(t *testing.T) {
			binders, _ := k.new(t)
			ctx := context.Background()
			b := binders("shop", "product")
			at := time.Date(2026, 1, 2, 3, 4, 5, 6, time.FixedZone("CET", 3600))
			if err := b.Bind(ctx, "e1", "l1", at); err != nil {
				t.Fatal(err)
			}
			d, ok, err := b.SyncDate(ctx, "e1")
			if err != nil || !ok || d != at.UTC() {
				t.Errorf("SyncDate = %v, %v, %v; want %v (in UTC)", d, ok, err, at.UTC())
			}
			now := time.Now()
			if err := b.Bind(ctx, "e1", "l1", now); err != nil {
				t.Fatal(err)
			}
			if d, _, _ := b.SyncDate(ctx, "e1"); d != now.Round(0).UTC() {
				t.Errorf("SyncDate = %v, want %v (in UTC, no monotonic reading)", d, now.Round(0).UTC())
			}
			far := time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)
			if err := b.Bind(ctx, "e2", "l2", far); !errors.Is(err, bindings.ErrInvalid) {
				t.Errorf("Bind with a sync date in the year 10000: %v, want bindings.ErrInvalid", err)
			}
			if _, ok, _ := b.ToInternal(ctx, "e2"); ok {
				t.Error("the refused Bind bound e2")
			}
		})
	}
}

// Records are values down to their nested lists and maps (an order's
// lines), as they are for a system behind an API: changing a record after
// Create, Write or Read, or one Get returns, does not change the system.
func TestMemoryRecordsAreDeepValues(t *testing.T) {
	m := unitstest.NewMemory("order")
	ctx := context.Background()
	line := map[string]any{"qty": 1}
	rec := units.Record{"lines": []any{line}, "meta": map[string]any{"k": "v"}}
	id, err := m.Create(ctx, rec)
	if err != nil {
		t.Fatal(err)
	}
	line["qty"] = 2
	rec["meta"].(map[string]any)["k"] = "changed"
	qty := func(r units.Record) any { return r["lines"].([]any)[0].(map[string]any)["qty"] }
	got, err := m.Read(ctx, id, nil)
	if err != nil || qty(got) != 1 || got["meta"].(map[string]any)["k"] != "v" {
		t.Fatalf("after the caller changed what it gave Create: %v, %v", got, err)
	}
	got["lines"].([]any)[0].(map[string]any)["qty"] = 3
	if again, _ := m.Read(ctx, id, []string{"lines"}); qty(again) != 1 {
		t.Errorf("changing a nested value Read returned changed the system: %v", again)
	}
	upd := units.Record{"lines": []any{map[string]any{"qty": 4}}}
	if err := m.Write(ctx, id, upd); err != nil {
		t.Fatal(err)
	}
	upd["lines"].([]any)[0].(map[string]any)["qty"] = 5
	if again, _ := m.Get(id); qty(again) != 4 {
		t.Errorf("changing a nested value given to Write changed the system: %v", again)
	}
	again, _ := m.Get(id)
	again["lines"].([]any)[0].(map[string]any)["qty"] = 6
	if c := m.Changes(); qty(c[len(c)-1].Record) != 4 {
		t.Errorf("the change recorded changed with the record: %v", c[len(c)-1].Record)
	}
	if again, _ := m.Get(id); qty(again) != 4 {
		t.Errorf("changing a nested value Get returned changed the system: %v", again)
	}
}

// Options a dispatcher refuses are refused by the trap and the inline
// runner too (and nothing is captured or run), so that a test does not
// pass with a job production never enqueues.
func TestJobsRefuseWhatTheDispatcherRefuses(t *testing.T) {
	ctx := context.Background()
	refused := map[string]job.Option{
		"negative max retries":    job.WithMaxRetries(-1),
		"id with a dot":           job.WithID("order.42"),
		"id too long":             job.WithID(strings.Repeat("x", 129)),
		"channel part not a word": job.WithChannel("root.1shop"),
		"negative retry delay":    job.WithRetryPattern(job.RetryPattern{1: -time.Second}),
		"dedup id header":         job.WithHeader("Nats-Msg-Id", "order-42"),
	}
	tr := unitstest.NewTrap()
	ran := 0
	in := unitstest.NewInline(units.NewRegistry(), units.Env{})
	in.Handle("test.ping", func(context.Context, job.Args) (string, error) { ran++; return "", nil })
	for name, opt := range refused {
		if id, err := tr.Enqueue(ctx, ping{1}, opt); err == nil {
			t.Errorf("Trap: %s: enqueued as %s, want an error", name, id)
		}
		if id, err := in.Enqueue(ctx, ping{1}, opt); err == nil {
			t.Errorf("Inline: %s: enqueued as %s, want an error", name, id)
		}
	}
	if n := len(tr.Jobs()); n != 0 || ran != 0 || len(in.Results()) != 0 {
		t.Errorf("%d jobs captured, %d run (%d results), want none", n, ran, len(in.Results()))
	}
	// What a dispatcher takes, both take.
	ok := []job.Option{job.WithID("order-42"), job.WithChannel("root.shop"), job.WithMaxRetries(0),
		job.WithRetryPattern(job.RetryPattern{1: time.Second}), job.WithHeader("X-Tenant", "t1")}
	if _, err := tr.Enqueue(ctx, ping{1}, ok...); err != nil {
		t.Errorf("Trap: %v", err)
	}
	if _, err := in.Enqueue(ctx, ping{1}, ok...); err != nil || ran != 1 {
		t.Errorf("Inline: %v (ran %d)", err, ran)
	}
}

// A caller-chosen id enqueued again after its job ran is still one job:
// JetStream drops a repeated Nats-Msg-Id for its dedup window (2 minutes),
// whether or not the first message was consumed. An identity key, freed
// when its job starts, enqueues anew.
func TestTrapChosenIDDedupOutlivesPerform(t *testing.T) {
	tr := unitstest.NewTrap()
	ctx := context.Background()
	if _, err := tr.Enqueue(ctx, ping{1}, job.WithID("ev-shop-1")); err != nil {
		t.Fatal(err)
	}
	if _, err := tr.Enqueue(ctx, ping{2}, job.WithIdentityKey("k")); err != nil {
		t.Fatal(err)
	}
	var ran []int
	perform := func() {
		t.Helper()
		if err := tr.Perform(ctx, func(_ context.Context, a job.Args) (string, error) { ran = append(ran, a.(ping).N); return "", nil }); err != nil {
			t.Fatal(err)
		}
	}
	perform()
	if id, err := tr.Enqueue(ctx, ping{1}, job.WithID("ev-shop-1")); err != nil || id != "ev-shop-1" {
		t.Errorf("repeat of a chosen id = %q, %v", id, err)
	}
	if _, err := tr.Enqueue(ctx, ping{2}, job.WithIdentityKey("k")); err != nil {
		t.Fatal(err)
	}
	perform()
	if fmt.Sprint(ran) != "[1 2 2]" {
		t.Errorf("ran %v, want [1 2 2] (the chosen id once, the identity key's job twice)", ran)
	}
}
