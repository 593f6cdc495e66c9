package units

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/connector-go/connector/internal/telemetry"
	"github.com/connector-go/connector/job"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"go.uber.org/zap"
)

// Backend is one backend instance: "the shop of the Paris store", of type
// "magento", version "2.4". Units are looked up by its Type and Version.
type Backend struct {
	ID       string
	Type     string
	Version  string
	Settings map[string]string
}

// BackendResolver finds a backend instance by id.
type BackendResolver func(ctx context.Context, id string) (Backend, error)

// ErrUnknownInstance: a BackendResolver does not know the backend id.
var ErrUnknownInstance = errors.New("units: unknown backend instance")

// ErrEnv: the Env lacks what a unit needs (Backends, Binders, Local, or Jobs
// for a delayed batch import).
var ErrEnv = errors.New("units: incomplete Env")

// Backends returns a BackendResolver over a fixed set of instances.
func Backends(bs ...Backend) BackendResolver {
	m := make(map[string]Backend, len(bs))
	for _, b := range bs {
		m[b.ID] = b
	}
	return func(_ context.Context, id string) (Backend, error) {
		b, ok := m[id]
		if !ok {
			return Backend{}, fmt.Errorf("%w: %q", ErrUnknownInstance, id)
		}
		return b, nil
	}
}

// Env is what a worker gives the synchronizers at run time: where backend
// instances, bindings, locks and the local system are, and how to enqueue
// jobs. Only Backends, Binders and Local are required.
type Env struct {
	// Backends resolves a backend instance id.
	Backends BackendResolver
	// Binders gives the binder of a backend instance and model, e.g.
	// func(b, m string) units.Binder { return store.Binder(b, m) }.
	Binders func(backendID, model string) Binder
	// Local gives the adapter of the local system for a model.
	Local func(model string) (Adapter, error)
	// Locker takes record locks (nil: no locking, for single-process tools).
	Locker Locker
	// Jobs enqueues follow-up jobs (delayed batch imports, imports requested
	// by an exporter). Nil: an exporter's import runs inline, and a delayed
	// batch import fails with ErrEnv.
	Jobs job.Enqueuer
	// Logger (nil: zap.NewNop()) and Tracer (nil: a no-op tracer).
	Logger *zap.Logger
	Tracer trace.Tracer
	// Now is the clock used for sync dates (nil: time.Now).
	Now func() time.Time
	// LockTTL bounds record locks (0: one minute).
	LockTTL time.Duration
}

// Work is the work context of one synchronization: the backend instance, the
// model, and what the units need to reach both systems. Units receive it and
// switch model for dependencies with WithModel.
type Work struct {
	Registry *Registry
	Env      Env
	Backend  Backend
	Model    string
	Logger   *zap.Logger
	Tracer   trace.Tracer
}

// Work builds the work context of backend instance backendID for model.
func (r *Registry) Work(ctx context.Context, env Env, backendID, model string) (*Work, error) {
	if env.Backends == nil {
		return nil, fmt.Errorf("%w: Env.Backends is nil", ErrEnv)
	}
	b, err := env.Backends(ctx, backendID)
	if err != nil {
		return nil, err
	}
	return r.NewWork(env, b, model), nil
}

// NewWork builds a work context for a known backend instance.
func (r *Registry) NewWork(env Env, b Backend, model string) *Work {
	if env.Logger == nil {
		env.Logger = zap.NewNop()
	}
	if env.Tracer == nil {
		env.Tracer = noop.NewTracerProvider().Tracer("github.com/connector-go/connector/units")
	}
	if env.Now == nil {
		env.Now = time.Now
	}
	if env.LockTTL <= 0 {
		env.LockTTL = time.Minute
	}
	return &Work{
		Registry: r, Env: env, Backend: b, Model: model,
		Logger: env.Logger.With(zap.String("backend", b.ID), zap.String("model", model)),
		Tracer: env.Tracer,
	}
}

// WithModel returns a copy of w for another model (a dependency, a child
// record).
func (w *Work) WithModel(model string) *Work {
	c := *w
	c.Model = model
	c.Logger = w.Env.Logger.With(zap.String("backend", w.Backend.ID), zap.String("model", model))
	return &c
}

