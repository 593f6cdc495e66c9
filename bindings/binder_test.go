package bindings_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/connector-go/connector/bindings"
	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/job"
)

func newStore(t testing.TB) (*bindings.Store, *redis.Client, string) {
	t.Helper()
	rdb, prefix := testenv.Redis(t)
	return bindings.New(rdb, prefix), rdb, prefix
}

// The Binder interface units/ codes against: *Binder must satisfy it.
type binderAPI interface {
	ToInternal(ctx context.Context, externalID string) (localID string, found bool, err error)
	ToExternal(ctx context.Context, localID string) (externalID string, found bool, err error)
	Bind(ctx context.Context, externalID, localID string, syncedAt time.Time) error
	Unbind(ctx context.Context, externalID string) error
	SyncDate(ctx context.Context, externalID string) (t time.Time, found bool, err error)
	ToInternalMany(ctx context.Context, externalIDs []string) (map[string]string, error)
	ToExternalMany(ctx context.Context, localIDs []string) (map[string]string, error)
	SyncDateMany(ctx context.Context, externalIDs []string) (map[string]time.Time, error)
}

var _ binderAPI = (*bindings.Binder)(nil)

func mustLookup(t *testing.T, b *bindings.Binder, ext, wantLocal string) {
	t.Helper()
	ctx := context.Background()
	loc, found, err := b.ToInternal(ctx, ext)
	if err != nil || !found || loc != wantLocal {
		t.Fatalf("ToInternal(%q) = %q, %v, %v; want %q", ext, loc, found, err, wantLocal)
	}
	back, found, err := b.ToExternal(ctx, wantLocal)
	if err != nil || !found || back != ext {
		t.Fatalf("ToExternal(%q) = %q, %v, %v; want %q", wantLocal, back, found, err, ext)
	}
}

// assertConsistent checks the stored hashes of one (backend, model), read
// raw as docs/bindings.md lays them out: the forward and reverse hashes are
// exact inverses and every binding has a sync date, nothing more. want >= 0
// also checks the number of bindings.
func assertConsistent(t *testing.T, rdb *redis.Client, prefix, backend, model string, want int) map[string]string {
	t.Helper()
	ctx := context.Background()
	tag := "{" + prefix + ":bind:" + backend + ":" + model + "}"
	fwd := rdb.HGetAll(ctx, tag+":e2l").Val()
	rev := rdb.HGetAll(ctx, tag+":l2e").Val()
	sync := rdb.HGetAll(ctx, tag+":sync").Val()
	if len(fwd) != len(rev) || len(fwd) != len(sync) {
		t.Fatalf("%s/%s: sizes differ: e2l %d, l2e %d, sync %d", backend, model, len(fwd), len(rev), len(sync))
	}
	for e, l := range fwd {
		if rev[l] != e {
			t.Fatalf("%s/%s: e2l[%s]=%s but l2e[%s]=%q", backend, model, e, l, l, rev[l])
		}
		if _, ok := sync[e]; !ok {
			t.Fatalf("%s/%s: no sync date for %s", backend, model, e)
		}
	}
	if want >= 0 && len(fwd) != want {
		t.Fatalf("%s/%s: %d bindings, want %d: %v", backend, model, len(fwd), want, fwd)
	}
	return fwd
}

func mustMissing(t *testing.T, b *bindings.Binder, ext, local string) {
	t.Helper()
	ctx := context.Background()
	if ext != "" {
		if v, found, err := b.ToInternal(ctx, ext); err != nil || found {
			t.Fatalf("ToInternal(%q) = %q, %v, %v; want not found", ext, v, found, err)
		}
	}
	if local != "" {
		if v, found, err := b.ToExternal(ctx, local); err != nil || found {
			t.Fatalf("ToExternal(%q) = %q, %v, %v; want not found", local, v, found, err)
		}
	}
}

