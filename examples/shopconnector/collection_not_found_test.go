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
func TestAdapterCollectionNotFoundIsNotMissing(t *testing.T) {
	for _, c := range []struct {
		name, answer, path, id string
		adapter                func(base string) (units.Adapter, error)
	}{
		{"shop", `{"error": {"code": "not_found", "message": "no such collection here"}}`, "/v1/products", "7",
			func(base string) (units.Adapter, error) {
				return shopconnector.NewShopAdapter(nil, base, "v1", "product", "items")
			}},
		{"catalog", `{"error": "no such collection here", "code": "not_found"}`, "/products", "c7",
			func(base string) (units.Adapter, error) { return shopconnector.NewCatalogAdapter(nil, base, "product") }},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv := notFoundServer(c.answer)
			defer srv.Close()
			a, err := c.adapter(srv.URL)
			if err != nil {
				t.Fatal(err)
			}
			list := srv.URL + c.path
			checkNotMissing(t, "search", list, "no such collection here", func(ctx context.Context) error {
				_, err := a.Search(ctx, units.Query{})
				return err
			})
			checkNotMissing(t, "create", list, "no such collection here", func(ctx context.Context) error {
				_, err := a.Create(ctx, units.Record{"name": "Cup"})
				return err
			})
			if rw, ok := a.(units.ReturningWriter); ok {
				checkNotMissing(t, "create returning", list, "no such collection here", func(ctx context.Context) error {
					_, _, err := rw.CreateReturning(ctx, units.Record{"name": "Cup"})
					return err
				})
			}
			// The same answer on a record's URL is still the record's absence.
			id := c.id
			checkRecordMissing(t, "read", id, func(ctx context.Context) error { _, err := a.Read(ctx, id, nil); return err })
			checkRecordMissing(t, "write", id, func(ctx context.Context) error { return a.Write(ctx, id, units.Record{"name": "x"}) })
			checkRecordMissing(t, "delete", id, func(ctx context.Context) error { return a.Delete(ctx, id) })
		})
	}
}

// notFoundServer answers every request 404 with the JSON body answer.
func notFoundServer(answer string) *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		_, _ = io.WriteString(w, answer)
	}))
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
