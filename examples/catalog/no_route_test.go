package catalog_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/connector-go/connector/examples/catalog"
)

// "not_found" means a record the catalog does not have, and nothing else: a
// client maps it to "the record is gone". A path the catalog does not serve
// is 404 "no_route", and a path it serves for other methods is 405
// "method_not_allowed" with an Allow header; every error is JSON with a code.
func TestUnknownRoutesAreNotMissingRecords(t *testing.T) {
	srv := httptest.NewServer(catalog.New())
	defer srv.Close()
	if got := do(t, srv, "POST", "/products", `{"name": "Cup"}`, ""); got != http.StatusCreated {
		t.Fatalf("create: %d", got)
	}
	for _, tc := range []struct {
		method, path, body string
		status             int
		code, allow        string
	}{
		{"GET", "/products/9", "", http.StatusNotFound, "not_found", ""},
		{"PATCH", "/products/9", `{"name": "x"}`, http.StatusNotFound, "not_found", ""},
		{"DELETE", "/products/9", "", http.StatusNotFound, "not_found", ""},
		{"GET", "/api/products/1", "", http.StatusNotFound, "no_route", ""},
		{"PATCH", "/v1/products/1", `{"name": "x"}`, http.StatusNotFound, "no_route", ""},
		{"DELETE", "/product/1", "", http.StatusNotFound, "no_route", ""},
		{"GET", "/", "", http.StatusNotFound, "no_route", ""},
		{"PUT", "/products/1", `{"name": "x"}`, http.StatusMethodNotAllowed, "method_not_allowed", "DELETE, GET, HEAD, PATCH"},
		{"DELETE", "/products", "", http.StatusMethodNotAllowed, "method_not_allowed", "GET, HEAD, POST"},
		{"PATCH", "/products/1", `{"colour": "red"}`, http.StatusBadRequest, "bad_request", ""},
		{"POST", "/orders", `{"customer_id": "7"}`, http.StatusUnprocessableEntity, "invalid", ""},
	} {
		req, _ := http.NewRequest(tc.method, srv.URL+tc.path, strings.NewReader(tc.body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var e struct{ Error, Code string }
		derr := json.NewDecoder(resp.Body).Decode(&e)
		resp.Body.Close()
		if resp.StatusCode != tc.status || derr != nil || e.Code != tc.code || e.Error == "" {
			t.Errorf("%s %s: %d %+v (%v), want %d %q", tc.method, tc.path, resp.StatusCode, e, derr, tc.status, tc.code)
		}
		if got := resp.Header.Get("Allow"); got != tc.allow {
			t.Errorf("%s %s: Allow %q, want %q", tc.method, tc.path, got, tc.allow)
		}
	}
	if got := do(t, srv, "GET", "/products/1", "", ""); got != http.StatusOK {
		t.Fatalf("record 1 after the calls: %d, want 200", got)
	}
}
