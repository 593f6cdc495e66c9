package telemetry

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// Liveness never depends on NATS or Redis: while a dependency's readiness
// check hangs (a blackholed Redis) or fails, /livez answers 200 at once and
// /readyz answers 503 within the check timeout. Kubernetes then stops
// routing to the pods without restarting the fleet.
func TestLivenessIndependentOfDependencies(t *testing.T) {
	h := NewHealth(nil)
	h.SetCheckTimeout(200 * time.Millisecond)
	entered := make(chan struct{}, 16)
	stuck := make(chan struct{})
	defer close(stuck)
	h.AddCheck("redis", func(ctx context.Context) error {
		entered <- struct{}{}
		<-stuck // ignores its context, as a stuck client would
		return nil
	})
	h.AddCheck("nats", func(context.Context) error { return ErrNotConnected })
	srv := httptest.NewServer(h.Handler(nil))
	defer srv.Close()

	ready := make(chan int, 1)
	go func() {
		resp, err := http.Get(srv.URL + "/readyz")
		if err != nil {
			ready <- -1
			return
		}
		resp.Body.Close()
		ready <- resp.StatusCode
	}()
	<-entered // /readyz is in flight, its redis check stuck
	if code, body := get(t, srv.URL+"/livez"); code != http.StatusOK {
		t.Fatalf("/livez %d %q while the dependencies are down", code, body)
	}
	if code := <-ready; code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz %d, want 503", code)
	}
	h.Drain()
	if code, _ := get(t, srv.URL+"/livez"); code != http.StatusOK {
		t.Fatalf("/livez %d while draining", code)
	}
}
