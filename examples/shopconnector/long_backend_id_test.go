package shopconnector_test

import (
	"context"
	"strings"
	"testing"

	"github.com/connector-go/connector/bindings"
	"github.com/connector-go/connector/dispatcher"
	"github.com/connector-go/connector/events"
	"github.com/connector-go/connector/examples/shopconnector"
	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/job"
	"github.com/connector-go/connector/units"
	"github.com/connector-go/connector/worker"
)

// A shop instance's id is the operator's choice ("shop-eu-west-..."), and
// the connector derives names from it: its export listeners' (1-64
// characters) and its periodic imports' schedules (1-128). A long id must
// still give valid names, distinct for two shops whose ids share a long
// prefix, and the same names as before for a short id. Else Register or
// Schedule refuses the shop.
func TestLongShopIDsRegisterAndSchedule(t *testing.T) {
	_, _, js := testenv.JetStream(t)
	rdb, prefix := testenv.Redis(t)
	ctx := context.Background()
	base := strings.Repeat("shop-eu-west-", 10) // 130 characters
	shops := []units.Backend{
		shopconnector.Shop(base+"a", "v1", "http://127.0.0.1:1"),
		shopconnector.Shop(base+"b", "v2", "http://127.0.0.1:1"),
		shopconnector.Shop("shop-eu", "v1", "http://127.0.0.1:1"),
	}
	l, err := events.NewListeners(js, events.WithRedis(rdb), events.WithPrefix(prefix))
	if err != nil {
		t.Fatal(err)
	}
	reg := worker.NewRegistry()
	err = shopconnector.Register(reg, l, shopconnector.Config{
		Shops: shops, CatalogURL: "http://127.0.0.1:1", Bindings: bindings.New(rdb, prefix), Jobs: nopEnqueuer{},
	})
	if err != nil {
		t.Fatalf("register shops with long ids: %v", err)
	}
	if got, want := shopconnector.ExportListener("shop-eu", "product"), "shop_export_shop-eu_product"; got != want {
		t.Errorf("short id: listener %q, want %q (unchanged)", got, want)
	}
	names := map[string]bool{}
	for _, b := range shops {
		for _, model := range shopconnector.ExportedModels {
			n := shopconnector.ExportListener(b.ID, model)
			if names[n] {
				t.Errorf("listener name %q given twice", n)
			}
			names[n] = true
			if n != shopconnector.ExportListener(b.ID, model) {
				t.Errorf("listener name of %s %s not stable", b.ID, model)
			}
		}
	}

	// The streams the schedules live in, as a worker sets them up.
	w, err := worker.New(js, reg, worker.WithPrefix(prefix), worker.WithRedis(rdb), worker.WithMemoryStorage())
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	d, err := dispatcher.New(js, dispatcher.WithPrefix(prefix), dispatcher.WithRedis(rdb))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close(ctx)
	rec := &scheduleRecorder{next: d}
	if err := shopconnector.Schedule(ctx, rec, shops, "@every 1h"); err != nil {
		t.Fatalf("schedule shops with long ids: %v", err)
	}
	seen := map[string]bool{}
	for _, n := range rec.names {
		if seen[n] {
			t.Errorf("schedule name %q given twice", n)
		}
		seen[n] = true
	}
	if len(seen) != len(shops)*len(shopconnector.ImportedModels) {
		t.Errorf("%d schedules, want %d", len(seen), len(shops)*len(shopconnector.ImportedModels))
	}
	if !seen["shop-import-shop-eu-order"] {
		t.Errorf("short id: schedules %v, want shop-import-shop-eu-order among them (unchanged)", rec.names)
	}
}

type nopEnqueuer struct{}

func (nopEnqueuer) Enqueue(context.Context, job.Args, ...job.Option) (string, error) { return "", nil }

// scheduleRecorder passes schedules on to the dispatcher, noting their names.
type scheduleRecorder struct {
	next  shopconnector.Scheduler
	names []string
}

func (s *scheduleRecorder) Schedule(ctx context.Context, name, spec string, args job.Args, opts ...job.Option) error {
	s.names = append(s.names, name)
	return s.next.Schedule(ctx, name, spec, args, opts...)
}
