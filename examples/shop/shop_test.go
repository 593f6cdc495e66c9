package shop_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/connector-go/connector/examples/shop"
)

// client is a tiny JSON client for the tests.
type client struct {
	t    *testing.T
	base string
}

func newShop(t *testing.T, opts ...shop.Option) *client {
	t.Helper()
	srv := httptest.NewServer(shop.NewServer(opts...))
	t.Cleanup(srv.Close)
	return &client{t: t, base: srv.URL}
}

// do sends body (nil, a string or a value to marshal) and decodes the
// answer into out (if not nil). It returns the response.
func (c *client) do(method, path string, body, out any) *http.Response {
	c.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = bytes.NewBufferString(b)
	default:
		buf, err := json.Marshal(b)
		if err != nil {
			c.t.Fatal(err)
		}
		rd = bytes.NewReader(buf)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatal(err)
	}
	if out != nil && len(raw) > 0 {
		if err := json.Unmarshal(raw, out); err != nil {
			c.t.Fatalf("%s %s: decoding %q: %v", method, path, raw, err)
		}
	}
	return resp
}

func (c *client) want(method, path string, body any, status int, out any) {
	c.t.Helper()
	var raw json.RawMessage
	resp := c.do(method, path, body, &raw)
	if resp.StatusCode != status {
		c.t.Fatalf("%s %s: status %d, want %d; body %s", method, path, resp.StatusCode, status, raw)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			c.t.Fatalf("%s %s: decoding %s: %v", method, path, raw, err)
		}
	}
}

type apiErr struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

type v1Product struct {
	ID        int64   `json:"id"`
	Name      string  `json:"name"`
	Price     float64 `json:"price"`
	UpdatedAt string  `json:"updated_at"`
}

type v2Money struct {
	Amount   string `json:"amount"`
	Currency string `json:"currency"`
}

type v2Product struct {
	ID        int64   `json:"id"`
	Title     string  `json:"title"`
	UnitPrice v2Money `json:"unit_price"`
	Modified  string  `json:"modified"`
}

// One record, two API versions with different field names.
func TestProductVersionsShowTheSameRecord(t *testing.T) {
	c := newShop(t)
	var created v1Product
	c.want("POST", "/v1/products", map[string]any{"name": "Teapot", "price": 24.9}, http.StatusCreated, &created)
	if created.ID == 0 || created.Name != "Teapot" || created.Price != 24.9 || created.UpdatedAt == "" {
		t.Fatalf("created %+v", created)
	}

	var got v2Product
	c.want("GET", fmt.Sprintf("/v2/products/%d", created.ID), nil, http.StatusOK, &got)
	if got.Title != "Teapot" || got.UnitPrice != (v2Money{"24.90", "EUR"}) || got.Modified != created.UpdatedAt {
		t.Fatalf("v2 view %+v", got)
	}

	// PATCH in v2 changes only the price; v1 sees it with a later updated_at.
	c.want("PATCH", fmt.Sprintf("/v2/products/%d", created.ID),
		map[string]any{"unit_price": map[string]string{"amount": "19.99", "currency": "EUR"}}, http.StatusOK, nil)
	var after v1Product
	c.want("GET", fmt.Sprintf("/v1/products/%d", created.ID), nil, http.StatusOK, &after)
	if after.Name != "Teapot" || after.Price != 19.99 || after.UpdatedAt <= created.UpdatedAt {
		t.Fatalf("after patch %+v (created %+v)", after, created)
	}

	// PUT replaces: a missing name is a validation error, not a silent keep.
	var e apiErr
	c.want("PUT", fmt.Sprintf("/v1/products/%d", created.ID), map[string]any{"price": 1}, http.StatusUnprocessableEntity, &e)
	if e.Error.Code != "invalid" {
		t.Fatalf("error %+v", e)
	}
	c.want("PUT", fmt.Sprintf("/v1/products/%d", created.ID), map[string]any{"name": "Kettle", "price": 30}, http.StatusOK, &after)
	if after.Name != "Kettle" || after.Price != 30 {
		t.Fatalf("after put %+v", after)
	}
}

