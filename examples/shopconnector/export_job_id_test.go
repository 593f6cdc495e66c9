package shopconnector

import (
	"context"
	"strings"
	"testing"

	"github.com/connector-go/connector/events"
	"github.com/connector-go/connector/units"
	"github.com/connector-go/connector/units/unitstest"
)

// The export listener derives its job id from the backend id and the
// event id, so that an event delivered twice enqueues one job. A job id is
// 1-128 letters, digits, '_' or '-': a long backend id (or event id) must
// still give a valid id, the same for the same event, and different ids for
// different events and backends. Else the enqueue is refused and the
// change never reaches the shop.
func TestExportJobIDOfLongBackendIDs(t *testing.T) {
	ctx := context.Background()
	trap := unitstest.NewTrap()
	long := strings.Repeat("shop-eu-west-", 10) // 130 characters
	enqueue := func(backendID, evID string) string {
		t.Helper()
		h := exportHandler(Config{Jobs: trap}, backendID, "product")
		n := len(trap.Jobs())
		ev := events.Event{ID: evID, Model: "product", Name: events.Write, RecordID: "7", Fields: []string{"name"}}
		if err := h(ctx, ev); err != nil {
			t.Fatalf("backend %d chars, event %d chars: %v", len(backendID), len(evID), err)
		}
		jobs := trap.Jobs()
		if len(jobs) == n {
			return jobs[len(jobs)-1].Options.ID // deduplicated: the last one is not necessarily it
		}
		j := jobs[len(jobs)-1]
		if j.Options.ID == "" {
			t.Fatalf("backend %d chars, event %d chars: no job id: a redelivered event would enqueue a second job",
				len(backendID), len(evID))
		}
		if a, ok := j.Args.(units.ExportRecord); !ok || a.BackendID != backendID {
			t.Fatalf("job args %#v, want an ExportRecord for %s", j.Args, backendID)
		}
		return j.Options.ID
	}
	const ev1, ev2 = "01JABCDEFGHJKMNPQRSTVWXYZ0", "01JABCDEFGHJKMNPQRSTVWXYZ1"
	short := enqueue("shop-eu", ev1)
	if short != "ev-shop-eu-"+ev1 {
		t.Errorf("short ids: job id %q, want it unchanged", short)
	}
	a := enqueue(long, ev1)
	if n := len(trap.Jobs()); n != 2 {
		t.Fatalf("%d jobs, want 2", n)
	}
	if again := enqueue(long, ev1); again != a || len(trap.Jobs()) != 2 {
		t.Errorf("the same event again: job id %q (want %q), %d jobs (want 2)", again, a, len(trap.Jobs()))
	}
	ids := map[string]string{a: "long ev1"}
	for name, c := range map[string][2]string{
		"long ev2":          {long, ev2},
		"longer ev1":        {long + "x", ev1},
		"long event id":     {"shop-eu", strings.Repeat("e", 100)},
		"longer event id":   {"shop-eu", strings.Repeat("e", 101)},
		"long both":         {long, strings.Repeat("e", 100)},
		"long other prefix": {strings.Repeat("shop-eu-west-", 9) + "shop-eu-east-", ev1},
	} {
		id := enqueue(c[0], c[1])
		if other, dup := ids[id]; dup {
			t.Errorf("%s and %s share the job id %q", name, other, id)
		}
		ids[id] = name
	}
	if n := len(trap.Jobs()); n != 8 {
		t.Errorf("%d jobs, want 8 (one per event and backend)", n)
	}
}
