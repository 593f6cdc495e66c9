package worker

import (
	"context"
	"sync"

	"github.com/connector-go/connector/internal/telemetry"
	"github.com/connector-go/connector/job"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"
)

// Log fields of job lines. Every line about a job carries job_id,
// job_name, channel and attempt, trace_id when the job is traced, and
// backend and model when its arguments tell them (JobLabels).
const (
	fieldJobID   = "job_id"
	fieldJobName = "job_name"
	fieldChannel = "channel"
	fieldAttempt = "attempt"
	fieldTraceID = "trace_id"
	fieldBackend = "backend"
	fieldModel   = "model"
)

// jobCtxKey carries the per-job logger.
type jobCtxKey struct{}

// jobCtx holds the job's log fields; the logger itself is built only when
// something logs (most successful jobs log nothing at production levels).
type jobCtx struct {
	base *zap.Logger
	m    *Message
	sc   trace.SpanContext

	mu     sync.Mutex  // handlers may log from several goroutines
	labels []zap.Field // backend, model
	log    *zap.Logger // built on first use
}

func (jc *jobCtx) fields() []zap.Field {
	jc.mu.Lock()
	defer jc.mu.Unlock()
	return jc.fieldsLocked()
}

// fieldsLocked is fields with jc.mu held.
func (jc *jobCtx) fieldsLocked() []zap.Field {
	f := make([]zap.Field, 0, 8)
	f = append(f, zap.String(fieldJobID, jc.m.ID), zap.String(fieldJobName, jc.m.Name),
		zap.String(fieldChannel, jc.m.Channel), zap.Int(fieldAttempt, jc.m.Attempt))
	if jc.sc.IsValid() {
		f = append(f, zap.String(fieldTraceID, jc.sc.TraceID().String()))
	}
	return append(f, jc.labels...)
}

func (jc *jobCtx) logger() *zap.Logger {
	jc.mu.Lock()
	defer jc.mu.Unlock()
	if jc.log == nil {
		jc.log = jc.base.With(jc.fieldsLocked()...)
	}
	return jc.log
}

// Logger returns the logger of the running job (with job_id, job_name,
// channel, attempt, trace_id, and backend/model when the arguments tell
// them through a JobLabels() (backend, model string) method), or a no-op
// logger outside a job. It is safe to call from the job's goroutines.
//
// Backend and model are added when a typed handler (Register) decodes the
// arguments, after the middleware has run: a middleware that calls Logger
// before it calls the next handler gets a logger without them. Loggers
// obtained from the handler on have them.
func Logger(ctx context.Context) *zap.Logger {
	if jc, ok := ctx.Value(jobCtxKey{}).(*jobCtx); ok {
		return jc.logger()
	}
	return zap.NewNop()
}

// withLabels adds backend and model to the job's fields; it runs before
// the handler does (typed handlers), but after the middleware, which may
// have built the logger already: the logger is then extended, so that the
// handler's lines and the worker's own lines about the job carry them.
func withLabels(ctx context.Context, backend, model string) context.Context {
	if jc, ok := ctx.Value(jobCtxKey{}).(*jobCtx); ok {
		labels := []zap.Field{zap.String(fieldBackend, backend), zap.String(fieldModel, model)}
		jc.mu.Lock()
		jc.labels = append(jc.labels, labels...)
		if jc.log != nil {
			jc.log = jc.log.With(labels...)
		}
		jc.mu.Unlock()
	}
	return ctx
}

// msgFields are the fields of a line about a received message that is not
// (or not yet) running: what its envelope and headers tell.
func (w *Worker) msgFields(it *item, attempt int) []zap.Field {
	f := make([]zap.Field, 0, 8)
	if it.meta != nil {
		f = append(f, zap.Uint64("stream_seq", it.meta.Sequence.Stream))
	}
	if env := it.env; env != nil {
		channel := env.Channel
		if channel == "" {
			channel = job.DefaultChannel
		}
		f = append(f, zap.String(fieldJobID, env.ID), zap.String(fieldJobName, env.Name), zap.String(fieldChannel, channel))
		if attempt > 0 {
			f = append(f, zap.Int(fieldAttempt, attempt))
		}
	}
	if sc := trace.SpanContextFromContext(telemetry.ExtractFrom(context.Background(), telemetry.JobCarrier(it.env, it.msg.Headers()))); sc.IsValid() {
		f = append(f, zap.String(fieldTraceID, sc.TraceID().String()))
	}
	return f
}
