package bindings

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/connector-go/connector/job"
)

// Sentinel errors, to check with errors.Is.
var (
	// ErrConflict: the external id or the local id is already bound to
	// another record. The error is a [*ConflictError] naming both sides.
	ErrConflict = errors.New("bindings: conflicting binding")
	// ErrLocked: the resource is locked by another holder. The error is also
	// a job.RetryableError with NoCount set, wrapping a [*LockedError].
	ErrLocked = errors.New("bindings: resource locked elsewhere")
	// ErrLockLost: the lock expired or was taken over; the caller is no
	// longer its holder.
	ErrLockLost = errors.New("bindings: lock lost")
	// ErrUnavailable: Redis could not be reached or answered with a
	// transient error. Such errors are also job.RetryableError.
	ErrUnavailable = errors.New("bindings: redis unavailable")
	// ErrInvalid: an argument is invalid (empty id, a lock TTL under 1 ms,
	// a sync date outside the years 0000-9999 in UTC).
	ErrInvalid = errors.New("bindings: invalid argument")
)

// ConflictError reports a Bind refused because it would break the
// one-to-one mapping. Nothing was changed.
type ConflictError struct {
	Backend string
	Model   string
	// ExternalID and LocalID are the pair that was asked for.
	ExternalID string
	LocalID    string
	// BoundLocalID is the local id ExternalID is already bound to, if any.
	BoundLocalID string
	// BoundExternalID is the external id LocalID is already bound to, if any.
	BoundExternalID string
}

func (e *ConflictError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "bindings: cannot bind %s/%s external %q to local %q:", e.Backend, e.Model, e.ExternalID, e.LocalID)
	sep := ""
	if e.BoundLocalID != "" {
		fmt.Fprintf(&b, " external %q is already bound to local %q", e.ExternalID, e.BoundLocalID)
		sep = ";"
	}
	if e.BoundExternalID != "" {
		fmt.Fprintf(&b, "%s local %q is already bound to external %q", sep, e.LocalID, e.BoundExternalID)
	}
	return b.String()
}

// Unwrap makes errors.Is(err, ErrConflict) hold.
func (e *ConflictError) Unwrap() error { return ErrConflict }

// LockedError reports a resource locked by another holder.
type LockedError struct {
	Resource string
	// Remaining is the lease the current holder has left, as Redis reported it.
	Remaining time.Duration
}

func (e *LockedError) Error() string {
	return fmt.Sprintf("bindings: resource %q is locked elsewhere (lease ends in %s)", e.Resource, e.Remaining)
}

// Unwrap makes errors.Is(err, ErrLocked) hold.
func (e *LockedError) Unwrap() error { return ErrLocked }

// transientPrefixes are Redis error replies that mean "try again later"
// (loading, failover, cluster reconfiguration, memory pressure). Each ends
// with the space that follows the error code, so "BUSY " does not match
// BUSYKEY or BUSYGROUP.
var transientPrefixes = []string{
	"LOADING ", "READONLY ", "MASTERDOWN ", "CLUSTERDOWN ", "TRYAGAIN ",
	"BUSY ", "OOM ", "NOREPLICAS ", "MOVED ", "ASK ", "ERR max number of clients",
}

// wrap turns a Redis client error into an error value for op. Other server
// replies than transient ones (WRONGTYPE, script errors) are permanent:
// they mean a misconfiguration that retrying will not fix. Otherwise, once
// ctx has ended, the error is ctx's (wrapping the client's): the caller
// gave up, even when the client, which does not watch ctx during a read,
// says "i/o timeout". Network errors and transient server replies become
// retryable and ErrUnavailable.
func wrap(ctx context.Context, op string, err error) error {
	if err == nil {
		return nil
	}
	var rerr redis.Error
	if errors.As(err, &rerr) && !transientReply(rerr.Error()) {
		return fmt.Errorf("bindings: %s: %w", op, err)
	}
	if cerr := ctx.Err(); cerr != nil {
		if !errors.Is(err, cerr) {
			err = fmt.Errorf("%w: %w", cerr, err)
		}
		return fmt.Errorf("bindings: %s: %w", op, err)
	}
	// "bindings: redis unavailable: bind: dial tcp ...: connection refused"
	return job.Retry(fmt.Errorf("%w: %s: %w", ErrUnavailable, op, err))
}

// transientReply reports whether a Redis error reply means "try again
// later". Redis 7 passes an error raised inside a script through as it is
// ("READONLY You can't write against a read only replica. script: ...");
// Redis 6 wraps it ("ERR Error running script (call to f_...): ...:
// -READONLY You can't write ..."), so both forms are recognized.
func transientReply(msg string) bool {
	for _, p := range transientPrefixes {
		if strings.HasPrefix(msg, p) {
			return true
		}
	}
	if strings.HasPrefix(msg, "ERR Error running script") {
		for _, p := range transientPrefixes {
			if strings.Contains(msg, "-"+p) {
				return true
			}
		}
	}
	return false
}
