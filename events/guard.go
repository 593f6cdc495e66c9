package events

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/connector-go/connector/internal/telemetry"
	"github.com/connector-go/connector/internal/wire"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

// GuardName names the subject guard in dead letters
// (<prefix>.dead.events._guard.<seq>) and metrics; no listener may take it.
//
// A listener only receives the subjects its filters match. An event
// published on a subject that is not <prefix>.events.<model token>.<event>.<bucket>
// (the model's dots not encoded, the bucket missing, upper-case or decimal)
// matches no listener: without the guard it would wait in the stream,
// unseen, until MaxAge. The guard, one durable consumer over the whole
// events stream shared by every process that runs listeners, dead-letters
// such events with reason unknown_model and acknowledges the others.
const GuardName = "_guard"

// GuardConsumer is the durable consumer of the subject guard.
const GuardConsumer = "ev__guard"

type guard struct {
	l    *Listeners
	cons jetstream.Consumer
	log  *zap.Logger
}

func (l *Listeners) guardConfig() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       GuardConsumer,
		Description:   "events subject guard: dead-letters events on subjects no listener can match",
		FilterSubject: l.names.EventsWildcard(),
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       l.ackWait,
		MaxAckPending: 1024,
		MaxDeliver:    -1,
	}
}

// newGuard creates (or binds) the guard's consumer.
func (l *Listeners) newGuard(ctx context.Context) (*guard, error) {
	g := &guard{l: l, log: l.log.With(zap.String("consumer", GuardConsumer))}
	c, err := g.ensure(ctx)
	if err != nil {
		return nil, fmt.Errorf("events: consumer %s: %w", GuardConsumer, err)
	}
	g.cons = c
	return g, nil
}

func (g *guard) ensure(ctx context.Context) (jetstream.Consumer, error) {
	stream, want := g.l.names.EventsStream(), g.l.guardConfig()
	c, err := g.l.js.Consumer(ctx, stream, GuardConsumer)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return g.l.js.CreateConsumer(ctx, stream, want)
	}
	if err != nil {
		return nil, err
	}
	if have := c.CachedInfo().Config; have.AckWait == want.AckWait && have.MaxAckPending == want.MaxAckPending {
		return c, nil
	}
	cfg := c.CachedInfo().Config
	cfg.AckWait, cfg.MaxAckPending = want.AckWait, want.MaxAckPending
	cfg.Metadata = userMetadata(cfg.Metadata)
	return g.l.js.UpdateConsumer(ctx, stream, cfg)
}

// run consumes the guard until ctx ends, creating its consumer again when
// the consumption stops by itself.
func (g *guard) run(ctx context.Context) {
	cons := g.cons
	// Checks finish (ack or letter) even while Run stops.
	cctx := context.WithoutCancel(ctx)
	for {
		if cons != nil && consume(ctx, g.log, cons, func(msg jetstream.Msg) { g.check(cctx, msg) },
			jetstream.PullMaxMessages(64), jetstream.PullExpiry(pullExpiry)) {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
		var err error
		if cons, err = g.ensure(ctx); err != nil && ctx.Err() == nil {
			g.log.Warn("events: create consumer", telemetry.ErrField(err))
		}
	}
}

// check acknowledges an event on a well-formed subject, and dead-letters
// one on a subject no listener can match.
func (g *guard) check(ctx context.Context, msg jetstream.Msg) {
	_, _, _, perr := g.l.names.ParseEventSubject(msg.Subject())
	if perr == nil {
		_ = msg.Ack()
		return
	}
	meta, err := msg.Metadata()
	if err != nil {
		_ = msg.Nak()
		return
	}
	cause := fmt.Errorf("%w: no listener can receive it: %w", ErrInvalidEvent, perr)
	log := g.log.With(zap.String("subject", msg.Subject()), zap.Uint64("seq", meta.Sequence.Stream))
	if err := g.l.deadLetter(ctx, GuardName, msg, int(meta.NumDelivered), wire.ReasonUnknownModel, cause, ""); err != nil {
		log.Error("events: cannot write dead letter, will retry", telemetry.ErrField(err))
		_ = msg.NakWithDelay(time.Second)
		return
	}
	log.Warn("events: event on a malformed subject, dead-lettered", zap.String("error", telemetry.Redact(cause.Error())))
	g.l.metrics.EventHandled(ctx, GuardName, "", "_invalid", outcomeDead)
	_ = msg.Term()
}
