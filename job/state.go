package job

import "time"

// State is the lifecycle state of a job. The names follow the seed's job
// queue (pending, enqueued, started, done, failed, cancelled); "waiting" and
// "dead" are the two this runtime adds.
//
//	pending   -> enqueued   a job of a graph waits for its parents, then is
//	                        queued in the jobs stream, ready to run
//	waiting                 the job waits for its ETA or its retry delay
//	                        (it holds no channel capacity meanwhile)
//	enqueued  -> started    a worker took it
//	started   -> done       the handler succeeded (or had nothing to do)
//	started   -> waiting    the handler failed with a retryable error
//	started   -> dead       a permanent error, or retries exhausted: the job
//	                        is in the dead-letter stream with its error
//	dead      -> enqueued   an operator requeued it
//	*         -> cancelled  cancelled before it started
//
// "failed" is kept as an alias users of the seed look for: the runtime writes
// "dead" for jobs that failed for good.
type State string

// The job states.
const (
	StatePending   State = "pending"
	StateEnqueued  State = "enqueued"
	StateWaiting   State = "waiting"
	StateStarted   State = "started"
	StateDone      State = "done"
	StateFailed    State = "failed"
	StateDead      State = "dead"
	StateCancelled State = "cancelled"
)

// Final reports whether no further transition happens without an operator.
func (s State) Final() bool {
	switch s {
	case StateDone, StateDead, StateFailed, StateCancelled:
		return true
	}
	return false
}

// Record is what the runtime remembers about a job, queryable by id for a
// configurable retention.
type Record struct {
	ID          string    `json:"id"`
	Name        string    `json:"name"`
	Channel     string    `json:"channel,omitempty"`
	Priority    int       `json:"priority"`
	State       State     `json:"state"`
	Attempts    int       `json:"attempts"`
	MaxRetries  int       `json:"max_retries"`
	Description string    `json:"description,omitempty"`
	Result      string    `json:"result,omitempty"`
	Error       string    `json:"error,omitempty"`
	ErrorType   string    `json:"error_type,omitempty"`
	Stack       string    `json:"stack,omitempty"`
	Worker      string    `json:"worker,omitempty"`
	EnqueuedAt  time.Time `json:"enqueued_at,omitzero"`
	ETA         time.Time `json:"eta,omitzero"`
	StartedAt   time.Time `json:"started_at,omitzero"`
	EndedAt     time.Time `json:"ended_at,omitzero"`
	UpdatedAt   time.Time `json:"updated_at,omitzero"`
	// Seq is the jobs-stream sequence of the message that enqueued it (while
	// it waits for its ETA or a retry: of its schedule).
	Seq uint64 `json:"seq,omitempty"`
	// Graph is the job graph the job belongs to, if any.
	Graph string `json:"graph,omitempty"`
	// IdentityKey is the job's identity key, if any.
	IdentityKey string `json:"identity_key,omitempty"`
}
