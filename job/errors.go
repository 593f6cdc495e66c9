package job

import (
	"errors"
	"fmt"
	"time"
)

// Sentinel errors users can check with errors.Is.
var (
	// ErrNotFound: no job (or dead letter) with that id.
	ErrNotFound = errors.New("job: not found")
	// ErrInvalid: a job refused before anything is sent: an invalid id,
	// channel or header, a negative max retries or retry delay, arguments
	// that do not encode, an envelope over the size limit. (A timeout of 0
	// or less is no error: it means no bound.)
	ErrInvalid = errors.New("job: invalid job")
	// ErrBadEnvelope: a message on the jobs stream is not a valid envelope
	// (bad msgpack, unknown version, missing fields, too large).
	ErrBadEnvelope = errors.New("job: invalid envelope")
	// ErrUnknownJob: no handler is registered for the job name.
	ErrUnknownJob = errors.New("job: unknown job name")
	// ErrBadArgs: the arguments do not decode into the handler's type.
	ErrBadArgs = errors.New("job: arguments do not match the job's type")
	// ErrMaxRetries: the job failed on its last allowed attempt.
	ErrMaxRetries = errors.New("job: max retries reached")
	// ErrPanic: the handler panicked; the panic value and stack are kept.
	ErrPanic = errors.New("job: handler panicked")
	// ErrTimeout: the run exceeded the job's timeout.
	ErrTimeout = errors.New("job: timeout")
	// ErrCancelled: the job was cancelled before it started.
	ErrCancelled = errors.New("job: cancelled")
	// ErrStarted: too late to cancel, the job has started (or the worker
	// holding it did not answer in time: it still drops the job if it has
	// not started it).
	ErrStarted = errors.New("job: already started")
)

// RetryableError asks the runtime to run the job again later. Any other
// error sends the job to the dead-letter stream, as in the seed, where only a
// RetryableJobError is retried.
type RetryableError struct {
	Err error
	// Delay overrides the retry pattern when > 0.
	Delay time.Duration
	// NoCount: this attempt does not count against MaxRetries (the seed's
	// ignore_retry), e.g. because a lock was held elsewhere.
	NoCount bool
}

func (e *RetryableError) Error() string {
	if e.Err == nil {
		return "retryable error"
	}
	return e.Err.Error()
}

func (e *RetryableError) Unwrap() error { return e.Err }

// Retry marks err as retryable: the job runs again after the delay its
// retry pattern gives for the next attempt.
func Retry(err error) error { return &RetryableError{Err: err} }

// RetryAfter marks err as retryable with its own delay.
func RetryAfter(err error, d time.Duration) error { return &RetryableError{Err: err, Delay: d} }

// RetryNoCount marks err as retryable without counting the attempt (the
// seed's ignore_retry); d <= 0 uses the retry pattern's delay.
func RetryNoCount(err error, d time.Duration) error {
	return &RetryableError{Err: err, Delay: d, NoCount: true}
}

// AsRetryable returns the RetryableError in err's chain, if any.
func AsRetryable(err error) (*RetryableError, bool) {
	var r *RetryableError
	if errors.As(err, &r) {
		return r, true
	}
	return nil, false
}

// NothingToDoError ends a job as done with an explanatory message (the
// seed's NothingToDoJob), e.g. "already up to date".
type NothingToDoError struct{ Msg string }

func (e *NothingToDoError) Error() string { return "nothing to do: " + e.Msg }

// NothingToDo ends the job successfully with its message, formatted from
// format and a as by fmt.Sprintf, as its result.
func NothingToDo(format string, a ...any) error {
	return &NothingToDoError{Msg: fmt.Sprintf(format, a...)}
}
