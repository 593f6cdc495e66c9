package dispatcher_test

import (
	"context"
	"errors"
	"testing"

	"github.com/connector-go/connector/dispatcher"
	"github.com/connector-go/connector/job"
)

// A letter RequeueAll listed that someone else removed before RequeueAll
// reached it (another operator's "jobs requeue ID", a Cancel of the dead
// job, a second "jobs requeue --all") is no failure: its job is back, or
// cancelled, and nothing is left to requeue. RequeueAll answered
// "requeue seq N: message not found" (the CLI exits 1) for it.
func TestRequeueAllSkipsALetterRemovedMeanwhile(t *testing.T) {
	e := newGenv(t)
	ctx := context.Background()
	first, second := e.deadLetter(1), e.deadLetter(2)
	// The filter runs on each letter in turn, before it is requeued: on
	// the first, a colleague requeues the second job.
	colleague := func(l dispatcher.DeadLetter) bool {
		if l.JobID == first {
			if err := e.d.Requeue(ctx, second); err != nil {
				t.Errorf("colleague's Requeue(%s): %v", second, err)
			}
		}
		return true
	}
	n, err := e.d.RequeueAll(ctx, colleague)
	if err != nil {
		t.Fatalf("RequeueAll with a letter requeued meanwhile: %v", err)
	}
	if n != 1 || e.jobsQueued() != 2 {
		t.Fatalf("requeued %d (want 1, the other by the colleague), %d queued (want 2)", n, e.jobsQueued())
	}
}

// RequeueSeq of a sequence that holds no letter (requeued, cancelled, or
// never there) says so with job.ErrNotFound, as Requeue does.
func TestRequeueSeqOfNoLetterIsNotFound(t *testing.T) {
	e := newGenv(t)
	ctx := context.Background()
	e.deadLetter(1)
	l, err := e.d.DeadLetters(ctx, 0)
	if err != nil || len(l) != 1 {
		t.Fatalf("letters: %v %+v", err, l)
	}
	if err := e.d.RequeueSeq(ctx, l[0].Seq); err != nil {
		t.Fatal(err)
	}
	if err := e.d.RequeueSeq(ctx, l[0].Seq); !errors.Is(err, job.ErrNotFound) {
		t.Fatalf("RequeueSeq of a letter requeued already: %v, want job.ErrNotFound", err)
	}
}
