// Package outcome runs a job's handler and judges what the run comes to:
// done, nothing to do, a retry (after which delay, counted or not) or a
// dead letter (for which reason). The worker acts on the verdict;
// workertest reports it. One judge, so that a test sees what production
// does.
package outcome

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"time"

	"github.com/connector-go/connector/internal/wire"
	"github.com/connector-go/connector/job"
)

// Kind is what a run comes to.
type Kind int

const (
	Done        Kind = iota // the handler returned no error
	NothingToDo             // job.NothingToDo: done, with its message
	Retry                   // a retryable error with attempts left
	Dead                    // any other error, or a retryable one on the last attempt
)

// Verdict is the judgement of one run.
type Verdict struct {
	Kind Kind
	// Result is the result message (Done, NothingToDo).
	Result string
	// Delay is the wait before the next attempt (Retry): the error's own,
	// else the retry pattern's for this attempt.
	Delay time.Duration
	// Counted says whether this attempt counts against MaxRetries (Retry).
	Counted bool
	// Reason is the dead letter's reason (Dead), one of wire's Reason*.
	Reason string
	// Stack is the panic stack, or the error's %+v (Dead).
	Stack string
	// Cause is the error the record and the dead letter carry (Retry,
	// Dead): on the last attempt, wrapped with job.ErrMaxRetries.
	Cause error
}

// PanicError is a handler's panic turned into an error.
type PanicError struct {
	Value any
	Stack string
}

func (e *PanicError) Error() string { return fmt.Sprintf("%v: %v", job.ErrPanic, e.Value) }
func (e *PanicError) Unwrap() error { return job.ErrPanic }

// Goexited is the error of a run whose handler called runtime.Goexit
// (t.FailNow in a test's handler does): a *PanicError, so the job is
// dead at once, with the stack of the call.
func Goexited() error {
	return &PanicError{Value: "the handler called runtime.Goexit", Stack: string(debug.Stack())}
}

// Run runs h(ctx, m) under timeout (0: none), turning a panic into a
// *PanicError. A run that fails once its timeout has passed (and ctx has
// not ended: that is a shutdown) fails with a retryable job.ErrTimeout.
func Run[M any](ctx context.Context, timeout time.Duration, h func(context.Context, M) (string, error), m M) (string, error) {
	if timeout <= 0 {
		result, err := call(ctx, h, m)
		return result, safe(err)
	}
	runCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	result, err := call(runCtx, h, m)
	err = safe(err)
	if err != nil && errors.Is(runCtx.Err(), context.DeadlineExceeded) && ctx.Err() == nil {
		err = job.Retry(fmt.Errorf("%w after %s: %w", job.ErrTimeout, timeout, err))
	}
	return result, err
}

// safe returns err, or, when its Error method panics (a nil pointer of
// an error type returned as a non-nil error, Go's typed nil), an error
// that says so: the worker reads the error (records, letters, logs) out
// of reach of the handler's recover, where the panic would kill it.
func safe(err error) (out error) {
	if err == nil {
		return nil
	}
	defer func() {
		if p := recover(); p != nil {
			out = fmt.Errorf("handler returned a %T error whose Error method panics: %v", err, p)
		}
	}()
	_ = err.Error()
	return err
}

func call[M any](ctx context.Context, h func(context.Context, M) (string, error), m M) (result string, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = &PanicError{Value: p, Stack: string(debug.Stack())}
		}
	}()
	return h(ctx, m)
}

// Judge tells what a run of the job meta (its attempt, max retries and
// retry pattern) that returned result and err comes to.
func Judge(meta job.Meta, result string, err error) Verdict {
	var nothing *job.NothingToDoError
	switch {
	case err == nil:
		return Verdict{Kind: Done, Result: result}
	case errors.As(err, &nothing):
		return Verdict{Kind: NothingToDo, Result: nothing.Msg}
	}
	if r, ok := job.AsRetryable(err); ok {
		if r.NoCount || meta.MaxRetries <= 0 || meta.Attempt < meta.MaxRetries {
			delay := r.Delay
			if delay <= 0 {
				delay = meta.RetryPattern.Delay(meta.Attempt)
			}
			return Verdict{Kind: Retry, Delay: delay, Counted: !r.NoCount, Cause: err}
		}
		reason := wire.ReasonMaxRetries
		if errors.Is(err, job.ErrTimeout) {
			reason = wire.ReasonTimeout
		}
		return Verdict{Kind: Dead, Reason: reason, Cause: fmt.Errorf("%w (%d): %w", job.ErrMaxRetries, meta.MaxRetries, err)}
	}
	v := Verdict{Kind: Dead, Reason: wire.ReasonError, Cause: err}
	var pe *PanicError
	switch {
	case errors.As(err, &pe):
		v.Reason, v.Stack = wire.ReasonPanic, pe.Stack
	case errors.Is(err, job.ErrBadArgs):
		v.Reason = wire.ReasonBadArgs
	default:
		v.Stack = fmt.Sprintf("%+v", err)
	}
	return v
}
