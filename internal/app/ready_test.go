package app_test

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/connector-go/connector/events"
	"github.com/connector-go/connector/internal/app"
	"github.com/connector-go/connector/internal/telemetry"
	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/worker"
	"go.uber.org/zap/zaptest"
)

// readyz answers GET /readyz at base: its status and report.
func readyz(t *testing.T, base string) (int, telemetry.ReadyReport) {
	t.Helper()
	resp, err := http.Get(base + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var rep telemetry.ReadyReport
	if err := json.NewDecoder(resp.Body).Decode(&rep); err != nil {
		t.Fatalf("/readyz body: %v", err)
	}
	return resp.StatusCode, rep
}

// A part with a readiness check holds /readyz: a process whose event
// listeners are still creating their consumers answers 503, naming the
// listeners' check, and 200 once they listen. (In a rolling update, the
// new pod would otherwise count as ready, and the old ones be stopped,
// before it handles any event.)
func TestReadyzWaitsForTheListeners(t *testing.T) {
	cfg, srv, prefix := serversConfig(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + ln.Addr().String()
	cfg.HTTPAddr, cfg.HTTPListener = "", ln
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	conns, err := app.Open(ctx, &cfg, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conns.Close()

	js, held, release := testenv.HeldAPI(t, srv, "CONSUMER.CREATE.")
	l, err := events.NewListeners(js, events.WithPrefix(prefix), events.WithRedis(conns.Redis), events.WithLogger(zaptest.NewLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	if err := l.On("readyz_probe", "res.partner", "", func(context.Context, events.Event) error { return nil }); err != nil {
		t.Fatal(err)
	}
	listeners := app.ReadyService{Service: l.Run, Name: "events", Ready: func(context.Context) error { return l.Ready() }}

	done := make(chan error, 1)
	go func() { done <- app.RunWorker(ctx, &cfg, conns, worker.NewRegistry(), listeners) }()
	defer func() {
		release()
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("RunWorker: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("RunWorker did not return")
		}
	}()
	select {
	case <-held:
	case err := <-done:
		t.Fatalf("RunWorker returned before the listeners created their consumers: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the listeners did not come to create their consumers")
	}
	code, rep := readyz(t, base)
	if code != http.StatusServiceUnavailable || !slices.Equal(rep.Failed, []string{"events"}) {
		t.Fatalf("/readyz while the listeners create their consumers: %d %+v, want 503 failing on events alone", code, rep)
	}
	t.Logf("/readyz while the listeners start: %d %+v", code, rep)
	release()
	testenv.Eventually(t, 20*time.Second, func() bool {
		code, rep = readyz(t, base)
		return code == http.StatusOK
	}, "/readyz 200 once the listeners listen (last: %d %+v)", code, rep)
	if rep.Checks["events"] != "ok" {
		t.Errorf("/readyz 200 without the events check: %+v", rep)
	}
}
