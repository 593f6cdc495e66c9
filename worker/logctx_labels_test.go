package worker

import (
	"context"
	"testing"

	"github.com/connector-go/connector/internal/wire"
	"github.com/connector-go/connector/job"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

type labelledArgs struct {
	Backend string `msgpack:"backend"`
	Model   string `msgpack:"model"`
}

func (labelledArgs) JobName() string                      { return "test.labelled" }
func (a labelledArgs) JobLabels() (backend, model string) { return a.Backend, a.Model }

// A middleware that logs with Logger before the typed handler decodes the
// arguments gets a logger without backend and model; the handler's lines,
// and the worker's own lines about the job after it, still carry them.
func TestLoggerLabelsAfterMiddlewareLogged(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	reg := NewRegistry()
	reg.Use(func(next Handler) Handler {
		return func(ctx context.Context, m *Message) (string, error) {
			Logger(ctx).Info("middleware")
			return next(ctx, m)
		}
	})
	MustRegister(reg, func(ctx context.Context, j *job.Job[labelledArgs]) (string, error) {
		Logger(ctx).Info("handler")
		return "ok", nil
	})
	raw, err := wire.Marshal(labelledArgs{Backend: "shop-1", Model: "product"})
	if err != nil {
		t.Fatal(err)
	}
	m := &Message{Meta: job.Meta{ID: "J1", Name: "test.labelled", Channel: "root", Attempt: 1}, Args: raw}
	jc := &jobCtx{base: zap.New(core), m: m}
	ctx := context.WithValue(context.Background(), jobCtxKey{}, jc)
	h, _ := reg.Handler("test.labelled")
	if _, err := h(ctx, m); err != nil {
		t.Fatal(err)
	}
	jc.logger().Info("worker") // as the worker's lines after the handler
	for _, msg := range []string{"handler", "worker"} {
		lines := logs.FilterMessage(msg).All()
		if len(lines) != 1 {
			t.Fatalf("%d %q lines", len(lines), msg)
		}
		f := lines[0].ContextMap()
		if f["backend"] != "shop-1" || f["model"] != "product" || f["job_id"] != "J1" {
			t.Errorf("%q line fields = %v, want backend shop-1, model product, job_id J1", msg, f)
		}
	}
}
