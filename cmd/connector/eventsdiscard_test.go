package main

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/connector-go/connector/events"
)

// Jobs and events share the dead-letter stream, so the SEQ of `jobs dead`
// is a valid number for `events discard`. Discarding a job's letter is
// refused and leaves it, and the refusal speaks of a discard, not of a
// replay the operator never asked for ("dead letter cannot be replayed"),
// and says where a job's letter goes instead.
func TestEventsDiscardOfAJobsDeadLetter(t *testing.T) {
	url, prefix, d, ids := twoDeadJobs(t)
	letters, err := d.DeadLetters(context.Background(), 0)
	if err != nil || len(letters) != len(ids) {
		t.Fatalf("dead letters %+v, %v", letters, err)
	}
	seq := strconv.FormatUint(letters[0].Seq, 10)
	env, _ := operatorCLI(t, url, prefix)

	stdout, _, err := runCmd(t, env, "events", "discard", seq)
	if err == nil {
		t.Fatalf("connector events discard %s (a job's letter): no error; stdout %q", seq, stdout)
	}
	if !errors.Is(err, events.ErrNotReplayable) {
		t.Errorf("err = %v, want it to wrap events.ErrNotReplayable", err)
	}
	msg := err.Error()
	if strings.Contains(msg, "replay") {
		t.Errorf("a discard's refusal speaks of a replay: %q", msg)
	}
	for _, want := range []string{"discard " + seq, "not an event's", "nothing discarded", "connector jobs"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not say %q", msg, want)
		}
	}
	if strings.Contains(stdout, "discarded") {
		t.Errorf("stdout %q says discarded", stdout)
	}
	after, err := d.DeadLetters(context.Background(), 0)
	if err != nil || len(after) != len(ids) {
		t.Fatalf("after the refused discard: dead letters %+v, %v; want the %d left", after, err, len(ids))
	}
}
