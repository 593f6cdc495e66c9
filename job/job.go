// Package job holds the vocabulary shared by the producer side
// ([github.com/connector-go/connector/dispatcher]) and the consumer side
// ([github.com/connector-go/connector/worker]) of the jobs queue: typed job
// arguments, enqueue options, job states and records, and the outcomes a
// handler reports.
//
// A job is a typed function of a connector. Its arguments are a Go struct that
// names the job:
//
//	type ImportProduct struct {
//		BackendID  string `msgpack:"backend_id"`
//		ExternalID string `msgpack:"external_id"`
//	}
//
//	func (ImportProduct) JobName() string { return "shop.import_product" }
//
// The arguments travel as msgpack inside the envelope described in
// docs/protocol.md, so producers in other languages can enqueue the same job
// with a plain NATS client.
package job

import (
	"context"
	"time"
)

// Args is implemented by the typed arguments of a job. JobName is the stable
// name workers dispatch on; it must be unique within a deployment.
type Args interface {
	JobName() string
}

// Meta is everything about a running job except its typed arguments.
type Meta struct {
	// ID is the job's unique id (26-character, time-sortable, subject-safe).
	ID string
	// Name is the job name as enqueued (possibly an alias of the handler's name).
	Name string
	// Attempt is the number of this run, starting at 1.
	Attempt int
	// MaxRetries is the maximum number of attempts; 0 retries forever.
	MaxRetries int
	// Channel is the channel the job was enqueued on (e.g. "root.magento").
	Channel string
	// Priority: lower runs first.
	Priority int
	// Description is a human description of the job.
	Description string
	// IdentityKey is the deduplication key, if any.
	IdentityKey string
	// EnqueuedAt is when the job was first enqueued.
	EnqueuedAt time.Time
	// Timeout bounds one run of the job (0: no limit).
	Timeout time.Duration
	// RetryPattern is the job's retry pattern, or the worker's
	// (worker.WithRetryPattern) when the job gives none.
	RetryPattern RetryPattern
}

// Job is a job being run, with its decoded, typed arguments.
type Job[T Args] struct {
	Meta
	Args T
}

// Enqueuer enqueues jobs. [github.com/connector-go/connector/dispatcher.Dispatcher]
// implements it; so do the test helpers that capture or run jobs inline.
// Enqueue returns the job's id; with an identity key that matches a pending
// job, the existing job's id.
type Enqueuer interface {
	Enqueue(ctx context.Context, args Args, opts ...Option) (id string, err error)
}
