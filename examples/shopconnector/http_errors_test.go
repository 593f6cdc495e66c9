package shopconnector_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/connector-go/connector/examples/shop"
	"github.com/connector-go/connector/examples/shopconnector"
	"github.com/connector-go/connector/job"
	"github.com/connector-go/connector/units"
)

// Retry-After is seconds or an HTTP date (RFC 9110 10.2.3); either way the
// retry waits as long as the server asks, not the retry pattern's delay.
func TestShopAdapterRetryAfterDate(t *testing.T) {
	at := time.Now().Add(time.Minute).UTC().Truncate(time.Second)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", at.Format(http.TimeFormat))
		w.WriteHeader(http.StatusTooManyRequests)
	}))
	defer srv.Close()
	a, err := shopconnector.NewShopAdapter(nil, srv.URL, "v1", "product", "items")
	if err != nil {
		t.Fatal(err)
	}
	_, err = a.Read(context.Background(), "1", nil)
	r, ok := job.AsRetryable(err)
	if !ok || r.Delay < 50*time.Second || r.Delay > time.Minute {
		t.Fatalf("429 with Retry-After %s: %v (retryable %v, delay %v), want a retry in about 1m", at.Format(http.TimeFormat), err, ok, r.Delay)
	}
}

// A validation error (422) is permanent and says what the shop said.
func TestShopAdapterValidationErrorQuotesTheShop(t *testing.T) {
	srv := httptest.NewServer(shop.NewServer())
	defer srv.Close()
	a, err := shopconnector.NewShopAdapter(nil, srv.URL, "v1", "product", "items")
	if err != nil {
		t.Fatal(err)
	}
	_, err = a.Create(context.Background(), units.Record{"name": ""})
	if err == nil || isRetryable(err) || !strings.Contains(err.Error(), "a product needs a name") {
		t.Fatalf("create without a name: %v, want a permanent error with the shop's message", err)
	}
}

// A shop that does not answer in time is retried (the HTTP client's timeout).
func TestShopAdapterTimeoutIsRetryable(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	a, err := shopconnector.NewShopAdapter(&http.Client{Timeout: 100 * time.Millisecond}, srv.URL, "v1", "product", "items")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Read(context.Background(), "1", nil); !isRetryable(err) {
		t.Fatalf("timeout: %v, want retryable", err)
	}
}

// Every answer's body is read and closed, errors included: the calls share
// one keep-alive connection instead of opening (and leaking) one each.
func TestShopAdapterReusesConnections(t *testing.T) {
	srv := httptest.NewUnstartedServer(shop.NewServer(shop.WithSampleData()))
	var conns atomic.Int32
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	defer hc.CloseIdleConnections()
	a, err := shopconnector.NewShopAdapter(hc, srv.URL, "v1", "product", "items")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := 0; i < 20; i++ {
		_, _ = a.Read(ctx, "1", nil)                   // 200
		_, _ = a.Read(ctx, "999", nil)                 // 404
		_, _ = a.Create(ctx, units.Record{"name": ""}) // 422
		_, _ = a.Search(ctx, units.Query{})            // list
		injectDrained(t, srv.URL, `{"status": 503, "count": 1}`)
		_, _ = a.Read(ctx, "1", nil) // 503
	}
	// injectDrained uses http.DefaultClient: one connection of its own.
	if n := conns.Load(); n > 2 {
		t.Fatalf("%d connections for 100 sequential calls, want the adapter's one reused", n)
	}
}

// injectDrained sets the shop's faults, reading the answer to its end (so
// that its own client reuses its connection).
func injectDrained(t *testing.T, base, body string) {
	t.Helper()
	resp, err := http.Post(base+"/admin/faults", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
}
