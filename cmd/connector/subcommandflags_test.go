package main

import (
	"context"
	"slices"
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
	seqs := func() []uint64 {
		t.Helper()
		l, err := d.DeadLetters(ctx, 0)
		if err != nil {
			t.Fatal(err)
		}
		var out []uint64
		for _, x := range l {
			out = append(out, x.Seq)
		}
		return out
	}
	before := seqs()
	env, _ := operatorCLI(t, url, prefix)
	for _, args := range [][]string{
		{"jobs", "requeue", "--all", "--limit", "1"},
		{"jobs", "requeue", ids[0], "--limit", "1"},
		{"jobs", "cancel", ids[0], "--name", "test.other"},
		{"jobs", "cancel", ids[0], "--all"},
		{"jobs", "show", ids[0], "--all"},
		{"events", "replay", "--all", "--limit", "1"},
		{"events", "discard", "1", "--limit", "1"},
		{"events", "stats", "--all"},
	} {
		stdout, stderr, err := runCmd(t, env, args...)
		if err == nil || !strings.Contains(err.Error(), "usage") {
			t.Errorf("connector %s: %v, want a usage error\n%s%s", strings.Join(args, " "), err, stdout, stderr)
		}
		if after := seqs(); !slices.Equal(after, before) {
			t.Fatalf("connector %s: dead letters %v, were %v (acted on)", strings.Join(args, " "), after, before)
		}
	}
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
