package shopconnector_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/connector-go/connector/bindings"
	"github.com/connector-go/connector/dispatcher"
	"github.com/connector-go/connector/events"
	"github.com/connector-go/connector/examples/catalog"
	"github.com/connector-go/connector/examples/shop"
	"github.com/connector-go/connector/examples/shopconnector"
	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/internal/wire"
	"github.com/connector-go/connector/job"
	"github.com/connector-go/connector/units"
	"github.com/connector-go/connector/worker"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
)

// The whole example, end to end, for each shop API version: an embedded
// JetStream server, the real Redis, the shop and the catalog over HTTP, the
// real worker, dispatcher, schedules and event listeners in this process.
func TestEndToEnd(t *testing.T) {
	for _, v := range []string{"v1", "v2"} {
		t.Run(v, func(t *testing.T) { endToEnd(t, v) })
	}
}

func endToEnd(t *testing.T, version string) {
	e := newE2E(t, version)
	ctx := context.Background()
	f := fieldsOf(version)

	// 1. Dependencies: importing shop order 1 first imports its customer
	// (1) and its products (1, 2), then maps their ids through the
	// bindings.
	if _, err := e.d.Enqueue(ctx, units.ImportRecord{BackendID: e.shop.ID, Model: "order", ExternalID: "1"},
		job.WithChannel(shopconnector.Channel)); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() bool { return len(e.cat.Records(catalog.Order)) == 1 },
		"order 1 imported")
	if n, m := len(e.cat.Records(catalog.Customer)), len(e.cat.Records(catalog.Product)); n != 1 || m != 2 {
		t.Fatalf("after the order import: %d customers, %d products; want 1 and 2", n, m)
	}
	o := e.cat.Records(catalog.Order)[0]
	if o["customer_id"] != e.local("customer", "1") || o["state"] != "confirmed" {
		t.Fatalf("order %v: want customer %s, state confirmed", o, e.local("customer", "1"))
	}
	lines, _ := o["lines"].([]any)
	if len(lines) != 2 || lines[0].(map[string]any)["product_id"] != e.local("product", "1") ||
		lines[1].(map[string]any)["product_id"] != e.local("product", "2") || lines[0].(map[string]any)["quantity"] != 2.0 {
		t.Fatalf("order lines %v", lines)
	}

	// 2. The scheduled, delayed batch imports bring the rest, without
	// duplicating what the order import brought.
	if err := shopconnector.Schedule(ctx, e.d, []units.Backend{e.shop}, "@every 1s"); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() bool {
		return len(e.cat.Records(catalog.Product)) == 3 && len(e.cat.Records(catalog.Customer)) == 2
	}, "batch imports")
	e.ticks(t, 2)
	e.listenersIdle(t)
	e.assertSynced(t, f)
	// The catalog published an event for each of the 6 records it created,
	// and the listeners handled them all (idle): every one was skipped as
	// the import's own echo.
	if n := e.events(t); n != 6 {
		t.Fatalf("%d events in the events stream, want 6", n)
	}
	e.assertExports(t, 0, 0)

	// 3. A change in the shop reaches the catalog, and is not echoed.
	e.shopCall(t, "PATCH", "/"+version+"/products/3", f.price(13.5), nil)
	testenv.Eventually(t, 10*time.Second, func() bool {
		return e.catRecord(catalog.Product, e.local("product", "3"))["price"] == 13.5
	}, "shop price change imported")
	e.listenersIdle(t)
	e.assertExports(t, 0, 0)

	// 4. Changes in the catalog reach the shop: exactly one shop write
	// each, and they do not come back.
	p1, c2 := e.local("product", "1"), e.local("customer", "2")
	e.catCall(t, "PATCH", "/products/"+p1, map[string]any{"name": "Espresso cup XL"}, nil)
	e.catCall(t, "PATCH", "/customers/"+c2, map[string]any{"email": "alan@turing.org"}, nil)
	testenv.Eventually(t, 10*time.Second, func() bool {
		return e.shopRecord("products", "1")[f.name] == "Espresso cup XL" &&
			e.shopRecord("customers", "2")[f.email] == "alan@turing.org"
	}, "catalog changes exported")
	stamp := e.catRecord(catalog.Product, p1)["updated_at"]
	e.ticks(t, 2)
	e.listenersIdle(t)
	e.assertExports(t, 2, 2)
	if got := e.catRecord(catalog.Product, p1)["updated_at"]; got != stamp {
		t.Fatalf("exported product written back into the catalog (updated_at %v -> %v)", stamp, got)
	}
	e.assertSynced(t, f)

	// 5. A record created in the catalog is created in the shop and bound;
	// the next imports find it bound and up to date (no duplicate).
	var tea catalog.Record
	e.catCall(t, "POST", "/products", map[string]any{"name": "Tea pot", "price": 25.0}, &tea)
	teaID := tea["id"].(string)
	var teaExt string
	testenv.Eventually(t, 10*time.Second, func() bool {
		ext, found, err := e.binder("product").ToExternal(ctx, teaID)
		teaExt = ext
		return err == nil && found
	}, "new catalog product exported and bound")
	if got := e.shopRecord("products", teaExt)[f.name]; got != "Tea pot" {
		t.Fatalf("shop product %s: %v", teaExt, got)
	}
	e.ticks(t, 2)
	e.listenersIdle(t)
	if n := len(e.cat.Records(catalog.Product)); n != 4 {
		t.Fatalf("catalog has %d products, want 4", n)
	}
	e.assertExports(t, 3, 3)
	e.assertSynced(t, f)

	// 6. A record deleted in the catalog is deleted in the shop and unbound.
	e.catCall(t, "DELETE", "/products/"+teaID, nil, nil)
	testenv.Eventually(t, 10*time.Second, func() bool {
		_, found, err := e.binder("product").ToExternal(ctx, teaID)
		return err == nil && !found && e.shopStatus("products", teaExt) == http.StatusNotFound
	}, "catalog delete exported")
	e.listenersIdle(t)
	e.assertExports(t, 4, 4)

	// 7. The shop fails twice with 503: the export is retried and lands
	// once.
	e.shopCall(t, "POST", "/admin/faults", map[string]any{"status": 503, "count": 2, "retry_after_seconds": 0}, nil)
	e.catCall(t, "PATCH", "/products/"+e.local("product", "2"), map[string]any{"price": 20.0}, nil)
	testenv.Eventually(t, 15*time.Second, func() bool {
		return f.priceOf(e.shopRecord("products", "2")) == 20
	}, "export retried after 503s")
	e.listenersIdle(t)
	e.assertExports(t, 5, 5)
	e.assertSynced(t, f)
}

