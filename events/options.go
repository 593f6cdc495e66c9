package events

import (
	"go.opentelemetry.io/otel/trace"
)

// instrumentationScope names the tracer of the events package.
const instrumentationScope = "github.com/connector-go/connector/events"

// Option configures Listeners (NewListeners).
type Option interface{ applyListeners(*Listeners) }

// PublisherOption configures a Publisher (NewPublisher).
type PublisherOption interface{ applyPublisher(*Publisher) }

// SharedOption configures a Publisher and Listeners alike: it is both an
// Option and a PublisherOption, so one list of them serves both sides.
type SharedOption func(*shared)

func (f SharedOption) applyListeners(l *Listeners) { f(&l.shared) }
func (f SharedOption) applyPublisher(p *Publisher) { f(&p.shared) }

// shared is the configuration both sides have.
type shared struct {
	prefix string
	tp     trace.TracerProvider
}

// WithPrefix sets the deployment prefix (default "connector"), as
// worker.WithPrefix and dispatcher.WithPrefix do: it names the events
// stream, its subjects, the dead-letter stream and the Redis keys. A
// publisher and the listeners of one deployment use the same.
func WithPrefix(p string) SharedOption { return func(s *shared) { s.prefix = p } }

// WithTracerProvider traces events: a Publisher starts a PRODUCER span per
// publish and puts its context in the "traceparent" header; Listeners
// handle each event under a CONSUMER span, child of the publisher's span
// (or, with WithLinkedTraces, the root of a new trace linked to it).
// Without it nothing is recorded, but a publisher still propagates its
// caller's span context.
func WithTracerProvider(tp trace.TracerProvider) SharedOption {
	return func(s *shared) { s.tp = tp }
}

// newTracer is the events package's tracer, nil without a provider.
func (s *shared) newTracer() trace.Tracer {
	if s.tp == nil {
		return nil
	}
	return s.tp.Tracer(instrumentationScope)
}

type listenersOption func(*Listeners)

func (f listenersOption) applyListeners(l *Listeners) { f(l) }

type publisherOption func(*Publisher)

func (f publisherOption) applyPublisher(p *Publisher) { f(p) }