// Find looks up the unit of usage u for the work's backend version and model.
func Find[T any](w *Work, u Usage[T]) (T, error) {
	return Lookup(w.Registry, w.Backend.Type, w.Backend.Version, u, w.Model)
}

// Adapter returns the backend adapter for the work's model (AdapterUsage),
// wrapped in tracing spans.
func (w *Work) Adapter() (Adapter, error) {
	f, err := Find(w, AdapterUsage)
	if err != nil {
		return nil, err
	}
	a, err := f(w)
	if err != nil {
		return nil, fmt.Errorf("units: build adapter for %s/%s: %w", w.Backend.ID, w.Model, err)
	}
	return traced(&tracedAdapter{a: a, tr: w.Tracer, prefix: "adapter.", target: w.Backend.Type + "/" + w.Model, backend: w.Backend.ID}), nil
}

// Local returns the local system's adapter for the work's model.
func (w *Work) Local() (Adapter, error) {
	if w.Env.Local == nil {
		return nil, fmt.Errorf("%w: Env.Local is nil", ErrEnv)
	}
	a, err := w.Env.Local(w.Model)
	if err != nil {
		return nil, fmt.Errorf("units: local adapter for %s: %w", w.Model, err)
	}
	return traced(&tracedAdapter{a: a, tr: w.Tracer, prefix: "local.", target: w.Model, backend: w.Backend.ID}), nil
}

// traced returns t, as a ReturningWriter too when its adapter is one.
func traced(t *tracedAdapter) Adapter {
	if rw, ok := t.a.(ReturningWriter); ok {
		return &tracedReturning{tracedAdapter: t, rw: rw}
	}
	return t
}

// Binder returns the binder for the work's backend instance and model: the
// BinderUsage unit if one is registered, else Env.Binders.
func (w *Work) Binder() (Binder, error) {
	var b Binder
	f, err := Find(w, BinderUsage)
	switch {
	case err == nil:
		if b, err = f(w); err != nil {
			return nil, fmt.Errorf("units: build binder for %s/%s: %w", w.Backend.ID, w.Model, err)
		}
	case errors.Is(err, ErrNoUnit):
		if w.Env.Binders == nil {
			return nil, fmt.Errorf("%w: Env.Binders is nil", ErrEnv)
		}
		b = w.Env.Binders(w.Backend.ID, w.Model)
	default:
		return nil, err
	}
	return &tracedBinder{b: b, tr: w.Tracer, target: w.Backend.Type + "/" + w.Model, backend: w.Backend.ID}, nil
}

// BinderFor is w.WithModel(model).Binder().
func (w *Work) BinderFor(model string) (Binder, error) { return w.WithModel(model).Binder() }

// lock takes the record lock on resource; no Locker means no locking.
func (w *Work) lock(ctx context.Context, resource string) (func(), error) {
	if w.Env.Locker == nil {
		return func() {}, nil
	}
	ctx, span := w.Tracer.Start(ctx, "lock.acquire "+resource)
	release, err := w.Env.Locker.Acquire(ctx, resource, w.Env.LockTTL)
	end(span, err)
	if err != nil {
		return nil, err
	}
	return func() {
		if err := release(context.WithoutCancel(ctx)); err != nil {
			w.Logger.Warn("release lock", zap.String("resource", resource), telemetry.ErrField(err))
		}
	}, nil
}

func end(span trace.Span, err error) {
	if err != nil && !errors.Is(err, ErrMissing) {
		// Errors may quote URLs with credentials: recorded redacted.
		telemetry.RecordError(span, err)
	}
	span.End()
}

type tracedAdapter struct {
	a       Adapter
	tr      trace.Tracer
	prefix  string
	target  string
	backend string
}

func (t *tracedAdapter) start(ctx context.Context, op string, id string) (context.Context, trace.Span) {
	return t.tr.Start(ctx, t.prefix+op+" "+t.target, trace.WithAttributes(
		attribute.String("connector.backend", t.backend),
		attribute.String("connector.record_id", id),
	))
}

func (t *tracedAdapter) Search(ctx context.Context, q Query) ([]string, error) {
	ctx, span := t.start(ctx, "search", "")
	ids, err := t.a.Search(ctx, q)
	end(span, err)
	return ids, err
}