// fields are the shop field names of an API version.
type fields struct {
	name, email, customerName, status, lines string
	price                                    func(float64) map[string]any
	priceOf                                  func(map[string]any) float64
	// customerOf and productOf give the shop ids an order and a line refer to.
	customerOf, productOf func(map[string]any) string
}

func fieldsOf(version string) fields {
	if version == "v1" {
		return fields{name: "name", email: "email", customerName: "name", status: "status", lines: "lines",
			price:      func(p float64) map[string]any { return map[string]any{"price": p} },
			priceOf:    func(r map[string]any) float64 { f, _ := r["price"].(float64); return f },
			customerOf: func(r map[string]any) string { return fmt.Sprint(r["customer_id"]) },
			productOf:  func(r map[string]any) string { return fmt.Sprint(r["product_id"]) },
		}
	}
	nested := func(key string) func(map[string]any) string {
		return func(r map[string]any) string { m, _ := r[key].(map[string]any); return fmt.Sprint(m["id"]) }
	}
	return fields{name: "title", email: "email_address", customerName: "display_name", status: "state", lines: "items",
		customerOf: nested("customer"), productOf: nested("product"),
		price: func(p float64) map[string]any {
			return map[string]any{"unit_price": map[string]any{"amount": fmt.Sprintf("%.2f", p), "currency": "EUR"}}
		},
		priceOf: func(r map[string]any) float64 {
			m, _ := r["unit_price"].(map[string]any)
			var f float64
			_, _ = fmt.Sscan(fmt.Sprint(m["amount"]), &f)
			return f
		},
	}
}

type e2e struct {
	t       *testing.T
	version string
	js      jetstream.JetStream
	d       *dispatcher.Dispatcher
	names   wire.Names
	store   *bindings.Store
	cat     *catalog.Server
	shopURL string
	catURL  string
	shop    units.Backend
	shopRec *recorder
	jobs    *countingEnqueuer
}

