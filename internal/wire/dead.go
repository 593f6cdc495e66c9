package wire

// Dead-letter reasons.
const (
	ReasonError      = "error"       // the handler returned a non-retryable error
	ReasonMaxRetries = "max_retries" // retryable failures exhausted max_retries
	ReasonMalformed  = "malformed"   // not a valid envelope
	ReasonUnknownJob = "unknown_job" // no handler for the name
	ReasonBadArgs    = "bad_args"    // args do not decode into the handler's type
	ReasonPanic      = "panic"       // the handler panicked
	ReasonTimeout    = "timeout"     // the run exceeded the job timeout on its last attempt
)

// DeadLetter is the msgpack body of a message in the dead-letter stream. It
// keeps the original message verbatim (Data, Headers, Subject) so that the
// job can be requeued, plus why it died.
type DeadLetter struct {
	V          int                 `msgpack:"v" json:"v"`
	Reason     string              `msgpack:"reason" json:"reason"`
	Error      string              `msgpack:"error" json:"error"`
	ErrorType  string              `msgpack:"error_type,omitempty" json:"error_type,omitempty"`
	Stack      string              `msgpack:"stack,omitempty" json:"stack,omitempty"`
	Attempts   int                 `msgpack:"attempts" json:"attempts"`
	JobID      string              `msgpack:"job_id,omitempty" json:"job_id,omitempty"`
	JobName    string              `msgpack:"job_name,omitempty" json:"job_name,omitempty"`
	Channel    string              `msgpack:"channel,omitempty" json:"channel,omitempty"`
	Subject    string              `msgpack:"subject" json:"subject"`
	StreamSeq  uint64              `msgpack:"stream_seq,omitempty" json:"stream_seq,omitempty"`
	EnqueuedAt int64               `msgpack:"enqueued_at,omitempty" json:"enqueued_at,omitempty"` // unix ms
	DiedAt     int64               `msgpack:"died_at" json:"died_at"`                             // unix ms
	Worker     string              `msgpack:"worker,omitempty" json:"worker,omitempty"`
	Headers    map[string][]string `msgpack:"headers,omitempty" json:"headers,omitempty"`
	Data       []byte              `msgpack:"data" json:"data,omitempty"`
	// BodySeq, when set, is where the original message is instead of
	// Headers and Data: the dead-letter stream's message at that sequence
	// (subject <prefix>.dead.bodies.<key>), its data and headers verbatim.
	// A worker writes a letter so for a message too large to copy into a
	// letter within the server's max_payload.
	BodySeq uint64 `msgpack:"body_seq,omitempty" json:"body_seq,omitempty"`
}