// Bind, look up both ways, sync date round-trips, unbind removes both
// directions and the sync date.
func TestBindLookupUnbind(t *testing.T) {
	s, _, _ := newStore(t)
	ctx := context.Background()
	b := s.Binder("shop-eu", "product")

	mustMissing(t, b, "E1", "L1")
	if _, found, err := b.SyncDate(ctx, "E1"); err != nil || found {
		t.Fatalf("SyncDate before bind: found=%v err=%v", found, err)
	}
	at := time.Date(2026, 3, 4, 5, 6, 7, 891011121, time.FixedZone("x", 3600))
	if err := b.Bind(ctx, "E1", "L1", at); err != nil {
		t.Fatal(err)
	}
	mustLookup(t, b, "E1", "L1")
	got, found, err := b.SyncDate(ctx, "E1")
	if err != nil || !found || !got.Equal(at) {
		t.Fatalf("SyncDate = %v, %v, %v; want %v", got, found, err, at)
	}

	if err := b.Unbind(ctx, "E1"); err != nil {
		t.Fatal(err)
	}
	mustMissing(t, b, "E1", "L1")
	if _, found, _ := b.SyncDate(ctx, "E1"); found {
		t.Fatal("sync date survived Unbind")
	}
	// Unbinding again is not an error; the ids are free for new bindings.
	if err := b.Unbind(ctx, "E1"); err != nil {
		t.Fatal(err)
	}
	if err := b.Bind(ctx, "E1", "L2", at); err != nil {
		t.Fatal(err)
	}
	if err := b.Bind(ctx, "E2", "L1", at); err != nil {
		t.Fatal(err)
	}
	mustLookup(t, b, "E1", "L2")
	mustLookup(t, b, "E2", "L1")

	// Empty ids are refused without touching Redis.
	if err := b.Bind(ctx, "", "L9", at); !errors.Is(err, bindings.ErrInvalid) {
		t.Fatalf("Bind with empty external id: %v", err)
	}
}

// Binding the same pair again is idempotent and refreshes the sync date.
func TestBindSamePairRefreshesSyncDate(t *testing.T) {
	s, rdb, prefix := newStore(t)
	ctx := context.Background()
	b := s.Binder("erp", "partner")
	t1 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	t2 := t1.Add(time.Hour)
	if err := b.Bind(ctx, "E", "L", t1); err != nil {
		t.Fatal(err)
	}
	if err := b.Bind(ctx, "E", "L", t2); err != nil {
		t.Fatalf("rebinding the same pair: %v", err)
	}
	got, _, err := b.SyncDate(ctx, "E")
	if err != nil || !got.Equal(t2) {
		t.Fatalf("SyncDate = %v, %v; want %v", got, err, t2)
	}
	mustLookup(t, b, "E", "L")

	// The date given wins, even an older one (a late, stale import makes
	// the next one run again rather than be skipped as up to date).
	if err := b.Bind(ctx, "E", "L", t1); err != nil {
		t.Fatal(err)
	}
	if got, _, _ := b.SyncDate(ctx, "E"); !got.Equal(t1) {
		t.Fatalf("SyncDate after rebinding with an older date = %v; want %v", got, t1)
	}
	// Rebinding adds nothing: still exactly one binding, both ways.
	fwd, _ := b.ToInternalMany(ctx, []string{"E"})
	rev, _ := b.ToExternalMany(ctx, []string{"L"})
	if len(fwd) != 1 || len(rev) != 1 {
		t.Fatalf("after rebinding: %v %v", fwd, rev)
	}
	assertConsistent(t, rdb, prefix, "erp", "partner", 1)
}

