package shop_test

import (
	"net/http"
	"testing"

	"github.com/connector-go/connector/examples/shop"
)

// "not_found" means a record the shop does not have, and nothing else: a
// client maps it to "the record is gone". A path the shop does not serve is
// 404 "no_route", and a path it serves for other methods is 405
// "method_not_allowed" with an Allow header, so that a wrong base URL or API
// version never reads as a deleted record.
func TestUnknownRoutesAreNotMissingRecords(t *testing.T) {
	c := newShop(t, shop.WithSampleData())
	for _, tc := range []struct {
		method, path string
		status       int
		code, allow  string
	}{
		{"GET", "/v3/products", http.StatusNotFound, "no_route", ""},
		{"GET", "/v3/products/1", http.StatusNotFound, "no_route", ""},
		{"PATCH", "/api/v1/products/1", http.StatusNotFound, "no_route", ""},
		{"DELETE", "/v1/product/1", http.StatusNotFound, "no_route", ""},
		{"GET", "/v1/products/1/lines", http.StatusNotFound, "no_route", ""},
		{"GET", "/", http.StatusNotFound, "no_route", ""},
		{"POST", "/v1/products/1", http.StatusMethodNotAllowed, "method_not_allowed", "DELETE, GET, HEAD, PATCH, PUT"},
		{"DELETE", "/v2/orders", http.StatusMethodNotAllowed, "method_not_allowed", "GET, HEAD, POST"},
		{"PUT", "/admin/faults", http.StatusMethodNotAllowed, "method_not_allowed", "DELETE, GET, HEAD, POST"},
	} {
		var e apiErr
		resp := c.do(tc.method, tc.path, "{}", &e)
		if resp.StatusCode != tc.status || e.Error.Code != tc.code || e.Error.Message == "" {
			t.Errorf("%s %s: %d %+v, want %d %q", tc.method, tc.path, resp.StatusCode, e, tc.status, tc.code)
		}
		if got := resp.Header.Get("Allow"); got != tc.allow {
			t.Errorf("%s %s: Allow %q, want %q", tc.method, tc.path, got, tc.allow)
		}
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("%s %s: content type %q", tc.method, tc.path, ct)
		}
	}
	// The record routes still answer "not_found" for a record the shop
	// lacks, and serve the ones it has.
	var e apiErr
	c.want("GET", "/v1/products/999", nil, http.StatusNotFound, &e)
	if e.Error.Code != "not_found" {
		t.Fatalf("GET /v1/products/999: %+v, want not_found", e)
	}
	c.want("GET", "/v1/products/1", nil, http.StatusOK, nil)
}
