package dispatcher_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/connector-go/connector/dispatcher"
	"github.com/connector-go/connector/internal/streams"
	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/internal/wire"
	"github.com/connector-go/connector/job"
)

// A job due further away than the records' retention (WithRecordTTL) keeps
// its record until its ETA plus the retention, as its identity key does:
// Job and Cancel find it all the while it waits, and its cancelled record
// lives as long (a dispatcher-made id, whose record is in a log shared
// with other jobs, and a caller-chosen one, with keys of its own).
func TestRecordOfAJobDueAfterTheRetention(t *testing.T) {
	_, _, js := testenv.JetStream(t)
	rdb, prefix := testenv.Redis(t)
	names := wire.MustNames(prefix)
	ctx := context.Background()
	if err := streams.Ensure(ctx, js, streams.Config{Names: names}); err != nil {
		t.Fatal(err)
	}
	const ttl = time.Hour
	d, err := dispatcher.New(js, dispatcher.WithPrefix(prefix), dispatcher.WithRedis(rdb), dispatcher.WithRecordTTL(ttl))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close(ctx)
	eta := time.Now().Add(30 * 24 * time.Hour)
	least := time.Until(eta) + ttl - time.Minute

	made, err := d.Enqueue(ctx, writeFields(), job.WithETA(eta))
	if err != nil {
		t.Fatal(err)
	}
	chosen, err := d.Enqueue(ctx, writeFields(), job.WithETA(eta), job.WithID("reminder-order-42"))
	if err != nil {
		t.Fatal(err)
	}
	// A job due now, enqueued after them (its record may share a log).
	if _, err := d.Enqueue(ctx, writeFields()); err != nil {
		t.Fatal(err)
	}
	expiries := func(when string) {
		t.Helper()
		keys, err := rdb.Keys(ctx, prefix+":*").Result()
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, k := range keys {
			if !strings.Contains(k, ":job:"+chosen) && !strings.Contains(k, ":jlog:") {
				continue
			}
			// every log here holds a far job (all made this minute) or none
			if strings.Contains(k, ":jlog:") && !strings.Contains(rdb.Get(ctx, k).Val(), made) {
				continue
			}
			n++
			if got := rdb.PTTL(ctx, k).Val(); got < least {
				t.Errorf("%s: %s expires in %s; want at least %s (ETA + retention)", when, k, got, least)
			}
		}
		if n == 0 {
			t.Fatalf("%s: no record keys among %v", when, keys)
		}
	}
	for _, id := range []string{made, chosen} {
		if rec, err := d.Job(ctx, id); err != nil || rec.State != job.StateWaiting {
			t.Fatalf("%s: %+v, %v; want waiting", id, rec, err)
		}
	}
	expiries("waiting")
	for _, id := range []string{made, chosen} {
		if err := d.Cancel(ctx, id); err != nil {
			t.Fatalf("cancel %s: %v", id, err)
		}
	}
	expiries("cancelled")
	for _, id := range []string{made, chosen} {
		if rec, err := d.Job(ctx, id); err != nil || rec.State != job.StateCancelled {
			t.Fatalf("%s: %+v, %v; want cancelled", id, rec, err)
		}
	}
}
