package catalog_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/connector-go/connector/events"
	"github.com/connector-go/connector/examples/catalog"
)

type memPublisher struct {
	mu  sync.Mutex
	evs []string
}

func (p *memPublisher) Publish(_ context.Context, ev events.Event) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.evs = append(p.evs, fmt.Sprintf("%s %s %s %v %q", ev.Name, ev.Model, ev.RecordID, ev.Fields, ev.Origin))
	return fmt.Sprint(len(p.evs)), nil
}

func (p *memPublisher) all() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.evs...)
}

func do(t *testing.T, srv *httptest.Server, method, path, body, origin string) int {
	t.Helper()
	req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
	if origin != "" {
		req.Header.Set(catalog.OriginHeader, origin)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// Every change publishes one event with the changed fields and the
// request's origin; a write that changes nothing publishes nothing; bad
// requests change nothing.
func TestChangesPublishEvents(t *testing.T) {
	pub := &memPublisher{}
	srv := httptest.NewServer(catalog.New(catalog.WithPublisher(pub)))
	defer srv.Close()
	steps := []struct {
		method, path, body, origin string
		status                     int
	}{
		{"POST", "/products", `{"name": "Cup", "price": 6.5}`, "shop-eu", 201},
		{"PATCH", "/products/1", `{"name": "Cup", "price": 7}`, "", 200},
		{"PATCH", "/products/1", `{"price": 7}`, "", 200}, // no change: no event
		{"PATCH", "/products/1", `{"colour": "red"}`, "", 400},
		{"PATCH", "/products/9", `{"price": 1}`, "", 404},
		{"POST", "/customers", `{"name": "Ada", "email": "ada@example.com"}`, "", 201},
		{"POST", "/orders", `{"customer_id": "7", "lines": []}`, "", 422},
		{"POST", "/orders", `{"customer_id": "1", "state": "draft", "lines": [{"product_id": "1", "quantity": 2}]}`, "shop-eu", 201},
		{"POST", "/orders", `{"customer_id": "1", "lines": [{"product_id": "5", "quantity": 2}]}`, "", 422},
		{"DELETE", "/products/1", ``, "", 204},
		{"GET", "/products/1", ``, "", 404},
	}
	for _, s := range steps {
		if got := do(t, srv, s.method, s.path, s.body, s.origin); got != s.status {
			t.Fatalf("%s %s %s: status %d, want %d", s.method, s.path, s.body, got, s.status)
		}
	}
	want := []string{
		`create product 1 [name price] "shop-eu"`,
		`write product 1 [price] ""`,
		`create customer 1 [email name] ""`,
		`create order 1 [customer_id lines state] "shop-eu"`,
		`unlink product 1 [] ""`,
	}
	if got := pub.all(); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("events:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
