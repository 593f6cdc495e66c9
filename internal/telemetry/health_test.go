package telemetry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/connector-go/connector/internal/testenv"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func readyz(t *testing.T, base string) (int, ReadyReport) {
	t.Helper()
	code, body := get(t, base+"/readyz")
	var rep ReadyReport
	if err := json.Unmarshal([]byte(body), &rep); err != nil {
		t.Fatalf("/readyz body %q: %v", body, err)
	}
	return code, rep
}

// TestReadyz wires the ready-made checks to real servers: all pass (200),
// then Redis is unreachable (503), then the NATS server goes away (503).
func TestReadyz(t *testing.T) {
	ns, nc, js := testenv.JetStream(t)
	rdb, _ := testenv.Redis(t)
	ctx := context.Background()
	stream := "T" + strings.ToUpper(testenv.Prefix(t))
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: stream, Subjects: []string{stream + ".>"}}); err != nil {
		t.Fatal(err)
	}

	h := NewHealth(nil)
	h.SetCheckTimeout(time.Second)
	h.AddCheck("nats", NATSCheck(nc))
	h.AddCheck("streams", StreamsCheck(js, stream))
	h.AddCheck("redis", RedisCheck(rdb))
	srv := httptest.NewServer(h.Handler(nil))
	defer srv.Close()

	code, rep := readyz(t, srv.URL)
	if code != http.StatusOK || rep.Status != "ok" || len(rep.Failed) != 0 {
		t.Fatalf("all good: %d %+v", code, rep)
	}
	if code, body := get(t, srv.URL+"/livez"); code != http.StatusOK {
		t.Fatalf("/livez %d %s", code, body)
	}
	if code, _ := get(t, srv.URL+"/metrics"); code != http.StatusNotFound {
		t.Errorf("/metrics without handler: %d, want 404", code)
	}

	t.Run("redis down", func(t *testing.T) {
		bad := redis.NewClient(&redis.Options{Addr: testenv.FreeAddr(t), Password: "hunter2", MaxRetries: -1, DialTimeout: 500 * time.Millisecond})
		defer bad.Close()
		h2 := NewHealth(nil)
		h2.AddCheck("nats", NATSCheck(nc))
		h2.AddCheck("redis", RedisCheck(bad))
		srv2 := httptest.NewServer(h2.Handler(nil))
		defer srv2.Close()
		code, rep := readyz(t, srv2.URL)
		if code != http.StatusServiceUnavailable || rep.Status != "unavailable" {
			t.Fatalf("redis down: %d %+v", code, rep)
		}
		if fmt.Sprint(rep.Failed) != "[redis]" || rep.Checks["nats"] != "ok" || rep.Checks["redis"] == "ok" {
			t.Errorf("report %+v", rep)
		}
	})

	t.Run("missing stream", func(t *testing.T) {
		h2 := NewHealth(nil)
		h2.AddCheck("streams", StreamsCheck(js, stream, stream+"_MISSING"))
		srv2 := httptest.NewServer(h2.Handler(nil))
		defer srv2.Close()
		code, rep := readyz(t, srv2.URL)
		if code != http.StatusServiceUnavailable || !strings.Contains(rep.Checks["streams"], stream+"_MISSING") {
			t.Fatalf("missing stream: %d %+v", code, rep)
		}
	})

	// Last: take NATS away.
	ns.Server.Shutdown()
	ns.Server.WaitForShutdown()
	testenv.Eventually(t, 10*time.Second, func() bool { return nc.Status() != nats.CONNECTED }, "client notices the server is gone")
	code, rep = readyz(t, srv.URL)
	if code != http.StatusServiceUnavailable {
		t.Fatalf("nats down: %d %+v", code, rep)
	}
	if rep.Checks["redis"] != "ok" || rep.Checks["nats"] == "ok" || rep.Checks["streams"] == "ok" {
		t.Errorf("report %+v", rep)
	}
	if !strings.Contains(rep.Checks["nats"], "not connected") {
		t.Errorf("nats check says %q", rep.Checks["nats"])
	}
	if code, _ := get(t, srv.URL+"/livez"); code != http.StatusOK {
		t.Errorf("/livez %d while NATS is down, want 200", code)
	}
}

func TestReadyzRedactsAndTimesOut(t *testing.T) {
	h := NewHealth(nil)
	h.SetCheckTimeout(100 * time.Millisecond)
	h.AddCheck("backend", func(ctx context.Context) error {
		return errors.New("GET https://shop.example.com/api?token=abc123: 401")
	})
	block := make(chan struct{})
	defer close(block)
	h.AddCheck("stuck", func(ctx context.Context) error { <-block; return nil }) // ignores ctx
	h.AddCheck("fine", func(ctx context.Context) error { return nil })
	srv := httptest.NewServer(h.Handler(nil))
	defer srv.Close()

	start := time.Now()
	code, body := get(t, srv.URL+"/readyz")
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("/readyz took %s with a stuck check", d)
	}
	if code != http.StatusServiceUnavailable {
		t.Fatalf("code %d", code)
	}
	if strings.Contains(body, "abc123") || !strings.Contains(body, "token=xxxxx") {
		t.Errorf("body not redacted: %s", body)
	}
	var rep ReadyReport
	if err := json.Unmarshal([]byte(body), &rep); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(rep.Failed) != "[backend stuck]" || rep.Checks["fine"] != "ok" || !strings.Contains(rep.Checks["stuck"], "timed out") {
		t.Errorf("report %+v", rep)
	}
}

func TestDrainAndListenAndServe(t *testing.T) {
	h := NewHealth(nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- h.Serve(ctx, ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "m 1\n") }))
	}()

	if code, _ := readyz(t, base); code != http.StatusOK {
		t.Fatalf("no checks: %d", code)
	}
	if code, body := get(t, base+"/metrics"); code != http.StatusOK || body != "m 1\n" {
		t.Fatalf("/metrics %d %q", code, body)
	}
	h.Drain()
	code, rep := readyz(t, base)
	if code != http.StatusServiceUnavailable || fmt.Sprint(rep.Failed) != "[draining]" {
		t.Fatalf("draining: %d %+v", code, rep)
	}
	if code, _ := get(t, base+"/livez"); code != http.StatusOK {
		t.Fatalf("/livez while draining: %d", code)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve returned %v after ctx cancel", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after ctx cancel")
	}
	if err := h.ListenAndServe(context.Background(), "127.0.0.1:-1", nil); err == nil {
		t.Error("bad address accepted")
	}
}