// The API is strict: v1 field names sent to v2 are rejected with 400, and
// v2 refuses other currencies.
func TestStrictFieldsAndValidation(t *testing.T) {
	c := newShop(t)
	var e apiErr
	c.want("POST", "/v2/products", map[string]any{"name": "Teapot", "price": 3}, http.StatusBadRequest, &e)
	if e.Error.Code != "bad_request" {
		t.Fatalf("error %+v", e)
	}
	c.want("POST", "/v2/products", map[string]any{"title": "Teapot", "unit_price": map[string]string{"amount": "3", "currency": "USD"}},
		http.StatusUnprocessableEntity, &e)
	c.want("POST", "/v1/customers", map[string]any{"name": "No Mail"}, http.StatusUnprocessableEntity, &e)
	c.want("POST", "/v1/products", `{"name":"x"} {"name":"y"}`, http.StatusBadRequest, &e)
	c.want("GET", "/v1/products?updated_since=yesterday", nil, http.StatusBadRequest, &e)
	c.want("GET", "/v1/products?per_page=1000", nil, http.StatusBadRequest, &e)
}

func TestMissingRecordsAnswer404JSON(t *testing.T) {
	c := newShop(t)
	for _, tc := range []struct{ method, path string }{
		{"GET", "/v1/products/999"},
		{"GET", "/v2/customers/999"},
		{"PUT", "/v1/orders/999"},
		{"PATCH", "/v2/products/999"},
		{"DELETE", "/v1/customers/999"},
	} {
		var e apiErr
		resp := c.do(tc.method, tc.path, "{}", &e)
		if resp.StatusCode != http.StatusNotFound || e.Error.Code != "not_found" || e.Error.Message == "" {
			t.Errorf("%s %s: %d %+v", tc.method, tc.path, resp.StatusCode, e)
		}
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("%s %s: content type %q", tc.method, tc.path, ct)
		}
	}
}

// Incremental import: updated_since (inclusive) and updated_before
// (exclusive) select by modification time; lists are ordered by it and paged.
func TestListFiltersAndPages(t *testing.T) {
	var mu sync.Mutex
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	clock := func() time.Time { // advances one second per stamp
		mu.Lock()
		defer mu.Unlock()
		now = now.Add(time.Second)
		return now
	}
	c := newShop(t, shop.WithClock(clock))
	var stamps []string
	for i := range 5 {
		var p v1Product
		c.want("POST", "/v1/products", map[string]any{"name": fmt.Sprint("p", i), "price": i}, http.StatusCreated, &p)
		stamps = append(stamps, p.UpdatedAt)
	}
	// Touch p0: it becomes the newest.
	c.want("PATCH", "/v1/products/1", map[string]any{"price": 9}, http.StatusOK, nil)

	var page1 struct {
		Items   []v1Product `json:"items"`
		Page    int         `json:"page"`
		PerPage int         `json:"per_page"`
		Total   int         `json:"total"`
	}
	c.want("GET", "/v1/products?per_page=2&updated_since="+stamps[2], nil, http.StatusOK, &page1)
	if page1.Total != 4 || page1.Page != 1 || page1.PerPage != 2 || len(page1.Items) != 2 ||
		page1.Items[0].Name != "p2" || page1.Items[1].Name != "p3" {
		t.Fatalf("v1 page 1: %+v", page1)
	}

	var page2 struct {
		Data []v2Product `json:"data"`
		Meta struct {
			Page     int  `json:"page"`
			Total    int  `json:"total"`
			NextPage *int `json:"next_page"`
		} `json:"meta"`
	}
	c.want("GET", "/v2/products?per_page=2&page=2&updated_since="+stamps[2], nil, http.StatusOK, &page2)
	if page2.Meta.Total != 4 || page2.Meta.NextPage != nil || len(page2.Data) != 2 ||
		page2.Data[0].Title != "p4" || page2.Data[1].Title != "p0" {
		t.Fatalf("v2 page 2: %+v", page2)
	}
	c.want("GET", "/v2/products?per_page=2&page=1", nil, http.StatusOK, &page2)
	if page2.Meta.NextPage == nil || *page2.Meta.NextPage != 2 {
		t.Fatalf("v2 page 1 next_page: %+v", page2.Meta)
	}

	c.want("GET", "/v1/products?updated_since="+stamps[1]+"&updated_before="+stamps[3], nil, http.StatusOK, &page1)
	if page1.Total != 2 || page1.Items[0].Name != "p1" || page1.Items[1].Name != "p2" {
		t.Fatalf("window: %+v", page1)
	}
	c.want("GET", "/v1/products?page=9", nil, http.StatusOK, &page1)
	if len(page1.Items) != 0 || page1.Total != 5 {
		t.Fatalf("past the end: %+v", page1)
	}
}

