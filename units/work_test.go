package units_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/connector-go/connector/units"
	"github.com/connector-go/connector/units/unitstest"
)

// Adapter, local and binder calls of an import run in named spans; a failed
// call marks its span as an error, a missing record does not.
func TestWorkSpans(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })

	f := newFixture(t, unitstest.NewStore().Binder, unitstest.NewStore())
	f.env.Tracer = tp.Tracer("test")
	f.ext.Model("category").Put("c1", units.Record{"name": "Tools"})
	if _, err := f.importRecord(t, "category", "c1", false); err != nil {
		t.Fatal(err)
	}
	_, _ = f.importRecord(t, "category", "missing", false)
	f.ext.Model("category").SetDown(true)
	_, _ = f.importRecord(t, "category", "c1", false)

	var names []string
	failed := map[string]int{}
	for _, s := range rec.Ended() {
		names = append(names, s.Name())
		if s.Status().Code == codes.Error {
			failed[s.Name()]++
		}
	}
	for _, want := range []string{
		"adapter.read shop/category",
		"binder.to_internal shop/category",
		"lock.acquire import/shop-1/category/c1",
		"local.create category",
		"binder.bind shop/category",
		"import shop/category",
	} {
		if !slices.Contains(names, want) {
			t.Errorf("no span %q in %v", want, names)
		}
	}
	if failed["adapter.read shop/category"] != 1 || failed["import shop/category"] != 1 || len(failed) != 2 {
		t.Errorf("failed spans %v: want the read while down and its import (a missing record is no failure)", failed)
	}
}

func TestWorkLoggerAndModelSwitch(t *testing.T) {
	core, logs := observer.New(zap.DebugLevel)
	r := units.NewRegistry()
	r.Backend("shop")
	w := r.NewWork(units.Env{Logger: zap.New(core)}, units.Backend{ID: "s1", Type: "shop"}, "order")
	w.WithModel("order.line").Logger.Info("hi")
	e := logs.All()[0]
	if e.ContextMap()["model"] != "order.line" || e.ContextMap()["backend"] != "s1" {
		t.Errorf("log fields %v", e.ContextMap())
	}
	if w.Model != "order" {
		t.Error("WithModel changed the original")
	}
	if _, err := w.Local(); err == nil {
		t.Error("Local without Env.Local")
	}
	if _, err := w.Binder(); err == nil {
		t.Error("Binder without Env.Binders")
	}
	if _, err := w.Adapter(); !errors.Is(err, units.ErrNoUnit) {
		t.Errorf("Adapter without unit: %v", err)
	}
}

// A BinderUsage unit overrides Env.Binders for its backend version.
func TestBinderUsageOverride(t *testing.T) {
	envStore, unitStore := unitstest.NewStore(), unitstest.NewStore()
	r := units.NewRegistry()
	shop := r.Backend("shop")
	v2 := shop.Version("2")
	mustRegister(t, v2, units.BinderUsage, units.AnyModel, units.BinderFactory(func(w *units.Work) (units.Binder, error) {
		return unitStore.Binder(w.Backend.ID, w.Model), nil
	}))
	ctx := context.Background()
	for _, c := range []struct {
		version string
		store   *unitstest.Store
	}{{"", envStore}, {"2", unitStore}} {
		w := r.NewWork(units.Env{Binders: envStore.Binder}, units.Backend{ID: "s" + c.version, Type: "shop", Version: c.version}, "p")
		b, err := w.Binder()
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Bind(ctx, "e", "l", timeZero); err != nil {
			t.Fatal(err)
		}
		if _, found, _ := c.store.Binder(w.Backend.ID, "p").ToInternal(ctx, "e"); !found {
			t.Errorf("version %q: bound in the wrong store", c.version)
		}
	}
}

// The work context carries the backend instance resolved from its id (type,
// version, settings) to the units: here the adapter factory reads the
// settings; WithModel keeps the instance, tracer and env.
func TestWorkCarriesTheBackendInstance(t *testing.T) {
	r := units.NewRegistry()
	shop := r.Backend("shop")
	shop.Version("2")
	var got []string
	mustRegister(t, shop, units.AdapterUsage, units.AnyModel, units.AdapterFactory(func(w *units.Work) (units.Adapter, error) {
		got = append(got, w.Backend.ID+" "+w.Backend.Type+" "+w.Backend.Version+" "+w.Backend.Settings["url"]+" "+w.Model)
		return unitstest.NewMemory(w.Model), nil
	}))
	tp := sdktrace.NewTracerProvider()
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	env := units.Env{
		Backends: units.Backends(
			units.Backend{ID: "paris", Type: "shop", Version: "2", Settings: map[string]string{"url": "https://paris.example"}},
			units.Backend{ID: "ghost", Type: "shop", Version: "9"},
		),
		Tracer: tp.Tracer("t"),
	}
	w, err := r.Work(context.Background(), env, "paris", "product")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Adapter(); err != nil {
		t.Fatal(err)
	}
	line := w.WithModel("order.line")
	if _, err := line.Adapter(); err != nil {
		t.Fatal(err)
	}
	want := []string{"paris shop 2 https://paris.example product", "paris shop 2 https://paris.example order.line"}
	if !slices.Equal(got, want) {
		t.Errorf("factory saw %q, want %q", got, want)
	}
	if line.Backend.ID != "paris" || line.Tracer != w.Tracer || line.Registry != r || w.Model != "product" {
		t.Errorf("WithModel: %+v", line)
	}
	if _, err := units.Find(w, units.AdapterUsage); err != nil {
		t.Errorf("Find through the version chain: %v", err)
	}

	if _, err := r.Work(context.Background(), env, "nope", "product"); !errors.Is(err, units.ErrUnknownInstance) {
		t.Errorf("unknown instance: %v", err)
	}
	ghost, err := r.Work(context.Background(), env, "ghost", "product")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ghost.Adapter(); !errors.Is(err, units.ErrUnknownBackend) || !strings.Contains(err.Error(), `"backend.adapter"`) {
		t.Errorf("undeclared version: %v", err)
	}
	if _, err := r.Work(context.Background(), units.Env{}, "paris", "product"); !errors.Is(err, units.ErrEnv) {
		t.Errorf("no Env.Backends: %v", err)
	}
	if _, err := w.Local(); !errors.Is(err, units.ErrEnv) {
		t.Errorf("no Env.Local: %v", err)
	}
	if _, err := w.Binder(); !errors.Is(err, units.ErrEnv) {
		t.Errorf("no Env.Binders: %v", err)
	}
}