// A conflicting bind fails with a typed error naming both sides and
// changes nothing, whichever side conflicts.
func TestBindConflict(t *testing.T) {
	s, rdb, prefix := newStore(t)
	ctx := context.Background()
	b := s.Binder("shop", "order")
	t1 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if err := b.Bind(ctx, "E1", "L1", t1); err != nil {
		t.Fatal(err)
	}
	if err := b.Bind(ctx, "E2", "L2", t1); err != nil {
		t.Fatal(err)
	}
	later := t1.Add(time.Hour)
	before := snapshot(t, rdb, prefix)

	cases := []struct {
		ext, loc           string
		boundLoc, boundExt string
	}{
		{"E1", "L3", "L1", ""},   // external already bound elsewhere
		{"E3", "L1", "", "E1"},   // local already bound elsewhere
		{"E1", "L2", "L1", "E2"}, // both
	}
	for _, c := range cases {
		err := b.Bind(ctx, c.ext, c.loc, later)
		if !errors.Is(err, bindings.ErrConflict) {
			t.Fatalf("Bind(%s,%s) = %v; want ErrConflict", c.ext, c.loc, err)
		}
		var ce *bindings.ConflictError
		if !errors.As(err, &ce) {
			t.Fatalf("Bind(%s,%s): %T is not a *ConflictError", c.ext, c.loc, err)
		}
		want := bindings.ConflictError{Backend: "shop", Model: "order", ExternalID: c.ext, LocalID: c.loc,
			BoundLocalID: c.boundLoc, BoundExternalID: c.boundExt}
		if *ce != want {
			t.Fatalf("conflict = %+v; want %+v", *ce, want)
		}
		// The message names both sides: the pair asked for and what holds it.
		for _, id := range []string{c.ext, c.loc, c.boundLoc, c.boundExt} {
			if !strings.Contains(err.Error(), fmt.Sprintf("%q", id)) && id != "" {
				t.Fatalf("conflict message %q does not name %q", err, id)
			}
		}
		if _, ok := job.AsRetryable(err); ok {
			t.Fatalf("a conflict is retryable: %v (retrying cannot fix it)", err)
		}
		t.Logf("%v", err)
	}
	// Nothing changed: every key of the prefix, byte for byte.
	if after := snapshot(t, rdb, prefix); !slices.Equal(before, after) {
		t.Fatalf("refused binds changed Redis:\nbefore %v\nafter  %v", before, after)
	}
	// Nothing changed, sync dates included.
	mustLookup(t, b, "E1", "L1")
	mustLookup(t, b, "E2", "L2")
	mustMissing(t, b, "E3", "L3")
	for _, ext := range []string{"E1", "E2"} {
		got, _, _ := b.SyncDate(ctx, ext)
		if !got.Equal(t1) {
			t.Fatalf("sync date of %s changed to %v by a refused bind", ext, got)
		}
	}
}

// A binding of one (backend, model) never answers for another, including
// names that would collide if keys were joined naively.
func TestNamespaces(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	ctx := context.Background()
	s := bindings.New(rdb, prefix)
	other := bindings.New(rdb, prefix+"x")
	at := time.Now()

	a := s.Binder("A", "product")
	if err := a.Bind(ctx, "E", "L", at); err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string]*bindings.Binder{
		"other backend": s.Binder("B", "product"),
		"other model":   s.Binder("A", "category"),
		"other prefix":  other.Binder("A", "product"),
	} {
		if _, found, err := b.ToInternal(ctx, "E"); err != nil || found {
			t.Fatalf("%s answers for A/product: found=%v err=%v", name, found, err)
		}
		if _, found, err := b.ToExternal(ctx, "L"); err != nil || found {
			t.Fatalf("%s answers for A/product (reverse): found=%v err=%v", name, found, err)
		}
		m, err := b.ToInternalMany(ctx, []string{"E"})
		if err != nil || len(m) != 0 {
			t.Fatalf("%s batch answers for A/product: %v %v", name, m, err)
		}
		// The same ids bind independently there.
		if err := b.Bind(ctx, "E", "L-"+name, at); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	mustLookup(t, a, "E", "L")

	// "a:b"+"c" and "a"+"b:c" and brace-laden names stay apart.
	x := s.Binder("a:b", "c")
	y := s.Binder("a", "b:c")
	z := s.Binder("a}{b", "%3A")
	if err := x.Bind(ctx, "E", "X", at); err != nil {
		t.Fatal(err)
	}
	if err := z.Bind(ctx, "E", "Z", at); err != nil {
		t.Fatal(err)
	}
	mustMissing(t, y, "E", "X")
	mustLookup(t, x, "E", "X")
	mustLookup(t, z, "E", "Z")
}

