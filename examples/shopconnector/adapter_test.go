package shopconnector_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/connector-go/connector/events"
	"github.com/connector-go/connector/examples/catalog"
	"github.com/connector-go/connector/examples/shop"
	"github.com/connector-go/connector/examples/shopconnector"
	"github.com/connector-go/connector/job"
	"github.com/connector-go/connector/units"
)

// The shop adapter keeps the units.Adapter contract over HTTP: a record's 404
// is units.ErrMissing (a route's 404 is not: route_not_found_test.go), 5xx and 429 are retryable (429 with the shop's
// Retry-After), other 4xx are permanent; both list shapes page correctly.
func TestShopAdapterOutcomes(t *testing.T) {
	ctx := context.Background()
	for _, v := range []struct{ version, key, name string }{{"v1", "items", "name"}, {"v2", "data", "title"}} {
		t.Run(v.version, func(t *testing.T) {
			srv := httptest.NewServer(shop.NewServer(shop.WithSampleData()))
			defer srv.Close()
			a, err := shopconnector.NewShopAdapter(nil, srv.URL, v.version, "product", v.key)
			if err != nil {
				t.Fatal(err)
			}
			ids, err := a.Search(ctx, units.Query{})
			if err != nil || strings.Join(ids, ",") != "1,2,3" {
				t.Fatalf("search all: %v %v", ids, err)
			}
			ids, err = a.Search(ctx, units.Query{Offset: 2, Limit: 2})
			if err != nil || strings.Join(ids, ",") != "3" {
				t.Fatalf("search page 2: %v %v", ids, err)
			}
			// Settle leaves out records changed too recently.
			a.Settle = time.Hour
			if ids, err := a.Search(ctx, units.Query{}); err != nil || len(ids) != 0 {
				t.Fatalf("search with settle: %v %v", ids, err)
			}
			a.Settle = 0
			id, err := a.Create(ctx, units.Record{v.name: "Kettle"})
			if err != nil || id != "4" {
				t.Fatalf("create: %q %v", id, err)
			}
			if err := a.Write(ctx, id, units.Record{v.name: "Kettle 2"}); err != nil {
				t.Fatal(err)
			}
			rec, err := a.Read(ctx, id, nil)
			if err != nil || rec[v.name] != "Kettle 2" {
				t.Fatalf("read: %v %v", rec, err)
			}
			if err := a.Delete(ctx, id); err != nil {
				t.Fatal(err)
			}
			if _, err := a.Read(ctx, id, nil); !errors.Is(err, units.ErrMissing) {
				t.Fatalf("read deleted: %v, want ErrMissing", err)
			}
			if err := a.Write(ctx, "999", units.Record{v.name: "x"}); !errors.Is(err, units.ErrMissing) {
				t.Fatalf("write missing: %v, want ErrMissing", err)
			}
			// A validation error (422) is permanent: not retryable.
			if _, err := a.Create(ctx, units.Record{v.name: ""}); err == nil || isRetryable(err) {
				t.Fatalf("create invalid: %v, want a permanent error", err)
			}
			// Injected 503, then 429 with Retry-After: 2.
			fault(t, srv.URL, 503, 0)
			if _, err := a.Read(ctx, "1", nil); !isRetryable(err) {
				t.Fatalf("503: %v, want retryable", err)
			}
			fault(t, srv.URL, 429, 2)
			_, err = a.Read(ctx, "1", nil)
			if r, ok := job.AsRetryable(err); !ok || r.Delay != 2*time.Second {
				t.Fatalf("429: %v, want retryable after 2s", err)
			}
		})
	}
	// A refused connection is retryable too.
	a, _ := shopconnector.NewShopAdapter(nil, "http://127.0.0.1:1", "v1", "product", "items")
	if _, err := a.Read(ctx, "1", nil); !isRetryable(err) {
		t.Fatalf("connection refused: %v, want retryable", err)
	}
}

// The catalog adapter sends the origin of the context with its writes: the
// catalog's events carry it.
func TestCatalogAdapterPassesOrigin(t *testing.T) {
	pub := &memPublisher{}
	srv := httptest.NewServer(catalog.New(catalog.WithPublisher(pub)))
	defer srv.Close()
	a, err := shopconnector.NewCatalogAdapter(nil, srv.URL, "customer")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	id, err := a.Create(units.WithOrigin(ctx, "shop-eu"), units.Record{"name": "Ada", "email": "ada@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Write(ctx, id, units.Record{"name": "Ada L."}); err != nil {
		t.Fatal(err)
	}
	if got := pub.String(); got != "create customer 1 [email name] origin=shop-eu; write customer 1 [name] origin=" {
		t.Fatalf("events: %s", got)
	}
	if _, err := a.Read(ctx, "7", nil); !errors.Is(err, units.ErrMissing) {
		t.Fatalf("read missing: %v", err)
	}
}

func isRetryable(err error) bool { _, ok := job.AsRetryable(err); return ok }

func fault(t *testing.T, base string, status, retryAfter int) {
	t.Helper()
	body := fmt.Sprintf(`{"status": %d, "count": 1, "retry_after_seconds": %d}`, status, retryAfter)
	resp, err := http.Post(base+"/admin/faults", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
}

// memPublisher keeps the published events in memory (the catalog's
// Publisher interface; the e2e test uses the real events.Publisher).
type memPublisher struct {
	mu  sync.Mutex
	evs []events.Event
}

func (p *memPublisher) Publish(_ context.Context, ev events.Event) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.evs = append(p.evs, ev)
	return fmt.Sprint(len(p.evs)), nil
}

func (p *memPublisher) String() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var parts []string
	for _, ev := range p.evs {
		parts = append(parts, fmt.Sprintf("%s %s %s %v origin=%s", ev.Name, ev.Model, ev.RecordID, ev.Fields, ev.Origin))
	}
	return strings.Join(parts, "; ")
}
