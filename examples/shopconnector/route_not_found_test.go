package shopconnector_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/connector-go/connector/examples/catalog"
	"github.com/connector-go/connector/examples/shop"
	"github.com/connector-go/connector/examples/shopconnector"
	"github.com/connector-go/connector/units"
)

// A 404 is "the record is gone" (units.Missing) only when the answer says
// so: a 404 for a path the server does not serve at all (a wrong base URL,
// an API version the shop lacks, a proxy in front) must not read as a
// deleted record, or a Read or Write of a bound record would unbind it or
// create it again, and a Delete would succeed without deleting anything.
// It is a permanent error (a wrong path does not fix itself: the job is
// dead-lettered) that names the URL.
func TestShopAdapterUnknownRouteIsNotMissing(t *testing.T) {
	srv := httptest.NewServer(shop.NewServer(shop.WithSampleData()))
	defer srv.Close()
	// A proxy in front of the shop that knows no such path: plain-text 404.
	proxy := httptest.NewServer(http.HandlerFunc(http.NotFound))
	defer proxy.Close()
	for _, tc := range []struct{ name, base, version string }{
		{"wrong prefix", srv.URL + "/api", "v1"},
		{"unknown version", srv.URL, "v3"},
		{"proxy's 404", proxy.URL, "v1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := shopconnector.NewShopAdapter(nil, tc.base, tc.version, "product", "items")
			if err != nil {
				t.Fatal(err)
			}
			url := tc.base + "/" + tc.version + "/products/1"
			checkNotMissing(t, "read", url, "", func(ctx context.Context) error { _, err := a.Read(ctx, "1", nil); return err })
			checkNotMissing(t, "write", url, "", func(ctx context.Context) error { return a.Write(ctx, "1", units.Record{"name": "x"}) })
			checkNotMissing(t, "write returning", url, "", func(ctx context.Context) error {
				_, err := a.WriteReturning(ctx, "1", units.Record{"name": "x"})
				return err
			})
			checkNotMissing(t, "delete", url, "", func(ctx context.Context) error { return a.Delete(ctx, "1") })
			checkNotMissing(t, "search", tc.base+"/"+tc.version+"/products", "", func(ctx context.Context) error {
				_, err := a.Search(ctx, units.Query{})
				return err
			})
		})
	}
	// On the right path, a record the shop does not have is still missing,
	// and the wrong-path calls above left record 1 alone.
	a, err := shopconnector.NewShopAdapter(nil, srv.URL, "v1", "product", "items")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := a.Read(ctx, "999", nil); !errors.Is(err, units.ErrMissing) {
		t.Fatalf("read of a record the shop lacks: %v, want units.ErrMissing", err)
	}
	if err := a.Delete(ctx, "999"); !errors.Is(err, units.ErrMissing) {
		t.Fatalf("delete of a record the shop lacks: %v, want units.ErrMissing", err)
	}
	if rec, err := a.Read(ctx, "1", nil); err != nil || rec["name"] != "Espresso cup" {
		t.Fatalf("record 1 after the wrong-path calls: %v %v, want it unchanged", rec, err)
	}
}

// The same holds for the catalog adapter (the local side).
func TestCatalogAdapterUnknownRouteIsNotMissing(t *testing.T) {
	srv := httptest.NewServer(catalog.New())
	defer srv.Close()
	ok, err := shopconnector.NewCatalogAdapter(nil, srv.URL, "product")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	id, err := ok.Create(ctx, units.Record{"name": "Cup", "price": 6.5})
	if err != nil {
		t.Fatal(err)
	}
	a, err := shopconnector.NewCatalogAdapter(nil, srv.URL+"/api", "product")
	if err != nil {
		t.Fatal(err)
	}
	url := srv.URL + "/api/products/" + id
	checkNotMissing(t, "read", url, "", func(ctx context.Context) error { _, err := a.Read(ctx, id, nil); return err })
	checkNotMissing(t, "write", url, "", func(ctx context.Context) error { return a.Write(ctx, id, units.Record{"name": "x"}) })
	checkNotMissing(t, "delete", url, "", func(ctx context.Context) error { return a.Delete(ctx, id) })

	if _, err := ok.Read(ctx, "999", nil); !errors.Is(err, units.ErrMissing) {
		t.Fatalf("read of a record the catalog lacks: %v, want units.ErrMissing", err)
	}
	if rec, err := ok.Read(ctx, id, nil); err != nil || rec["name"] != "Cup" {
		t.Fatalf("record %s after the wrong-path calls: %v %v, want it unchanged", id, rec, err)
	}
}

// checkNotMissing runs call and fails unless it returned a permanent error,
// not units.ErrMissing, naming url (and quoting quote, unless "").
func checkNotMissing(t *testing.T, what, url, quote string, call func(context.Context) error) {
	t.Helper()
	err := call(context.Background())
	switch {
	case err == nil:
		t.Errorf("%s at %s: no error, want a permanent error", what, url)
	case errors.Is(err, units.ErrMissing):
		t.Errorf("%s at %s: %v, a 404 that names no missing record read as one", what, url, err)
	case isRetryable(err):
		t.Errorf("%s at %s: %v, retryable: a wrong path or a missing collection does not come back by itself", what, url, err)
	case !strings.Contains(err.Error(), url):
		t.Errorf("%s: %v, want the error to name %s", what, err, url)
	case !strings.Contains(err.Error(), quote):
		t.Errorf("%s at %s: %v, want the error to quote the answer (%q)", what, url, err, quote)
	}
}

// An error quotes at most an excerpt of the answer's body: a proxy's large
// HTML page must not fill the job's record and its dead letter.
func TestAdapterErrorsQuoteAnExcerpt(t *testing.T) {
	page := strings.Repeat("<p>not here</p>", 10_000) // 150 kB
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNotFound)
		_, _ = io.WriteString(w, page)
	}))
	defer proxy.Close()
	a, err := shopconnector.NewShopAdapter(nil, proxy.URL, "v1", "product", "items")
	if err != nil {
		t.Fatal(err)
	}
	_, err = a.Read(context.Background(), "1", nil)
	if err == nil || len(err.Error()) > 1024 || !strings.Contains(err.Error(), "150000 bytes") {
		t.Fatalf("error of %d bytes, want an excerpt naming the body's size: %.200v", len(fmt.Sprint(err)), err)
	}
}
