package worker

import (
	"context"
	"errors"
	"fmt"

	"github.com/connector-go/connector/internal/wire"
	"github.com/connector-go/connector/job"
	"github.com/nats-io/nats.go"
)

// Message is a job as middleware sees it: its metadata and its still-encoded
// arguments.
type Message struct {
	job.Meta
	// Args holds the msgpack-encoded arguments.
	Args []byte
	// Header holds the NATS headers of the message: custom ones
	// (job.WithHeader), a trace context written by a producer that uses
	// headers. The Go dispatcher puts the trace context in the envelope;
	// the handler's ctx carries it either way (trace.SpanFromContext).
	Header nats.Header
	// StreamSeq is the message's sequence in the jobs stream.
	StreamSeq uint64
	// Delivered counts deliveries of this message (1 on the first).
	Delivered int

	graph string
	// argsBounded: Args came from an envelope the worker decoded, whose
	// nesting is bounded already.
	argsBounded bool
}

// Handler runs a job and returns its result message. Return job.Retry(err)
// (or RetryAfter, RetryNoCount) to try again later, job.NothingToDo(...) to
// end it as done with a message, and any other error to send it to the
// dead-letter stream.
type Handler func(ctx context.Context, m *Message) (result string, err error)

// Middleware wraps a Handler (logging, retry policies, correlation, ...).
type Middleware func(Handler) Handler

// HandlerFunc is the typed function of one job.
type HandlerFunc[T job.Args] func(ctx context.Context, j *job.Job[T]) (result string, err error)

// HandlerOption configures one registration.
type HandlerOption func(*entry)

// WithAliases lets a handler also answer to former names of its job, so
// that renaming a job survives a rolling deploy (old producers keep
// enqueuing the old name until they are replaced).
func WithAliases(names ...string) HandlerOption {
	return func(e *entry) { e.aliases = append(e.aliases, names...) }
}

type entry struct {
	name    string
	aliases []string
	h       Handler
}

// Registry maps job names to handlers. Build one, register handlers, and
// give it to New. It is not safe to register while a worker runs.
type Registry struct {
	entries map[string]*entry
	mw      []Middleware
}

// ErrDuplicate: a job name (or alias) is registered twice.
var ErrDuplicate = errors.New("worker: job name already registered")

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{entries: map[string]*entry{}} }

// Use appends middleware; the first added is the outermost.
func (r *Registry) Use(mw ...Middleware) { r.mw = append(r.mw, mw...) }

// Handle registers a handler working on raw messages.
func (r *Registry) Handle(name string, h Handler, opts ...HandlerOption) error {
	e := &entry{name: name, h: h}
	for _, o := range opts {
		o(e)
	}
	for _, n := range append([]string{name}, e.aliases...) {
		if n == "" {
			return fmt.Errorf("worker: empty job name")
		}
		if _, ok := r.entries[n]; ok {
			return fmt.Errorf("%w: %q", ErrDuplicate, n)
		}
	}
	for _, n := range append([]string{name}, e.aliases...) {
		r.entries[n] = e
	}
	return nil
}

// Register registers the typed handler of job T under T's JobName.
//
//	worker.Register(reg, func(ctx context.Context, j *job.Job[ImportProduct]) (string, error) {
//		return "imported " + j.Args.ExternalID, nil
//	})
func Register[T job.Args](r *Registry, fn HandlerFunc[T], opts ...HandlerOption) error {
	var zero T
	return r.Handle(zero.JobName(), typed(fn), opts...)
}

// MustRegister is Register for program set-up: it panics on error.
func MustRegister[T job.Args](r *Registry, fn HandlerFunc[T], opts ...HandlerOption) {
	if err := Register(r, fn, opts...); err != nil {
		panic(err)
	}
}

func typed[T job.Args](fn HandlerFunc[T]) Handler {
	return func(ctx context.Context, m *Message) (string, error) {
		j := &job.Job[T]{Meta: m.Meta}
		decode := wire.Unmarshal
		if m.argsBounded {
			decode = wire.UnmarshalChecked
		}
		if err := decode(m.Args, &j.Args); err != nil {
			return "", fmt.Errorf("%w: %s: %v", job.ErrBadArgs, m.Name, err)
		}
		if l, ok := any(j.Args).(interface {
			JobLabels() (backend, model string)
		}); ok {
			backend, model := l.JobLabels()
			ctx = withLabels(ctx, backend, model)
		}
		return fn(ctx, j)
	}
}

// Handler returns the handler of a job name (or alias) wrapped in the
// registry's middleware, as a worker runs it; false if none is registered.
// Tests run handlers through it (package workertest).
func (r *Registry) Handler(name string) (Handler, bool) {
	e, ok := r.entries[name]
	if !ok {
		return nil, false
	}
	return r.wrap(e.h), true
}

// wrap wraps h in the middleware chain, the first added outermost.
func (r *Registry) wrap(h Handler) Handler {
	for i := len(r.mw) - 1; i >= 0; i-- {
		h = r.mw[i](h)
	}
	return h
}

// build wraps every handler with the middleware chain once.
func (r *Registry) build() map[string]Handler {
	out := make(map[string]Handler, len(r.entries))
	for name, e := range r.entries {
		out[name] = r.wrap(e.h)
	}
	return out
}

// Names lists the registered job names (aliases included).
func (r *Registry) Names() []string {
	out := make([]string, 0, len(r.entries))
	for n := range r.entries {
		out = append(out, n)
	}
	return out
}
