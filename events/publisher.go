package events

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/connector-go/connector/internal/telemetry"
	"github.com/connector-go/connector/internal/wire"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
)

// ErrInvalidEvent: an event cannot be published or was not decodable.
var ErrInvalidEvent = errors.New("events: invalid event")

// Publisher publishes domain events to the events stream. It also reads
// and operates the listeners' side of the stream, for operators (their NATS
// user): the listeners' figures (Stats, Lag) and the events they gave up
// on (DeadLetters, Replay, ReplayAll, Discard). It is safe for concurrent
// use.
type Publisher struct {
	js     jetstream.JetStream
	names  wire.Names
	tracer trace.Tracer
	origin func(context.Context) string
}

// PublisherOption configures a Publisher.
type PublisherOption func(*Publisher)

// WithPublishTracer traces each publish with a PRODUCER span and puts its
// context in the "traceparent" header. Without it the span is not recorded
// but the caller's span context is still propagated.
func WithPublishTracer(tr trace.Tracer) PublisherOption {
	return func(p *Publisher) { p.tracer = tr }
}

// WithOriginFrom fills Event.Origin, when empty, from the context of
// Publish: pass units.OriginFrom so that writes made by an importer (under
// units.WithOrigin) publish events that its export listener skips.
func WithOriginFrom(f func(context.Context) string) PublisherOption {
	return func(p *Publisher) { p.origin = f }
}

// NewPublisher returns a publisher into names' events stream (provisioned
// by streams.Ensure).
func NewPublisher(js jetstream.JetStream, names wire.Names, opts ...PublisherOption) *Publisher {
	p := &Publisher{js: js, names: names}
	for _, o := range opts {
		o(p)
	}
	return p
}

// Publish stores ev in the events stream and returns its id. The event id
// is the Nats-Msg-Id header: publishing the same id again within the
// stream's dedup window stores nothing new and is not an error, so a
// publisher may retry safely. ID and Time are filled when empty.
func (p *Publisher) Publish(ctx context.Context, ev Event) (string, error) {
	if ev.ID == "" {
		ev.ID = wire.NewID()
	}
	if ev.Time.IsZero() {
		ev.Time = time.Now()
	}
	if ev.Origin == "" && p.origin != nil {
		ev.Origin = p.origin(ctx)
	}
	msg, err := p.Message(ev)
	if err != nil {
		return "", err
	}
	dest := p.names.Prefix + ".events." + wire.EncodeModel(ev.Model) + "." + ev.Name
	_, span := telemetry.StartProducerSpan(ctx, p.tracer, dest, ev.ID, msg.Header,
		attribute.String("connector.event.model", ev.Model),
		attribute.String("connector.event.name", ev.Name),
		attribute.String("connector.event.record_id", ev.RecordID),
	)
	defer span.End()
	if _, err := p.js.PublishMsg(ctx, msg); err != nil {
		telemetry.RecordError(span, err)
		return "", fmt.Errorf("events: publish %s: %w", msg.Subject, err)
	}
	return ev.ID, nil
}

// Message builds the NATS message of ev without publishing it (ID and Time
// must be set): subject, Nats-Msg-Id header and msgpack body.
func (p *Publisher) Message(ev Event) (*nats.Msg, error) {
	body := &wire.EventBody{
		ID: ev.ID, Model: ev.Model, Event: ev.Name, RecordID: ev.RecordID,
		Fields: ev.Fields, Origin: ev.Origin, Time: wire.Millis(ev.Time), Data: ev.Data,
	}
	data, err := wire.EncodeEvent(body)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidEvent, err)
	}
	msg := nats.NewMsg(p.names.EventSubject(ev.Model, ev.Name, ev.RecordID))
	msg.Header.Set(wire.HeaderMsgID, ev.ID)
	msg.Data = data
	return msg, nil
}