// The documented key layout (docs/bindings.md) is what Redis holds, so
// other-language clients can read it.
func TestKeyLayout(t *testing.T) {
	s, rdb, prefix := newStore(t)
	ctx := context.Background()
	// A sync time in another zone is stored in UTC, as documented: readers
	// in other languages compare the strings.
	at := time.Date(2026, 5, 6, 9, 8, 9, 10, time.FixedZone("CEST", 2*60*60))
	if err := s.Binder("shop:eu", "product").Bind(ctx, "E1", "L1", at); err != nil {
		t.Fatal(err)
	}
	tag := "{" + prefix + ":bind:shop%3Aeu:product}"
	if v := rdb.HGet(ctx, tag+":e2l", "E1").Val(); v != "L1" {
		t.Fatalf("e2l: %q", v)
	}
	if v := rdb.HGet(ctx, tag+":l2e", "L1").Val(); v != "E1" {
		t.Fatalf("l2e: %q", v)
	}
	if v := rdb.HGet(ctx, tag+":sync", "E1").Val(); v != "2026-05-06T07:08:09.000000010Z" {
		t.Fatalf("sync: %q", v)
	}
	l, err := s.Lock(ctx, "res/1", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	ltag := "{" + prefix + ":lock:res/1}"
	if rdb.Exists(ctx, ltag+":holder").Val() != 1 || rdb.Get(ctx, ltag+":fence").Val() != "1" || l.Token() != 1 {
		t.Fatal("lock keys do not follow the documented layout")
	}
	if err := s.MarkCompleted(ctx, "job:42", "ok", time.Minute); err != nil {
		t.Fatal(err)
	}
	if v := rdb.Get(ctx, "{"+prefix+":done:job%3A42}").Val(); v != "ok" {
		t.Fatalf("done key: %q", v)
	}
}

// Batch lookups answer many ids in one call, both ways; missing ids are
// absent; more than one chunk (1000) works.
func TestBatchLookups(t *testing.T) {
	s, _, _ := newStore(t)
	ctx := context.Background()
	b := s.Binder("shop", "product")
	const n = 2500
	at := time.Now()
	// Seed from a few goroutines for speed.
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 8 {
				if i%5 == 0 {
					continue // leave every fifth id unbound
				}
				if err := b.Bind(ctx, fmt.Sprintf("E%d", i), fmt.Sprintf("L%d", i), at); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	ext := make([]string, 0, n+1)
	loc := make([]string, 0, n+1)
	for i := 0; i < n; i++ {
		ext = append(ext, fmt.Sprintf("E%d", i))
		loc = append(loc, fmt.Sprintf("L%d", i))
	}
	ext = append(ext, "E7") // duplicates are fine
	for _, size := range []int{0, 1, 1000, n + 1} {
		m, err := b.ToInternalMany(ctx, ext[:size])
		if err != nil {
			t.Fatal(err)
		}
		r, err := b.ToExternalMany(ctx, loc[:min(size, n)])
		if err != nil {
			t.Fatal(err)
		}
		d, err := b.SyncDateMany(ctx, ext[:size])
		if err != nil {
			t.Fatal(err)
		}
		want := 0
		for i := 0; i < min(size, n); i++ {
			if i%5 == 0 {
				if _, ok := m[ext[i]]; ok {
					t.Fatalf("unbound %s present", ext[i])
				}
				continue
			}
			want++
			if m[ext[i]] != loc[i] || r[loc[i]] != ext[i] || !d[ext[i]].Equal(at) {
				t.Fatalf("size %d: %s -> %q, %s -> %q, synced %v", size, ext[i], m[ext[i]], loc[i], r[loc[i]], d[ext[i]])
			}
		}
		if len(m) != want || len(r) != want || len(d) != want {
			t.Fatalf("size %d: got %d/%d/%d entries, want %d", size, len(m), len(r), len(d), want)
		}
	}
}

// 50 goroutines bind the same external id to different local ids at once:
// exactly one wins, the rest get the conflict error naming the winner, and
// both directions agree afterwards. Then the mirror case: different external
// ids to one local id. Each case runs several rounds, so a check-then-set
// in Go (a lookup, then a write) would be caught letting two through.
func TestConcurrentBindSameExternal(t *testing.T) {
	s, rdb, prefix := newStore(t)
	ctx := context.Background()
	const n, rounds = 50, 10

	// run has n goroutines bind pair(i) at the same instant and returns the
	// winner and the losers' conflicts.
	run := func(b *bindings.Binder, pair func(i int) (string, string)) (winner int, conflicts []*bindings.ConflictError) {
		t.Helper()
		var (
			wg    sync.WaitGroup
			start = make(chan struct{})
			errs  = make([]error, n)
		)
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				e, l := pair(i)
				errs[i] = b.Bind(ctx, e, l, time.Now())
			}()
		}
		close(start)
		wg.Wait()
		winner = -1
		for i, err := range errs {
			var ce *bindings.ConflictError
			switch {
			case err == nil:
				if winner >= 0 {
					t.Fatalf("two winners: %d and %d", winner, i)
				}
				winner = i
			case errors.As(err, &ce) && errors.Is(err, bindings.ErrConflict):
				conflicts = append(conflicts, ce)
			default:
				t.Fatalf("goroutine %d: unexpected error %v", i, err)
			}
		}
		if winner < 0 {
			t.Fatal("no winner")
		}
		if len(conflicts) != n-1 {
			t.Fatalf("%d conflicts, want %d", len(conflicts), n-1)
		}
		return winner, conflicts
	}

	b := s.Binder("shop", "product")
	for r := 0; r < rounds; r++ {
		ext := fmt.Sprintf("E%d", r)
		loc := func(i int) string { return fmt.Sprintf("L%d-%d", r, i) }
		w, conflicts := run(b, func(i int) (string, string) { return ext, loc(i) })
		mustLookup(t, b, ext, loc(w))
		for _, ce := range conflicts {
			if ce.ExternalID != ext || ce.BoundLocalID != loc(w) || ce.BoundExternalID != "" {
				t.Fatalf("round %d: conflict %+v does not name the winner %s", r, *ce, loc(w))
			}
		}
	}
	assertConsistent(t, rdb, prefix, "shop", "product", rounds)

	b2 := s.Binder("shop", "customer")
	for r := 0; r < rounds; r++ {
		loc := fmt.Sprintf("L%d", r)
		ext := func(i int) string { return fmt.Sprintf("E%d-%d", r, i) }
		w, conflicts := run(b2, func(i int) (string, string) { return ext(i), loc })
		mustLookup(t, b2, ext(w), loc)
		for _, ce := range conflicts {
			if ce.LocalID != loc || ce.BoundExternalID != ext(w) || ce.BoundLocalID != "" {
				t.Fatalf("round %d: conflict %+v does not name the winner %s", r, *ce, ext(w))
			}
		}
	}
	assertConsistent(t, rdb, prefix, "shop", "customer", rounds)
}

