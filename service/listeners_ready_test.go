package service_test

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"

	"github.com/connector-go/connector/events"
	"github.com/connector-go/connector/internal/telemetry"
	"github.com/connector-go/connector/service"
	"github.com/connector-go/connector/worker"
)

// readyReport is the process's /readyz: status and report.
func readyReport(t *testing.T, p *proc) (int, telemetry.ReadyReport) {
	t.Helper()
	code, body := get(p.base + "/readyz")
	var rep telemetry.ReadyReport
	if err := json.Unmarshal([]byte(body), &rep); err != nil {
		t.Fatalf("/readyz %d %q: %v", code, body, err)
	}
	return code, rep
}

// The listeners of Env.Listeners hold the process's /readyz (check
// "events") until they listen: when it first answers 200, they do. A
// process without listeners has no such check.
// (internal/app's TestReadyzWaitsForTheListeners holds listeners while
// they start and sees the 503.)
func TestReadyzChecksTheListeners(t *testing.T) {
	got := make(chan *events.Listeners, 1)
	p := run(t, worker.NewRegistry(), nil, func(_ context.Context, env *service.Env) error {
		l, err := env.Listeners()
		if err != nil {
			return err
		}
		got <- l
		return l.On("ready_partner", "res.partner", "", func(context.Context, events.Event) error { return nil }, events.WithPartitions(1))
	})
	p.ready(t)
	if err := (<-got).Ready(); err != nil {
		t.Errorf("/readyz 200 while the listeners are not listening: %v", err)
	}
	if code, rep := readyReport(t, p); code != http.StatusOK || rep.Checks["events"] != "ok" {
		t.Errorf("/readyz of a process with listeners: %d %+v, want 200 with events ok", code, rep)
	}

	bare := run(t, worker.NewRegistry(), nil)
	bare.ready(t)
	if _, rep := readyReport(t, bare); rep.Checks["events"] != "" {
		t.Errorf("/readyz of a process without listeners: %+v, want no events check", rep)
	}
}
