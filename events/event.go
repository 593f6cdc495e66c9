// Package events carries domain events from the systems a connector links
// to the listeners that react to them: the seed's on_record_create,
// on_record_write and on_record_unlink with @skip_if, over NATS JetStream.
//
// A service (in any language: the wire format is in docs/events.md)
// publishes an event when it creates, writes or deletes a record:
//
//	pub, err := events.NewPublisher(js, events.WithPrefix("connector"), events.WithOriginFrom(units.OriginFrom))
//	_, err = pub.Publish(ctx, events.Event{
//		Model: "res.partner", Name: events.Write, RecordID: "42",
//		Fields: []string{"name", "email"},
//	})
//
// Events land in the limits-retention EVENTS stream, so none is lost while
// the workers are down. A connector registers listeners; each is a set of
// durable consumers shared by the whole fleet, so each event is handled once
// per listener (at least once), and two listeners on the same event each
// get it:
//
//	l, err := events.NewListeners(js, events.WithRedis(rdb), events.WithLogger(log))
//	err = l.On("shop1_export_partner", "res.partner", "", func(ctx context.Context, ev events.Event) error {
//		_, err := enq.Enqueue(ctx, ExportPartner{Backend: "shop-1", ID: ev.RecordID})
//		return err
//	}, events.WithSkipIf(events.SkipOrigin("shop-1")))
//	err = l.Run(ctx)
//
// A publisher and the listeners of one deployment share its prefix
// (WithPrefix, as worker.WithPrefix and dispatcher.WithPrefix) and, for
// traces, a tracer provider (WithTracerProvider): both are SharedOptions,
// accepted by NewPublisher and NewListeners alike.
//
// SkipOrigin is the echo suppression: an importer writes local records with
// units.WithOrigin(ctx, backendID), the local system copies that origin into
// the events it publishes, and the export listener of that backend skips
// them, so import -> event -> export -> import loops cannot happen.
//
// Ordering: events of one record are handled in the order they were
// published, fleet-wide; events of different records run in parallel. A
// listener is a fixed number of partition consumers (WithPartitions), each
// handing out one event at a time to whichever process pulls first; a
// record's events all fall in one partition. This holds for any number of
// processes, and across a change of the partition count: a process
// configured with another count than the one the fleet runs waits, then
// takes over where the old consumers stopped (docs/events.md).
//
// Bad events (a body that does not decode, a subject that names no valid
// model or does not match the body) are logged and dead-lettered with a
// reason, and the listener goes on; events on subjects that no listener
// can match are dead-lettered by the subject guard (GuardName). A handler
// that keeps failing has its event dead-lettered after WithMaxDeliver
// deliveries.
package events

import (
	"context"
	"time"

	"github.com/nats-io/nats.go"
)

// The usual event names, after the seed's on_record_create,
// on_record_write and on_record_unlink. Any name of letters, digits, '_'
// and '-' works.
const (
	Create = "create"
	Write  = "write"
	Unlink = "unlink"
)

// Event is a domain event: something happened to one record of a model.
type Event struct {
	// ID identifies the event (and deduplicates its publication). Publish
	// generates one when empty.
	ID string
	// Model is the record's model, e.g. "res.partner" (dots allowed).
	Model string
	// Name is what happened: Create, Write, Unlink or a name of your own.
	Name string
	// RecordID is the id of the record in the publishing system.
	RecordID string
	// Fields lists the changed fields (for Write), if known.
	Fields []string
	// Origin is the backend instance whose import caused the change ("" for
	// a change made by a user or another process).
	Origin string
	// Time is when the change happened (Publish uses now when zero).
	Time time.Time
	// Data is optional extra payload (e.g. the new values).
	Data map[string]any

	// Set on events handed to a listener:

	// Subject is the NATS subject the event was published on.
	Subject string
	// Seq is the event's sequence in the events stream.
	Seq uint64
	// Attempt counts the deliveries of the event to this listener, from 1.
	Attempt int
	// Headers are the message headers (traceparent, Nats-Msg-Id, ...).
	Headers nats.Header
}

// Handler reacts to an event, typically by enqueuing a job. A nil error
// acknowledges the event; an error has it delivered again after a delay,
// until the listener's MaxDeliver, after which it is dead-lettered.
type Handler func(ctx context.Context, ev Event) error
