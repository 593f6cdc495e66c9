// Package envelope fills a job's wire envelope from its options, and
// checks them, as a dispatcher does before it enqueues the job. The
// dispatcher and the testing kits (workertest, unitstest) share it, so
// that a test refuses what a dispatcher refuses.
package envelope

import (
	"fmt"

	"github.com/connector-go/connector/internal/channels"
	"github.com/connector-go/connector/internal/wire"
	"github.com/connector-go/connector/job"
)

// Fill sets env to the envelope of job name with encoded arguments raw
// (nil: encoded later into the envelope) and options o, enqueued at
// enqueuedAt (unix ms): a new id when o has none, the default channel when
// o names none, the timeout and retry pattern in milliseconds, and the
// identity key given or computed from raw. Its ETA is the caller's. It
// refuses an invalid channel and the dispatcher's own headers.
func Fill(env *wire.Envelope, name string, raw []byte, o *job.Options, enqueuedAt int64) error {
	*env = wire.Envelope{
		ID: o.ID, Name: name, Args: raw, Channel: o.Channel, MaxRetries: o.MaxRetries,
		Priority: o.Priority, Description: o.Description, EnqueuedAt: enqueuedAt,
		TimeoutMS: wire.TimeoutMillis(o.Timeout), Identity: o.IdentityKey,
	}
	if env.ID == "" {
		env.ID = wire.NewID()
	}
	if env.Channel == "" {
		env.Channel = job.DefaultChannel
	}
	if err := channels.Valid(env.Channel); err != nil {
		return fmt.Errorf("%w: %w", job.ErrInvalid, err)
	}
	if err := wire.CheckHeaders(o.Headers); err != nil {
		return fmt.Errorf("%w: %s: %w", job.ErrInvalid, name, err)
	}
	if len(o.RetryPattern) > 0 {
		env.Retry = make(map[int]int64, len(o.RetryPattern))
		for k, v := range o.RetryPattern {
			env.Retry[k] = v.Milliseconds()
		}
	}
	if env.Identity == "" && o.IdentityFunc != nil {
		env.Identity = o.IdentityFunc(name, raw)
	}
	return nil
}

// CheckSize refuses an encoded envelope of job name over max bytes.
func CheckSize(name string, data []byte, max int) error {
	if len(data) > max {
		return fmt.Errorf("%w: job %s is %d bytes, over the %d-byte limit: %w", job.ErrInvalid, name, len(data), max, wire.ErrInvalid)
	}
	return nil
}

// Encode encodes env as a dispatcher sends it and checks its size (the
// testing kits' way to refuse what a dispatcher refuses); errors are
// job.ErrInvalid.
func Encode(env *wire.Envelope, max int) ([]byte, error) {
	data, err := wire.EncodeEnvelope(env)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", job.ErrInvalid, env.Name, err)
	}
	return data, CheckSize(env.Name, data, max)
}