func (t *tracedAdapter) Read(ctx context.Context, id string, fields []string) (Record, error) {
	ctx, span := t.start(ctx, "read", id)
	r, err := t.a.Read(ctx, id, fields)
	end(span, err)
	return r, err
}

func (t *tracedAdapter) Create(ctx context.Context, rec Record) (string, error) {
	ctx, span := t.start(ctx, "create", "")
	id, err := t.a.Create(ctx, rec)
	span.SetAttributes(attribute.String("connector.record_id", id))
	end(span, err)
	return id, err
}

func (t *tracedAdapter) Write(ctx context.Context, id string, rec Record) error {
	ctx, span := t.start(ctx, "write", id)
	err := t.a.Write(ctx, id, rec)
	end(span, err)
	return err
}

func (t *tracedAdapter) Delete(ctx context.Context, id string) error {
	ctx, span := t.start(ctx, "delete", id)
	err := t.a.Delete(ctx, id)
	end(span, err)
	return err
}

// tracedReturning is a tracedAdapter over a ReturningWriter.
type tracedReturning struct {
	*tracedAdapter
	rw ReturningWriter
}

func (t *tracedReturning) CreateReturning(ctx context.Context, rec Record) (string, Record, error) {
	ctx, span := t.start(ctx, "create", "")
	id, stored, err := t.rw.CreateReturning(ctx, rec)
	if err == nil {
		span.SetAttributes(attribute.String("connector.record_id", id))
	}
	end(span, err)
	return id, stored, err
}

func (t *tracedReturning) WriteReturning(ctx context.Context, id string, rec Record) (Record, error) {
	ctx, span := t.start(ctx, "write", id)
	stored, err := t.rw.WriteReturning(ctx, id, rec)
	end(span, err)
	return stored, err
}

type tracedBinder struct {
	b       Binder
	tr      trace.Tracer
	target  string
	backend string
}

func (t *tracedBinder) start(ctx context.Context, op string) (context.Context, trace.Span) {
	return t.tr.Start(ctx, "binder."+op+" "+t.target, trace.WithAttributes(attribute.String("connector.backend", t.backend)))
}

func (t *tracedBinder) ToInternal(ctx context.Context, externalID string) (string, bool, error) {
	ctx, span := t.start(ctx, "to_internal")
	id, ok, err := t.b.ToInternal(ctx, externalID)
	end(span, err)
	return id, ok, err
}

func (t *tracedBinder) ToExternal(ctx context.Context, localID string) (string, bool, error) {
	ctx, span := t.start(ctx, "to_external")
	id, ok, err := t.b.ToExternal(ctx, localID)
	end(span, err)
	return id, ok, err
}

func (t *tracedBinder) Bind(ctx context.Context, externalID, localID string, syncedAt time.Time) error {
	ctx, span := t.start(ctx, "bind")
	err := t.b.Bind(ctx, externalID, localID, syncedAt)
	end(span, err)
	return err
}

func (t *tracedBinder) Unbind(ctx context.Context, externalID string) error {
	ctx, span := t.start(ctx, "unbind")
	err := t.b.Unbind(ctx, externalID)
	end(span, err)
	return err
}

func (t *tracedBinder) SyncDate(ctx context.Context, externalID string) (time.Time, bool, error) {
	ctx, span := t.start(ctx, "sync_date")
	ts, ok, err := t.b.SyncDate(ctx, externalID)
	end(span, err)
	return ts, ok, err
}

// span starts the span of a synchronizer run, e.g. "import shop/product".
func (w *Work) span(ctx context.Context, op, id string) (context.Context, trace.Span) {
	return w.Tracer.Start(ctx, op+" "+w.Backend.Type+"/"+w.Model, trace.WithAttributes(
		attribute.String("connector.backend", w.Backend.ID),
		attribute.String("connector.backend_version", w.Backend.Version),
		attribute.String("connector.record_id", id),
	))
}

// endRun ends a synchronizer span: nothing to do is not an error.
func endRun(span trace.Span, res string, err error) {
	var n *job.NothingToDoError
	if errors.As(err, &n) {
		res, err = n.Msg, nil
	}
	span.SetAttributes(attribute.String("connector.result", res))
	end(span, err)
}
