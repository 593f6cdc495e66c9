package units_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/connector-go/connector/dispatcher"
	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/job"
	"github.com/connector-go/connector/units"
	"github.com/connector-go/connector/units/unitstest"
	"github.com/connector-go/connector/worker"
)

// labeled is what the worker looks for on job arguments (worker/registry.go).
type labeled interface {
	JobLabels() (backend, model string)
}

// The framework's jobs tell the worker their backend and model.
func TestFrameworkJobsHaveLabels(t *testing.T) {
	for _, args := range []job.Args{
		units.ImportRecord{BackendID: "shop-1", Model: "product", ExternalID: "7"},
		units.ExportRecord{BackendID: "shop-1", Model: "product", LocalID: "7"},
		units.DeleteRecord{BackendID: "shop-1", Model: "product", ExternalID: "7"},
		units.ImportBatch{BackendID: "shop-1", Model: "product"},
	} {
		l, ok := args.(labeled)
		if !ok {
			t.Errorf("%T (%s) has no JobLabels() (backend, model string)", args, args.JobName())
			continue
		}
		if b, m := l.JobLabels(); b != "shop-1" || m != "product" {
			t.Errorf("%T.JobLabels() = %q, %q; want shop-1, product", args, b, m)
		}
	}
}

// A real worker running the framework's jobs writes their backend and
// model on the job's log lines ("job done" here).
func TestFrameworkJobLabelsInWorkerLogs(t *testing.T) {
	_, _, js := testenv.JetStream(t)
	rdb, prefix := testenv.Redis(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	reg := worker.NewRegistry()
	ok := func(context.Context) (string, error) { return "ok", nil }
	worker.MustRegister(reg, func(ctx context.Context, _ *job.Job[units.ImportRecord]) (string, error) { return ok(ctx) })
	worker.MustRegister(reg, func(ctx context.Context, _ *job.Job[units.ExportRecord]) (string, error) { return ok(ctx) })
	worker.MustRegister(reg, func(ctx context.Context, _ *job.Job[units.DeleteRecord]) (string, error) { return ok(ctx) })
	worker.MustRegister(reg, func(ctx context.Context, _ *job.Job[units.ImportBatch]) (string, error) { return ok(ctx) })
	core, logs := observer.New(zap.InfoLevel)
	w, err := worker.New(js, reg, worker.WithPrefix(prefix), worker.WithRedis(rdb), worker.WithMemoryStorage(),
		worker.WithLogger(zap.New(core)))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("worker: %v", err)
		}
	}()
	d, err := dispatcher.New(js, dispatcher.WithPrefix(prefix), dispatcher.WithRedis(rdb))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = d.Close(context.Background()) }()
	jobs := []job.Args{
		units.ImportRecord{BackendID: "shop-1", Model: "product", ExternalID: "7"},
		units.ExportRecord{BackendID: "shop-2", Model: "customer", LocalID: "8"},
		units.DeleteRecord{BackendID: "shop-3", Model: "order", ExternalID: "9"},
		units.ImportBatch{BackendID: "shop-4", Model: "product"},
	}
	want := map[string][2]string{} // job id -> backend, model
	for _, a := range jobs {
		id, err := d.Enqueue(ctx, a)
		if err != nil {
			t.Fatal(err)
		}
		b, m := a.(labeled).JobLabels()
		want[id] = [2]string{b, m}
	}
	doneLines := func() map[string]map[string]any {
		out := map[string]map[string]any{}
		for _, e := range logs.FilterMessage("job done").All() {
			f := e.ContextMap()
			if id, _ := f["job_id"].(string); id != "" {
				out[id] = f
			}
		}
		return out
	}
	testenv.Eventually(t, 30*time.Second, func() bool { return len(doneLines()) >= len(want) }, "a \"job done\" line for each of %d jobs", len(want))
	lines := doneLines()
	for id, bm := range want {
		f := lines[id]
		if f["backend"] != bm[0] || f["model"] != bm[1] {
			t.Errorf("job %s (%v): log fields backend=%v model=%v, want %s, %s", id, f["job_name"], f["backend"], f["model"], bm[0], bm[1])
		}
	}
}

// failing is an adapter whose every call fails with an error quoting a
// URL with a password.
type failing struct{}

const secret = "S3CRET-units"

var errLeaky = errors.New("GET https://api:" + secret + "@shop.example/v1/products/7: 500 Internal Server Error")

func (failing) Search(context.Context, units.Query) ([]string, error) { return nil, errLeaky }
func (failing) Read(context.Context, string, []string) (units.Record, error) {
	return nil, job.Retry(errLeaky)
}
func (failing) Create(context.Context, units.Record) (string, error) { return "", errLeaky }
func (failing) Write(context.Context, string, units.Record) error    { return errLeaky }
func (failing) Delete(context.Context, string) error                 { return errLeaky }

// Span errors of the synchronizers (adapter calls and the run itself) are
// recorded redacted: the status, the exception event and its attributes
// carry no password.
func TestWorkSpanErrorsAreRedacted(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })

	reg := units.NewRegistry()
	shop := reg.Backend("shop")
	if err := units.Register(shop, units.AdapterUsage, units.AnyModel,
		units.AdapterFactory(func(*units.Work) (units.Adapter, error) { return failing{}, nil })); err != nil {
		t.Fatal(err)
	}
	if err := units.Register(shop, units.ImporterUsage, units.AnyModel, &units.Importer{}); err != nil {
		t.Fatal(err)
	}
	local := unitstest.NewSystem()
	env := units.Env{
		Backends: units.Backends(units.Backend{ID: "shop-1", Type: "shop"}),
		Binders:  unitstest.NewStore().Binder,
		Local:    local.Adapter,
		Tracer:   tp.Tracer("test"),
	}
	if _, err := reg.RunImport(context.Background(), env, units.ImportRecord{BackendID: "shop-1", Model: "product", ExternalID: "7"}); err == nil {
		t.Fatal("import through a failing adapter succeeded")
	}
	failed := 0
	for _, s := range rec.Ended() {
		if s.Status().Code != codes.Error {
			continue
		}
		failed++
		texts := []string{s.Status().Description}
		for _, ev := range s.Events() {
			texts = append(texts, ev.Name)
			for _, kv := range ev.Attributes {
				texts = append(texts, kv.Value.String())
			}
		}
		for _, kv := range s.Attributes() {
			texts = append(texts, kv.Value.String())
		}
		all := strings.Join(texts, "\n")
		if strings.Contains(all, secret) {
			t.Errorf("span %q records the error unredacted:\n%s", s.Name(), all)
		}
		if !strings.Contains(all, "shop.example") {
			t.Errorf("span %q does not record the error:\n%s", s.Name(), all)
		}
	}
	if failed < 2 {
		t.Errorf("%d failed spans, want the adapter read and the import run", failed)
	}
}
