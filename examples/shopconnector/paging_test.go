package shopconnector_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/connector-go/connector/examples/shop"
	"github.com/connector-go/connector/examples/shopconnector"
	"github.com/connector-go/connector/units"
	"github.com/connector-go/connector/units/unitstest"
)

// The shop pages by at most 100 records; a query for more (a batch importer
// with a PageSize over 100) must still get every record it asks for, at the
// offset it asks for. Else a batch import takes the short page for the last
// one and stops: the records after the first 100 are never imported.
func TestShopAdapterPagesBeyondTheShopsPageSize(t *testing.T) {
	ctx := context.Background()
	const n = 250
	for _, v := range []struct{ version, key, name string }{{"v1", "items", "name"}, {"v2", "data", "title"}} {
		t.Run(v.version, func(t *testing.T) {
			// Stamps an hour ago: older than the adapter's SearchSettle.
			var mu sync.Mutex
			past := time.Now().Add(-time.Hour)
			clock := func() time.Time { mu.Lock(); defer mu.Unlock(); past = past.Add(time.Millisecond); return past }
			srv := httptest.NewServer(shop.NewServer(shop.WithClock(clock)))
			defer srv.Close()
			for i := 1; i <= n; i++ {
				body := fmt.Sprintf(`{%q: "product %d"}`, v.name, i)
				resp, err := http.Post(srv.URL+"/"+v.version+"/products", "application/json", bytes.NewReader([]byte(body)))
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusCreated {
					t.Fatalf("create product %d: %s", i, resp.Status)
				}
			}
			want := func(from, to int) string {
				var ids []string
				for i := from; i <= to; i++ {
					ids = append(ids, fmt.Sprint(i))
				}
				return strings.Join(ids, ",")
			}

			a, err := shopconnector.NewShopAdapter(nil, srv.URL, v.version, "product", v.key)
			if err != nil {
				t.Fatal(err)
			}
			for _, q := range []struct {
				q        units.Query
				from, to int
			}{
				{units.Query{Limit: 150}, 1, 150},
				{units.Query{Offset: 150, Limit: 150}, 151, 250},
				{units.Query{Offset: 200, Limit: 200}, 201, 250},
				{units.Query{Offset: 0, Limit: 200}, 1, 200},
				{units.Query{Offset: 4, Limit: 2}, 5, 6},
				{units.Query{}, 1, 250},
			} {
				ids, err := a.Search(ctx, q.q)
				if err != nil {
					t.Fatalf("search %+v: %v", q.q, err)
				}
				if got := strings.Join(ids, ","); got != want(q.from, q.to) {
					t.Errorf("search offset %d limit %d: %d ids (%s...), want %d-%d", q.q.Offset, q.q.Limit, len(ids),
						got[:min(len(got), 20)], q.from, q.to)
				}
			}

			// A delayed batch import with pages of 150 enqueues one import
			// per shop record.
			reg, err := shopconnector.Units(nil)
			if err != nil {
				t.Fatal(err)
			}
			trap := unitstest.NewTrap()
			env := units.Env{Backends: units.Backends(shopconnector.Shop("s", v.version, srv.URL)), Jobs: trap}
			w, err := reg.Work(ctx, env, "s", "product")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := (&units.BatchImporter{Delayed: true, PageSize: 150}).Run(ctx, w, nil); err != nil {
				t.Fatal(err)
			}
			if got := len(unitstest.ArgsOf[units.ImportRecord](trap)); got != n {
				t.Fatalf("batch import with pages of 150: %d import jobs, want %d", got, n)
			}
		})
	}
}