// Bind is one round trip carrying one script (EVALSHA): the check of both
// directions and the write happen inside Redis, not as a lookup then a
// write from Go.
func TestBindIsOneScript(t *testing.T) {
	s, rdb, _ := newStore(t)
	ctx := context.Background()
	b := s.Binder("shop", "product")
	if err := b.Bind(ctx, "E0", "L0", time.Now()); err != nil { // loads the script
		t.Fatal(err)
	}
	if err := b.Unbind(ctx, "E0"); err != nil {
		t.Fatal(err)
	}
	h := &roundTrips{}
	rdb.AddHook(h)
	for _, c := range []struct {
		ext, loc string
		conflict bool
	}{{"E1", "L1", false}, {"E1", "L1", false}, {"E1", "L2", true}, {"E2", "L1", true}} {
		err := b.Bind(ctx, c.ext, c.loc, time.Now())
		if c.conflict != errors.Is(err, bindings.ErrConflict) || (!c.conflict && err != nil) {
			t.Fatalf("Bind(%s, %s): %v", c.ext, c.loc, err)
		}
		cmds, pipes := h.take()
		if len(cmds) != 1 || len(pipes) != 0 || cmds[0][0] != "evalsha" {
			t.Fatalf("Bind(%s, %s) sent %v and %d pipelines; want one EVALSHA", c.ext, c.loc, names(cmds), len(pipes))
		}
	}
}

