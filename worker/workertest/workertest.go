// Package workertest runs job handlers in tests, without NATS or Redis, the
// way a worker runs them: the arguments are encoded to the wire format and
// decoded into the handler's type, the registry's middleware wraps the
// handler, a panic is caught, the job's timeout applies, and the outcome
// is judged by the worker's own rules: done, nothing to do, a retry (after
// which delay), or a dead letter (for which reason).
//
//	res := workertest.Work(ctx, t, reg, ImportProduct{ExternalID: "P-1"}, job.WithMaxRetries(3))
//	if res.Kind != workertest.Done {
//		t.Fatalf("import: %v", res)
//	}
//
// For the whole runtime (streams, channels, retries for real), run a worker
// on an embedded NATS server instead (see the worker package's example).
package workertest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/connector-go/connector/internal/envelope"
	"github.com/connector-go/connector/internal/wire"
	"github.com/connector-go/connector/job"
	"github.com/connector-go/connector/worker"
	"github.com/connector-go/connector/worker/internal/outcome"
	"github.com/nats-io/nats.go"
)

// Kind is what a run comes to.
type Kind string

const (
	Done        Kind = "done"          // the handler returned no error: acknowledged, its result kept
	NothingToDo Kind = "nothing_to_do" // job.NothingToDo: done, with its message
	Retry       Kind = "retry"         // a retryable error with attempts left: tried again after Delay
	Dead        Kind = "dead"          // any other error, or a retryable one on the last attempt
)

// Result is what one run came to.
type Result struct {
	Kind Kind
	// Output is the handler's result (Done) or the NothingToDo message.
	Output string
	// Err is the error the job's record and dead letter would carry
	// (Retry, Dead); errors.Is finds the handler's error in it.
	Err error
	// Delay is the wait before the next attempt (Retry).
	Delay time.Duration
	// Counted says whether the attempt counts against the job's max
	// retries (Retry; false for job.RetryNoCount).
	Counted bool
	// Reason is the dead letter's reason (Dead): "error", "max_retries",
	// "timeout", "panic" or "bad_args".
	Reason string
	// Meta is the job as the handler saw it.
	Meta job.Meta
}

func (r Result) String() string {
	switch r.Kind {
	case Retry:
		return fmt.Sprintf("retry in %s (counted: %v): %v", r.Delay, r.Counted, r.Err)
	case Dead:
		return fmt.Sprintf("dead (%s): %v", r.Reason, r.Err)
	}
	return fmt.Sprintf("%s: %q", r.Kind, r.Output)
}

// Work runs attempt 1 of the job args, enqueued with opts, through reg
// (the handler registered for its name, with reg's middleware). The
// handler sees the job as a worker shows it: its fields travel in the
// envelope a dispatcher makes (an identity key computed by
// job.WithIdentityExact, the timeout and retry pattern in whole
// milliseconds). It fails the test if no handler is registered, the
// arguments do not encode, or a dispatcher would refuse the job (an
// invalid id or channel, negative max retries or retry delays, a header
// of the dispatcher's own).
func Work(ctx context.Context, tb testing.TB, reg *worker.Registry, args job.Args, opts ...job.Option) Result {
	tb.Helper()
	return WorkAttempt(ctx, tb, reg, 1, args, opts...)
}