func newE2E(t *testing.T, version string) *e2e {
	_, _, js := testenv.JetStream(t)
	rdb, prefix := testenv.Redis(t)
	log := zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	d, err := dispatcher.New(js, dispatcher.WithPrefix(prefix), dispatcher.WithRedis(rdb))
	if err != nil {
		t.Fatal(err)
	}
	e := &e2e{t: t, version: version, js: js, d: d, names: wire.MustNames(prefix), store: bindings.New(rdb, prefix), shopRec: &recorder{}}
	e.jobs = &countingEnqueuer{next: d}

	shopSrv := httptest.NewServer(e.shopRec.wrap(shop.NewServer(shop.WithSampleData())))
	t.Cleanup(shopSrv.Close)
	pub, err := events.NewPublisher(js, events.WithPrefix(prefix))
	if err != nil {
		t.Fatal(err)
	}
	e.cat = catalog.New(catalog.WithPublisher(pub), catalog.WithLogger(log))
	catSrv := httptest.NewServer(e.cat)
	t.Cleanup(catSrv.Close)
	e.shopURL, e.catURL = shopSrv.URL, catSrv.URL
	e.shop = shopconnector.Shop("shop-"+version, version, shopSrv.URL)

	reg := worker.NewRegistry()
	l, err := events.NewListeners(js, events.WithRedis(rdb), events.WithPrefix(prefix), events.WithLogger(log), events.WithAckWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	err = shopconnector.Register(reg, l, shopconnector.Config{
		Shops: []units.Backend{e.shop}, CatalogURL: catSrv.URL, Bindings: e.store, Jobs: e.jobs, Logger: log, Partitions: 2,
	})
	if err != nil {
		t.Fatal(err)
	}
	w, err := worker.New(js, reg, worker.WithPrefix(prefix), worker.WithRedis(rdb), worker.WithLogger(log),
		worker.WithMemoryStorage(), worker.WithConcurrency(8), worker.WithChannels("root:4,root.shop:4"),
		worker.WithRetryPattern(job.RetryPattern{1: 100 * time.Millisecond}))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := w.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for _, run := range []func(context.Context) error{w.Run, l.Run} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := run(ctx); err != nil {
				t.Errorf("run: %v", err)
			}
		}()
	}
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		_ = d.Close(context.Background())
	})
	return e
}

// local returns the catalog id bound to a shop id.
func (e *e2e) local(model, ext string) string {
	e.t.Helper()
	id, found, err := e.binder(model).ToInternal(context.Background(), ext)
	if err != nil || !found {
		e.t.Fatalf("no binding for shop %s %s: %v", model, ext, err)
	}
	return id
}

func (e *e2e) binder(model string) *bindings.Binder { return e.store.Binder(e.shop.ID, model) }

// ticks waits until the scheduled batch imports searched the shop n more
// times per model, and the jobs queue is idle.
func (e *e2e) ticks(t *testing.T, n int) {
	t.Helper()
	start := e.shopRec.lists()
	want := start + n*len(shopconnector.ImportedModels)
	testenv.Eventually(t, 15*time.Second, func() bool {
		return e.shopRec.lists() >= want && e.jobsIdle()
	}, "%d batch import ticks", n)
}

// listenersIdle waits until every export listener handled every event.
func (e *e2e) listenersIdle(t *testing.T) {
	t.Helper()
	testenv.Eventually(t, 10*time.Second, func() bool {
		for _, m := range shopconnector.ExportedModels {
			l := shopconnector.ExportListener(e.shop.ID, m)
			if !testenv.CaughtUp(context.Background(), e.js, e.names.EventsStream(), e.names.EventFilter(m, "", ""),
				events.ConsumerName(l, 0, 2), events.ConsumerName(l, 1, 2)) {
				return false
			}
		}
		return e.jobsIdle()
	}, "listeners idle")
}