// Orders reference a customer and products; line prices default to the
// product's price; records still referenced cannot be deleted (409).
func TestOrders(t *testing.T) {
	c := newShop(t)
	var cust struct {
		ID           int64  `json:"id"`
		EmailAddress string `json:"email_address"`
	}
	c.want("POST", "/v2/customers", map[string]any{"display_name": "Grace", "email_address": "grace@example.com"}, http.StatusCreated, &cust)
	var p v1Product
	c.want("POST", "/v1/products", map[string]any{"name": "Mug", "price": 7.5}, http.StatusCreated, &p)

	var o2 struct {
		ID       int64 `json:"id"`
		Customer struct {
			ID int64 `json:"id"`
		} `json:"customer"`
		State string  `json:"state"`
		Total v2Money `json:"total"`
		Items []struct {
			Qty       int64   `json:"qty"`
			UnitPrice v2Money `json:"unit_price"`
		} `json:"items"`
	}
	c.want("POST", "/v2/orders", map[string]any{
		"customer": map[string]any{"id": cust.ID},
		"items":    []any{map[string]any{"product": map[string]any{"id": p.ID}, "qty": 3}},
	}, http.StatusCreated, &o2)
	if o2.Customer.ID != cust.ID || o2.State != "draft" || o2.Total != (v2Money{"22.50", "EUR"}) ||
		len(o2.Items) != 1 || o2.Items[0].UnitPrice.Amount != "7.50" {
		t.Fatalf("v2 order %+v", o2)
	}

	var o1 struct {
		CustomerID int64   `json:"customer_id"`
		Status     string  `json:"status"`
		Total      float64 `json:"total"`
		Lines      []struct {
			ProductID int64   `json:"product_id"`
			Quantity  int64   `json:"quantity"`
			Price     float64 `json:"price"`
		} `json:"lines"`
	}
	c.want("PATCH", fmt.Sprintf("/v1/orders/%d", o2.ID), map[string]any{"status": "confirmed"}, http.StatusOK, &o1)
	if o1.CustomerID != cust.ID || o1.Status != "confirmed" || o1.Total != 22.5 ||
		len(o1.Lines) != 1 || o1.Lines[0].ProductID != p.ID || o1.Lines[0].Quantity != 3 || o1.Lines[0].Price != 7.5 {
		t.Fatalf("v1 order %+v", o1)
	}

	var e apiErr
	c.want("PATCH", fmt.Sprintf("/v1/orders/%d", o2.ID), map[string]any{"status": "lost"}, http.StatusUnprocessableEntity, &e)
	c.want("POST", "/v1/orders", map[string]any{"customer_id": cust.ID, "lines": []any{map[string]any{"product_id": 999, "quantity": 1}}},
		http.StatusUnprocessableEntity, &e)
	c.want("POST", "/v1/orders", map[string]any{"customer_id": 999, "lines": []any{map[string]any{"product_id": p.ID, "quantity": 1}}},
		http.StatusUnprocessableEntity, &e)

	c.want("DELETE", fmt.Sprintf("/v1/customers/%d", cust.ID), nil, http.StatusConflict, &e)
	if e.Error.Code != "in_use" {
		t.Fatalf("error %+v", e)
	}
	c.want("DELETE", fmt.Sprintf("/v2/products/%d", p.ID), nil, http.StatusConflict, &e)
	c.want("DELETE", fmt.Sprintf("/v2/orders/%d", o2.ID), nil, http.StatusNoContent, nil)
	c.want("DELETE", fmt.Sprintf("/v1/customers/%d", cust.ID), nil, http.StatusNoContent, nil)
	c.want("GET", fmt.Sprintf("/v1/customers/%d", cust.ID), nil, http.StatusNotFound, &e)
}

