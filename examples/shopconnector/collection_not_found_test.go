package shopconnector_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/connector-go/connector/examples/shopconnector"
	"github.com/connector-go/connector/units"
)

// A 404 "not_found" means "this record is gone" only on a record's URL
// (read, write, delete by id). On the collection's URL (a search's list, a
// create's POST) there is no record to be gone: the collection itself does
// not exist there (a wrong model, a parent that is gone). Reading it as
// units.Missing would tell a synchronizer that a record was deleted (unbind
// it, or create it again); it is a permanent error naming the URL and
// quoting the answer.
func TestShopAdapterCollectionNotFoundIsNotMissing(t *testing.T) {
	const answer = `{"error": {"code": "not_found", "message": "no such collection here"}}`
	srv := notFoundServer(answer)
	defer srv.Close()
	a, err := shopconnector.NewShopAdapter(nil, srv.URL, "v1", "product", "items")
	if err != nil {
		t.Fatal(err)
	}
	list := srv.URL + "/v1/products"
	checkCollectionNotFound(t, "search", list, "no such collection here", func(ctx context.Context) error {
		_, err := a.Search(ctx, units.Query{})
		return err
	})
	checkCollectionNotFound(t, "create", list, "no such collection here", func(ctx context.Context) error {
		_, err := a.Create(ctx, units.Record{"name": "Cup"})
		return err
	})
	checkCollectionNotFound(t, "create returning", list, "no such collection here", func(ctx context.Context) error {
		_, _, err := a.CreateReturning(ctx, units.Record{"name": "Cup"})
		return err
	})
	// The same answer on a record's URL is still the record's absence.
	checkRecordMissing(t, "read", "7", func(ctx context.Context) error { _, err := a.Read(ctx, "7", nil); return err })
	checkRecordMissing(t, "write", "7", func(ctx context.Context) error { return a.Write(ctx, "7", units.Record{"name": "x"}) })
	checkRecordMissing(t, "delete", "7", func(ctx context.Context) error { return a.Delete(ctx, "7") })
}

// The same holds for the catalog adapter, in the catalog's error format.
func TestCatalogAdapterCollectionNotFoundIsNotMissing(t *testing.T) {
	const answer = `{"error": "no such collection here", "code": "not_found"}`
	srv := notFoundServer(answer)
	defer srv.Close()
	a, err := shopconnector.NewCatalogAdapter(nil, srv.URL, "product")
	if err != nil {
		t.Fatal(err)
	}
	list := srv.URL + "/products"
	checkCollectionNotFound(t, "search", list, "no such collection here", func(ctx context.Context) error {
		_, err := a.Search(ctx, units.Query{})
		return err
	})
	checkCollectionNotFound(t, "create", list, "no such collection here", func(ctx context.Context) error {
		_, err := a.Create(ctx, units.Record{"name": "Cup"})
		return err
	})
	checkRecordMissing(t, "read", "c7", func(ctx context.Context) error { _, err := a.Read(ctx, "c7", nil); return err })
	checkRecordMissing(t, "write", "c7", func(ctx context.Context) error { return a.Write(ctx, "c7", units.Record{"name": "x"}) })
	checkRecordMissing(t, "delete", "c7", func(ctx context.Context) error { return a.Delete(ctx, "c7") })
}

// notFoundServer answers every request 404 with the JSON body answer.
func notFoundServer(answer string) *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		_, _ = io.WriteString(w, answer)
	}))
}

// checkCollectionNotFound runs call and fails unless it returned a
// permanent error, not units.ErrMissing, naming url and quoting quote.
func checkCollectionNotFound(t *testing.T, what, url, quote string, call func(context.Context) error) {
	t.Helper()
	err := call(context.Background())
	switch {
	case err == nil:
		t.Errorf("%s at %s: no error, want a permanent error", what, url)
	case errors.Is(err, units.ErrMissing):
		t.Errorf("%s at %s: %v, a not_found on the collection read as a missing record", what, url, err)
	case isRetryable(err):
		t.Errorf("%s at %s: %v, retryable: a missing collection does not come back by itself", what, url, err)
	case !strings.Contains(err.Error(), url):
		t.Errorf("%s: %v, want the error to name %s", what, err, url)
	case !strings.Contains(err.Error(), quote):
		t.Errorf("%s at %s: %v, want the error to quote the answer (%q)", what, url, err, quote)
	}
}

// checkRecordMissing runs call and fails unless it returned units.ErrMissing
// naming the record id.
func checkRecordMissing(t *testing.T, what, id string, call func(context.Context) error) {
	t.Helper()
	err := call(context.Background())
	if !errors.Is(err, units.ErrMissing) || !strings.Contains(err.Error(), id) {
		t.Errorf("%s of record %s: %v, want units.ErrMissing naming %s", what, id, err, id)
	}
}
