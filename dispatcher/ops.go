package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/connector-go/connector/internal/records"
	"github.com/connector-go/connector/internal/telemetry"
	"github.com/connector-go/connector/internal/wire"
	"github.com/connector-go/connector/job"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

func zapKey(k string) zap.Field  { return zap.String("identity_key", k) }
func zapErr(err error) zap.Field { return telemetry.ErrField(err) }

// Job returns the record of a job.
func (d *Dispatcher) Job(ctx context.Context, id string) (job.Record, error) {
	if d.rec == nil {
		return job.Record{}, ErrNoRedis
	}
	if err := d.rec.Flush(ctx); err != nil {
		return job.Record{}, err
	}
	return d.rec.Get(ctx, id)
}

// DeadLetter is one entry of the dead-letter stream.
type DeadLetter struct {
	// Seq is the entry's sequence in the dead-letter stream.
	Seq     uint64
	Subject string
	wire.DeadLetter
}

// DeadLetters lists up to limit dead letters (0: all), oldest first.
func (d *Dispatcher) DeadLetters(ctx context.Context, limit int) ([]DeadLetter, error) {
	s, err := d.js.Stream(ctx, d.names.DeadStream())
	if err != nil {
		return nil, fmt.Errorf("dispatcher: dead letters: %w", err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("dispatcher: dead letters: %w", err)
	}
	if info.State.Msgs == 0 {
		return nil, nil
	}
	// Only job letters: event listeners keep theirs under <prefix>.dead.events.
	c, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{d.names.DeadJobsWildcard(), d.names.Prefix + ".dead.malformed.>"}})
	if err != nil {
		return nil, fmt.Errorf("dispatcher: dead letters: %w", err)
	}
	var out []DeadLetter
	for {
		if limit > 0 && len(out) >= limit {
			return out, nil
		}
		m, err := c.Next(jetstream.FetchMaxWait(2 * time.Second))
		if errors.Is(err, nats.ErrTimeout) || errors.Is(err, jetstream.ErrNoMessages) {
			return out, nil
		}
		if err != nil {
			return out, fmt.Errorf("dispatcher: dead letters: %w", err)
		}
		meta, _ := m.Metadata()
		dl := DeadLetter{Subject: m.Subject()}
		if meta != nil {
			dl.Seq = meta.Sequence.Stream
		}
		if err := wire.Unmarshal(m.Data(), &dl.DeadLetter); err != nil {
			dl.Reason, dl.Error = "unreadable", err.Error()
		}
		out = append(out, dl)
		if meta != nil && meta.NumPending == 0 {
			return out, nil
		}
	}
}

// Requeue puts a dead job back in the jobs stream with its attempts reset.
func (d *Dispatcher) Requeue(ctx context.Context, id string) error {
	s, err := d.js.Stream(ctx, d.names.DeadStream())
	if err != nil {
		return fmt.Errorf("dispatcher: requeue: %w", err)
	}
	raw, err := s.GetLastMsgForSubject(ctx, d.names.DeadJobSubject(id))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return fmt.Errorf("%w: no dead letter for job %s", job.ErrNotFound, id)
	}
	if err != nil {
		return fmt.Errorf("dispatcher: requeue %s: %w", id, err)
	}
	return d.requeue(ctx, s, raw.Sequence, raw.Data)
}

// RequeueSeq requeues the dead letter at a dead-letter stream sequence.
func (d *Dispatcher) RequeueSeq(ctx context.Context, seq uint64) error {
	s, err := d.js.Stream(ctx, d.names.DeadStream())
	if err != nil {
		return fmt.Errorf("dispatcher: requeue: %w", err)
	}
	raw, err := s.GetMsg(ctx, seq)
	if err != nil {
		return fmt.Errorf("dispatcher: requeue seq %d: %w", seq, err)
	}
	return d.requeue(ctx, s, seq, raw.Data)
}

func (d *Dispatcher) requeue(ctx context.Context, s jetstream.Stream, seq uint64, data []byte) error {
	var dl wire.DeadLetter
	if err := wire.Unmarshal(data, &dl); err != nil {
		return fmt.Errorf("dispatcher: requeue seq %d: unreadable dead letter: %w", seq, err)
	}
	env, err := wire.DecodeEnvelope(dl.Data, 0)
	if err != nil {
		return fmt.Errorf("dispatcher: requeue seq %d: the dead message is not a valid envelope (reason %s), fix the producer: %w", seq, dl.Reason, err)
	}
	env.Attempt = 0
	body, err := wire.EncodeEnvelope(env)
	if err != nil {
		return err
	}
	channel := env.Channel
	if channel == "" {
		channel = job.DefaultChannel
	}
	msg := nats.NewMsg(d.subject(channel, env.Priority))
	for k, v := range dl.Headers {
		if k == wire.HeaderMsgID || len(k) > 5 && k[:5] == "Nats-" {
			continue
		}
		msg.Header[k] = v
	}
	msg.Header[wire.HeaderMsgID] = []string{env.ID + ".r" + strconv.FormatUint(seq, 10)}
	msg.Data = body
	if d.rdb != nil {
		// Requeueing is the operator's word over an earlier cancel.
		if err := d.rdb.ZRem(ctx, d.names.CancelsKey(), env.ID).Err(); err != nil {
			return fmt.Errorf("dispatcher: requeue %s: %w", env.ID, err)
		}
	}
	// The record says "enqueued" before the job is back, so that a worker
	// that runs it at once has the last word on it.
	if d.rec != nil {
		err := d.rec.Set(ctx, records.Update{ID: env.ID, State: job.StateEnqueued, Name: env.Name,
			Channel: channel, ClearError: true, ResetAttempts: true})
		if err != nil {
			d.log.Warn("requeue: record not updated", zap.String("job_id", env.ID), telemetry.ErrField(err))
		}
	}
	ack, err := d.js.PublishMsg(ctx, msg)
	if err != nil {
		if d.rec != nil {
			_ = d.rec.Set(context.WithoutCancel(ctx), records.Update{ID: env.ID, State: job.StateDead,
				Error: dl.Error, ErrorType: dl.ErrorType, Stack: dl.Stack, Attempts: dl.Attempts})
		}
		return fmt.Errorf("dispatcher: requeue %s: %w", env.ID, err)
	}
	if d.rec != nil {
		// The new message's sequence, on the producer's side (Cancel uses it).
		d.rec.Record(&records.Update{ID: env.ID, Queued: job.StateEnqueued, Name: env.Name, Channel: channel,
			Priority: env.Priority, MaxRetries: env.MaxRetries, Description: env.Description, Identity: env.Identity,
			Graph: env.Graph, EnqueuedAt: wire.FromMillis(env.EnqueuedAt), Seq: ack.Sequence})
	}
	// The job is safely back; now remove its letter. A failure here leaves
	// a letter whose re-requeue is deduplicated within the window.
	if err := s.DeleteMsg(ctx, seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return fmt.Errorf("dispatcher: requeued %s but could not remove its dead letter: %w", env.ID, err)
	}
	return nil
}

// RequeueAll requeues every dead job that is a valid envelope; it returns
// how many were requeued and the first error met (it keeps going).
func (d *Dispatcher) RequeueAll(ctx context.Context) (int, error) {
	letters, err := d.DeadLetters(ctx, 0)
	if err != nil {
		return 0, err
	}
	n := 0
	var first error
	for _, l := range letters {
		if l.Reason == wire.ReasonMalformed {
			continue
		}
		if err := d.RequeueSeq(ctx, l.Seq); err != nil {
			if first == nil {
				first = err
			}
			continue
		}
		n++
	}
	return n, first
}
