package main

import (
	"context"
	"strings"
	"testing"

	"github.com/connector-go/connector/job"
)

// A flag that narrows a selection is refused by the commands it does not
// narrow, rather than ignored while the command acts on more than asked:
// `jobs requeue --all --limit 1` requeued every dead job, `jobs cancel ID
// --name J` cancelled the job whatever its name (as `jobs requeue ID
// --name J` already refuses), `events replay --all --limit 1` replayed
// every dead event. Each is a usage error that acts on nothing.
func TestSubcommandFlagsThatDoNotApplyAreRefused(t *testing.T) {
	url, prefix, d, ids := twoDeadJobs(t)
	ctx := context.Background()
	usageErrorsActOnNothing(t, url, prefix, d, [][]string{
		{"jobs", "requeue", "--all", "--limit", "1"},
		{"jobs", "requeue", ids[0], "--limit", "1"},
		{"jobs", "cancel", ids[0], "--name", "test.other"},
		{"jobs", "cancel", ids[0], "--all"},
		{"jobs", "show", ids[0], "--all"},
		{"events", "replay", "--all", "--limit", "1"},
		{"events", "discard", "1", "--limit", "1"},
		{"events", "stats", "--all"},
	})
	rec, err := d.Job(ctx, ids[0])
	if err != nil || rec.State != job.StateDead {
		t.Fatalf("job %s: %+v, %v; want still dead", ids[0], rec, err)
	}
	// The flags where they apply still work.
	_, cli := operatorCLI(t, url, prefix)
	// Either job may have died first: --limit 1 lists one of them.
	if out := cli("jobs", "dead", "--limit", "1", "--name", "test.fragile", "--json"); strings.Contains(out, ids[0]) == strings.Contains(out, ids[1]) {
		t.Errorf("jobs dead --limit 1 --name --json: %s; want one of %v", out, ids)
	}
}
