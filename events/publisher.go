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
	shared
	js     jetstream.JetStream
	names  wire.Names
	tracer trace.Tracer
	origin func(context.Context) string
}

// WithOriginFrom fills Event.Origin, when empty, from the context of
// Publish: pass units.OriginFrom so that writes made by an importer (under
// units.WithOrigin) publish events that its export listener skips.
func WithOriginFrom(f func(context.Context) string) PublisherOption {
	return publisherOption(func(p *Publisher) { p.origin = f })
}

// NewPublisher returns a publisher into the events stream of the
// deployment named by WithPrefix (default "connector"). The stream is
// provisioned by the workers (worker.Worker.Setup) or by
// "connector streams provision"; publishing before it exists fails.
//
// It fails only on a prefix that cannot name subjects.
func NewPublisher(js jetstream.JetStream, opts ...PublisherOption) (*Publisher, error) {
	p := &Publisher{js: js}
	for _, o := range opts {
		o.applyPublisher(p)
	}
	names, err := wire.NewNames(p.prefix)
	if err != nil {
		return nil, fmt.Errorf("events: %w", err)
	}
	p.names, p.tracer = names, p.newTracer()
	return p, nil
}

// Publish stores ev in the events stream and returns its id. The event id
// is the Nats-Msg-Id header: publishing the same id again within the
// stream's dedup window stores nothing new and is not an error, so a
// publisher may retry safely. ID and Time are filled when empty. When the
// publish itself fails (not an invalid event), the id is returned with the
// error: the event may have been stored, so retry with ev.ID set to it.
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
		// The event may be stored all the same (an acknowledgement lost to
		// a timeout or a reconnect): its id lets the caller retry as the
		// same event, which the stream then drops as a duplicate.
		return ev.ID, fmt.Errorf("events: publish %s: %w", msg.Subject, err)
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