// events counts the events in the events stream.
func (e *e2e) events(t *testing.T) uint64 {
	t.Helper()
	s, err := e.js.Stream(context.Background(), e.names.EventsStream())
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

// jobsIdle reports whether no job is queued or running: every consumer of
// the jobs stream (the workers') has nothing pending or unacknowledged.
// Jobs waiting for a retry delay are not counted.
func (e *e2e) jobsIdle() bool {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s, err := e.js.Stream(ctx, e.names.JobsStream())
	if err != nil {
		return false
	}
	lister := s.ListConsumers(ctx)
	n := 0
	for info := range lister.Info() {
		n++
		if info.NumPending != 0 || info.NumAckPending != 0 {
			return false
		}
	}
	return lister.Err() == nil && n > 0
}

// assertExports checks how many export/delete jobs the listeners enqueued
// and how many writes the connector made in the shop.
func (e *e2e) assertExports(t *testing.T, jobs, shopWrites int) {
	t.Helper()
	if got := e.jobs.count(); got != jobs {
		t.Fatalf("export and delete jobs enqueued: %d, want %d: %v", got, jobs, e.jobs.names())
	}
	if got := e.shopRec.writes(); len(got) != shopWrites {
		t.Fatalf("connector writes to the shop: %d, want %d: %v", len(got), shopWrites, got)
	}
	// Each of those jobs ran on the connector's channel and is done.
	for _, id := range e.jobs.ids() {
		testenv.Eventually(t, 5*time.Second, func() bool {
			rec, err := e.d.Job(context.Background(), id)
			return err == nil && rec.State == job.StateDone && rec.Channel == shopconnector.Channel
		}, "job %s done on channel %s", id, shopconnector.Channel)
	}
}

// assertSynced checks that every product, customer and order of the shop
// has exactly one catalog record, bound both ways, with the same values
// (an order's customer and lines' products translated through the
// bindings).
func (e *e2e) assertSynced(t *testing.T, f fields) {
	t.Helper()
	ctx := context.Background()
	for _, m := range []struct{ model, path, field, shopField string }{
		{catalog.Product, "products", "name", f.name},
		{catalog.Customer, "customers", "email", f.email},
		{catalog.Customer, "customers", "name", f.customerName},
		{catalog.Order, "orders", "state", f.status},
	} {
		var shopIDs []string
		for _, r := range e.shopList(m.path) {
			shopIDs = append(shopIDs, fmt.Sprint(r["id"]))
		}
		recs := e.cat.Records(m.model)
		if len(recs) != len(shopIDs) {
			t.Fatalf("%s: %d in the catalog, %d in the shop", m.model, len(recs), len(shopIDs))
		}
		seen := map[string]bool{}
		for _, ext := range shopIDs {
			local := e.local(m.model, ext)
			if seen[local] {
				t.Fatalf("%s: catalog record %s bound twice", m.model, local)
			}
			seen[local] = true
			back, found, err := e.binder(m.model).ToExternal(ctx, local)
			if err != nil || !found || back != ext {
				t.Fatalf("%s: binding %s -> %s -> %s (%v)", m.model, ext, local, back, err)
			}
			sr, cr := e.shopRecord(m.path, ext), e.catRecord(m.model, local)
			if sr[m.shopField] != cr[m.field] {
				t.Fatalf("%s %s/%s: shop %v, catalog %v", m.model, ext, local, sr[m.shopField], cr[m.field])
			}
			if m.model == catalog.Product && f.priceOf(sr) != cr["price"] {
				t.Fatalf("product %s/%s: shop price %v, catalog %v", ext, local, f.priceOf(sr), cr["price"])
			}
			if m.model == catalog.Order {
				e.assertOrder(t, f, ext, sr, cr)
			}
		}
	}
}

// assertOrder checks that a catalog order refers to the catalog records
// bound to the shop order's customer and products.
func (e *e2e) assertOrder(t *testing.T, f fields, ext string, sr, cr map[string]any) {
	t.Helper()
	if want := e.local(catalog.Customer, f.customerOf(sr)); cr["customer_id"] != want {
		t.Fatalf("order %s: catalog customer %v, want %s (shop customer %s)", ext, cr["customer_id"], want, f.customerOf(sr))
	}
	shopLines, _ := sr[f.lines].([]any)
	catLines, _ := cr["lines"].([]any)
	if len(shopLines) == 0 || len(shopLines) != len(catLines) {
		t.Fatalf("order %s: %d shop lines, %d catalog lines", ext, len(shopLines), len(catLines))
	}
	for i := range shopLines {
		sl, _ := shopLines[i].(map[string]any)
		cl, _ := catLines[i].(map[string]any)
		if want := e.local(catalog.Product, f.productOf(sl)); cl["product_id"] != want {
			t.Fatalf("order %s line %d: catalog product %v, want %s", ext, i, cl["product_id"], want)
		}
	}
}

func (e *e2e) catRecord(model, id string) catalog.Record {
	for _, r := range e.cat.Records(model) {
		if r["id"] == id {
			return r
		}
	}
	return nil
}

// shopRecord reads a shop record as a user would; nil if the shop does not
// answer 200 (e.g. an injected fault).
func (e *e2e) shopRecord(path, id string) map[string]any {
	resp, err := http.Get(e.shopURL + "/" + e.version + "/" + path + "/" + id)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&out) != nil {
		return nil
	}
	return out
}