// WorkAttempt is Work for attempt n (1 is the first run): on the job's
// last allowed attempt a retryable error ends it in the dead-letter
// stream ("max_retries"), and the retry pattern's delay depends on n. An
// attempt past the job's max retries is dead ("max_retries") without
// running, as a worker dead-letters a job redelivered after its last
// attempt was lost.
// Without job.WithRetryPattern the pattern is job.DefaultRetryPattern, a
// worker's default (worker.WithRetryPattern does not reach here).
func WorkAttempt(ctx context.Context, tb testing.TB, reg *worker.Registry, n int, args job.Args, opts ...job.Option) Result {
	tb.Helper()
	if n < 1 {
		tb.Fatalf("workertest: attempt %d (the first is 1)", n)
	}
	name := args.JobName()
	h, ok := reg.Handler(name)
	if !ok {
		tb.Fatalf("workertest: no handler registered for job %q", name)
	}
	meta, raw := jobEnvelope(tb, name, args, opts)
	meta.Attempt = n
	if meta.MaxRetries > 0 && n > meta.MaxRetries {
		// A worker never runs it: the job comes back only when the worker
		// running its last allowed attempt died, and goes to the dead letters.
		err := fmt.Errorf("%w: attempt %d of %d was lost (worker died or lease expired)", job.ErrMaxRetries, n-1, meta.MaxRetries)
		return Result{Kind: Dead, Err: err, Reason: wire.ReasonMaxRetries, Meta: meta}
	}
	o := job.Apply(args, opts...)
	m := &worker.Message{Meta: meta, Args: raw, Delivered: 1}
	if len(o.Headers) > 0 {
		m.Header = nats.Header{}
		for k, v := range o.Headers {
			m.Header.Set(k, v)
		}
	}
	result, herr := outcome.Run(ctx, meta.Timeout, h, m)
	v := outcome.Judge(meta, result, herr)
	res := Result{Output: v.Result, Err: v.Cause, Delay: v.Delay, Counted: v.Counted, Reason: v.Reason, Meta: meta}
	switch v.Kind {
	case outcome.Done:
		res.Kind = Done
	case outcome.NothingToDo:
		res.Kind = NothingToDo
	case outcome.Retry:
		res.Kind = Retry
	default:
		res.Kind = Dead
	}
	return res
}

// jobEnvelope makes the job's envelope as a dispatcher does, checked as a
// dispatcher checks it (failing the test where a dispatcher would refuse
// the job), and reads it back as a worker does: the job's fields as its
// handler sees them (the identity key computed, the timeout and the retry
// pattern in whole milliseconds), and its encoded arguments.
func jobEnvelope(tb testing.TB, name string, args job.Args, opts []job.Option) (job.Meta, []byte) {
	tb.Helper()
	o := job.Apply(args, opts...)
	marshal := wire.Marshal
	if o.IdentityFunc != nil {
		marshal = wire.MarshalArgs // canonical, as a dispatcher hashes them
	}
	raw, err := marshal(args)
	if err != nil {
		tb.Fatalf("workertest: encode %s args: %v", name, err)
	}
	var env wire.Envelope
	if err := envelope.Fill(&env, name, raw, &o, time.Now().UnixMilli()); err != nil {
		tb.Fatalf("workertest: a dispatcher refuses job %s: %v", name, err)
	}
	data, err := envelope.Encode(&env, wire.DefaultMaxEnvelope)
	if err != nil {
		tb.Fatalf("workertest: a dispatcher refuses job %s: %v", name, err)
	}
	got, err := wire.DecodeEnvelope(data, 0)
	if err != nil {
		tb.Fatalf("workertest: a worker cannot read job %s: %v", name, err)
	}
	meta := job.Meta{
		ID: got.ID, Name: got.Name, MaxRetries: job.DefaultMaxRetries, Channel: got.Channel,
		Priority: job.DefaultPriority, Description: got.Description, IdentityKey: got.Identity,
		EnqueuedAt: wire.FromMillis(got.EnqueuedAt), Timeout: time.Duration(got.TimeoutMS) * time.Millisecond,
		RetryPattern: job.DefaultRetryPattern,
	}
	if got.MaxRetries != nil {
		meta.MaxRetries = *got.MaxRetries
	}
	if got.Priority != nil {
		meta.Priority = *got.Priority
	}
	if len(got.Retry) > 0 {
		meta.RetryPattern = make(job.RetryPattern, len(got.Retry))
		for k, v := range got.Retry {
			meta.RetryPattern[k] = time.Duration(v) * time.Millisecond
		}
	}
	return meta, got.Args
}