// A batch of 1,000 ids is one HMGET; a larger one is one pipeline of
// HMGETs of at most 1,000 fields: one round trip either way, in both
// directions and for sync dates.
func TestBatchLookupsAreOneRoundTrip(t *testing.T) {
	s, rdb, _ := newStore(t)
	ctx := context.Background()
	b := s.Binder("shop", "product")
	if err := b.Bind(ctx, "E1", "L1", time.Now()); err != nil {
		t.Fatal(err)
	}
	ids := make([]string, 2500)
	for i := range ids {
		ids[i] = fmt.Sprintf("E%d", i)
	}
	h := &roundTrips{}
	rdb.AddHook(h)
	lookups := map[string]func([]string) (int, error){
		"ToInternalMany": func(ids []string) (int, error) { m, err := b.ToInternalMany(ctx, ids); return len(m), err },
		"ToExternalMany": func(ids []string) (int, error) { m, err := b.ToExternalMany(ctx, ids); return len(m), err },
		"SyncDateMany":   func(ids []string) (int, error) { m, err := b.SyncDateMany(ctx, ids); return len(m), err },
	}
	for name, lookup := range lookups {
		if _, err := lookup(ids[:1000]); err != nil {
			t.Fatal(err)
		}
		cmds, pipes := h.take()
		if len(cmds) != 1 || len(pipes) != 0 || cmds[0][0] != "hmget" || len(cmds[0]) != 2+1000 {
			t.Fatalf("%s of 1000 ids: commands %v, %d pipelines; want one HMGET of 1000 fields",
				name, names(cmds), len(pipes))
		}
		if _, err := lookup(ids); err != nil {
			t.Fatal(err)
		}
		cmds, pipes = h.take()
		if len(cmds) != 0 || len(pipes) != 1 || len(pipes[0]) != 3 {
			t.Fatalf("%s of 2500 ids: commands %v, %d pipelines; want one pipeline of 3 HMGETs", name, names(cmds), len(pipes))
		}
		for _, c := range pipes[0] {
			if c[0] != "hmget" || len(c) > 2+1000 {
				t.Fatalf("%s: pipelined %v with %d arguments", name, c[0], len(c))
			}
		}
		// No ids: no round trip at all.
		if n, err := lookup(nil); err != nil || n != 0 {
			t.Fatalf("%s(nil) = %d, %v", name, n, err)
		}
		if cmds, pipes = h.take(); len(cmds)+len(pipes) != 0 {
			t.Fatalf("%s(nil) sent %v and %d pipelines", name, names(cmds), len(pipes))
		}
	}
}

// Random concurrent binds and unbinds over small id spaces from many
// goroutines never break the one-to-one mapping: afterwards the forward and
// reverse hashes are exact inverses.
func TestConcurrentBindingsStayBijective(t *testing.T) {
	s, rdb, prefix := newStore(t)
	ctx := context.Background()
	b := s.Binder("erp", "invoice")
	const workers, ops, ids = 16, 150, 12
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 7))
			for i := 0; i < ops; i++ {
				e := fmt.Sprintf("E%d", r.IntN(ids))
				if r.IntN(4) == 0 {
					if err := b.Unbind(ctx, e); err != nil {
						t.Error(err)
						return
					}
					continue
				}
				err := b.Bind(ctx, e, fmt.Sprintf("L%d", r.IntN(ids)), time.Now())
				if err != nil && !errors.Is(err, bindings.ErrConflict) {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	fwd := assertConsistent(t, rdb, prefix, "erp", "invoice", -1)
	t.Logf("%d bindings after %d random operations", len(fwd), workers*ops)
}