// Faults: ?fail=N fails one request; /admin/faults fails the next N.
func TestFaultInjection(t *testing.T) {
	c := newShop(t, shop.WithSampleData())
	var e apiErr
	resp := c.do("GET", "/v1/products?fail=503", nil, &e)
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "1" || e.Error.Code != "injected_fault" {
		t.Fatalf("?fail=503: %d %q %+v", resp.StatusCode, resp.Header.Get("Retry-After"), e)
	}
	c.want("GET", "/v1/products?fail=200", nil, http.StatusBadRequest, &e)

	c.want("POST", "/admin/faults", map[string]any{"status": 429, "count": 2, "retry_after_seconds": 3}, http.StatusOK, nil)
	for i := range 2 {
		resp := c.do("GET", "/v2/orders", nil, nil)
		if resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "3" {
			t.Fatalf("faulty request %d: %d %q", i, resp.StatusCode, resp.Header.Get("Retry-After"))
		}
	}
	var left struct{ Count int }
	c.want("GET", "/admin/faults", nil, http.StatusOK, &left)
	if left.Count != 0 {
		t.Fatalf("faults left %+v", left)
	}
	c.want("GET", "/v2/orders", nil, http.StatusOK, nil)

	c.want("POST", "/admin/faults", map[string]any{"count": 5}, http.StatusOK, nil) // default status 503
	c.want("GET", "/v1/customers", nil, http.StatusServiceUnavailable, nil)
	c.want("DELETE", "/admin/faults", nil, http.StatusNoContent, nil)
	c.want("GET", "/v1/customers", nil, http.StatusOK, nil)
	c.want("POST", "/admin/faults", map[string]any{"status": 200}, http.StatusUnprocessableEntity, nil)
}

// Concurrent writers get distinct ids and distinct, ordered stamps (run
// with -race).
func TestConcurrentWrites(t *testing.T) {
	c := newShop(t)
	const writers, each = 8, 20
	var wg sync.WaitGroup
	errs := make(chan error, writers*each)
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				body, _ := json.Marshal(map[string]any{"name": fmt.Sprintf("w%d-%d", w, i), "price": 1})
				resp, err := http.Post(c.base+"/v1/products", "application/json", bytes.NewReader(body))
				if err != nil {
					errs <- err
					return
				}
				_ = resp.Body.Close()
				if resp.StatusCode != http.StatusCreated {
					errs <- fmt.Errorf("status %d", resp.StatusCode)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	var list struct {
		Items []v1Product `json:"items"`
		Total int         `json:"total"`
	}
	ids := map[int64]bool{}
	stamps := map[string]bool{}
	var prev time.Time
	for page := 1; ; page++ {
		c.want("GET", fmt.Sprintf("/v1/products?per_page=100&page=%d", page), nil, http.StatusOK, &list)
		if len(list.Items) == 0 {
			break
		}
		for _, p := range list.Items {
			ts, err := time.Parse(time.RFC3339Nano, p.UpdatedAt)
			if err != nil || !ts.After(prev) {
				t.Fatalf("stamp %q not after %v (%v)", p.UpdatedAt, prev, err)
			}
			prev = ts
			ids[p.ID], stamps[p.UpdatedAt] = true, true
		}
	}
	if list.Total != writers*each || len(ids) != writers*each || len(stamps) != writers*each {
		t.Fatalf("total %d, distinct ids %d, distinct stamps %d; want %d", list.Total, len(ids), len(stamps), writers*each)
	}
}

func TestHealthAndSampleData(t *testing.T) {
	c := newShop(t, shop.WithSampleData())
	c.want("GET", "/healthz", nil, http.StatusOK, nil)
	var list struct {
		Meta struct{ Total int } `json:"meta"`
	}
	for _, res := range []string{"products", "customers", "orders"} {
		c.want("GET", "/v2/"+res, nil, http.StatusOK, &list)
		if list.Meta.Total == 0 {
			t.Errorf("no sample %s", res)
		}
	}
}

// A connector test would typically start the shop like this.
func ExampleNewServer() {
	srv := httptest.NewServer(shop.NewServer())
	defer srv.Close()

	resp, err := http.Post(srv.URL+"/v2/products", "application/json",
		bytes.NewBufferString(`{"title": "Teapot", "unit_price": {"amount": "24.90", "currency": "EUR"}}`))
	if err != nil {
		panic(err)
	}
	resp.Body.Close()
	fmt.Println(resp.Status, resp.Header.Get("Location"))

	resp, err = http.Get(srv.URL + "/v1/products/1")
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	var p struct {
		Name  string  `json:"name"`
		Price float64 `json:"price"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&p); err != nil {
		panic(err)
	}
	fmt.Println(p.Name, p.Price)
	// Output:
	// 201 Created /v2/products/1
	// Teapot 24.9
}
