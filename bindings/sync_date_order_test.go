package bindings_test

import (
	"context"
	"testing"
	"time"
)

// Stored sync dates compare as strings in the order of the dates (readers
// in other languages, and scripts, compare the strings): a date on a whole
// second must not be stored shorter than one with a fraction of a second,
// or "…:09Z" sorts after "…:09.5Z". And each reads back as it was bound.
func TestStoredSyncDatesSortAsTheDates(t *testing.T) {
	s, rdb, prefix := newStore(t)
	ctx := context.Background()
	b := s.Binder("shop", "product")
	base := time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC)
	dates := []time.Time{
		base,
		base.Add(10 * time.Nanosecond),
		base.Add(500 * time.Millisecond),
		base.Add(time.Second),
		base.Add(time.Second + time.Microsecond),
	}
	ids := []string{"E0", "E1", "E2", "E3", "E4"}
	for i, at := range dates {
		if err := b.Bind(ctx, ids[i], "L"+ids[i], at); err != nil {
			t.Fatal(err)
		}
	}
	key := "{" + prefix + ":bind:shop:product}:sync"
	var prev string
	for i, id := range ids {
		raw := rdb.HGet(ctx, key, id).Val()
		if i > 0 && !(prev < raw) {
			t.Errorf("stored %q (%s) does not sort after %q (%s)", raw, dates[i], prev, dates[i-1])
		}
		prev = raw
		got, found, err := b.SyncDate(ctx, id)
		if err != nil || !found || !got.Equal(dates[i]) {
			t.Errorf("SyncDate(%s) = %v %v %v, want %v", id, got, found, err, dates[i])
		}
	}
	// A date stored in the shorter form of earlier versions still reads.
	rdb.HSet(ctx, key, "E0", "2026-05-06T07:08:09.5Z")
	if got, found, err := b.SyncDate(ctx, "E0"); err != nil || !found || !got.Equal(base.Add(500*time.Millisecond)) {
		t.Errorf("SyncDate of the short form = %v %v %v", got, found, err)
	}
	if m, err := b.SyncDateMany(ctx, []string{"E0"}); err != nil || !m["E0"].Equal(base.Add(500*time.Millisecond)) {
		t.Errorf("SyncDateMany of the short form = %v %v", m, err)
	}
}