func (e *e2e) shopList(path string) []map[string]any {
	var out map[string]json.RawMessage
	e.shopCall(e.t, "GET", "/"+e.version+"/"+path+"?per_page=100", nil, &out)
	var items []map[string]any
	key := "items"
	if e.version == "v2" {
		key = "data"
	}
	if err := json.Unmarshal(out[key], &items); err != nil {
		e.t.Fatal(err)
	}
	return items
}

func (e *e2e) shopStatus(path, id string) int {
	resp, err := http.Get(e.shopURL + "/" + e.version + "/" + path + "/" + id)
	if err != nil {
		e.t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func (e *e2e) shopCall(t *testing.T, method, path string, body, out any) {
	t.Helper()
	call(t, method, e.shopURL+path, body, out)
}

func (e *e2e) catCall(t *testing.T, method, path string, body, out any) {
	t.Helper()
	call(t, method, e.catURL+path, body, out)
}

// call makes a user's request (not the connector's: no connector
// User-Agent, no origin) and fails the test on an error status.
func call(t *testing.T, method, url string, body, out any) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 400 {
		t.Fatalf("%s %s: %s: %s", method, url, resp.Status, data)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			t.Fatalf("%s %s: %v", method, url, err)
		}
	}
}

// recorder counts the connector's requests to the shop: the writes that
// succeeded and the list (search) requests.
type recorder struct {
	mu     sync.Mutex
	w      []string
	nlists int
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) { s.status = code; s.ResponseWriter.WriteHeader(code) }

func (rc *recorder) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		h.ServeHTTP(sw, r)
		if r.UserAgent() != shopconnector.UserAgent {
			return
		}
		rc.mu.Lock()
		defer rc.mu.Unlock()
		switch {
		case r.Method == http.MethodGet && strings.Count(r.URL.Path, "/") == 2: // GET /v1/products
			rc.nlists++
		case r.Method != http.MethodGet && sw.status < 400:
			rc.w = append(rc.w, r.Method+" "+r.URL.Path)
		}
	})
}

func (rc *recorder) writes() []string {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]string(nil), rc.w...)
}

func (rc *recorder) lists() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.nlists
}

// countingEnqueuer counts the export and delete jobs the listeners enqueue.
type countingEnqueuer struct {
	next   job.Enqueuer
	mu     sync.Mutex
	jobs   []string
	jobIDs []string
	// imports are the ids of the ImportRecord jobs enqueued through it
	// (the synchronizers' own: an exporter's import of a record changed in
	// the shop since its last sync).
	imports []string
}

func (c *countingEnqueuer) Enqueue(ctx context.Context, args job.Args, opts ...job.Option) (string, error) {
	id, err := c.next.Enqueue(ctx, args, opts...)
	if err != nil {
		return id, err
	}
	switch a := args.(type) {
	case units.ImportRecord:
		c.mu.Lock()
		c.imports = append(c.imports, id)
		c.mu.Unlock()
	case units.ExportRecord:
		c.add(id, fmt.Sprintf("export %s %s %v", a.Model, a.LocalID, a.Fields))
	case units.DeleteRecord:
		c.add(id, fmt.Sprintf("delete %s %s", a.Model, a.ExternalID))
	}
	return id, nil
}

func (c *countingEnqueuer) add(id, s string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.jobs = append(c.jobs, s)
	c.jobIDs = append(c.jobIDs, id)
}

func (c *countingEnqueuer) ids() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.jobIDs...)
}

func (c *countingEnqueuer) count() int { return len(c.names()) }

func (c *countingEnqueuer) names() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.jobs...)
}
