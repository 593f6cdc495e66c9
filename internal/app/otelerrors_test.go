package app_test

import (
	"bytes"
	"context"
	"errors"
	"log"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/connector-go/connector/internal/app"
	"github.com/connector-go/connector/internal/telemetry"
	"go.opentelemetry.io/otel"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// OpenTelemetry's own errors (here: a backlog gauge whose callback fails
// at a scrape, as during a NATS outage; a failed span export is another)
// reach the process's JSON log, redacted, instead of plain lines that
// OpenTelemetry's default handler prints on standard error.
func TestOTelErrorsGoToTheLog(t *testing.T) {
	var std bytes.Buffer
	log.SetOutput(&std) // where OpenTelemetry's default handler prints
	t.Cleanup(func() { log.SetOutput(os.Stderr) })
	t.Cleanup(func() { otel.SetErrorHandler(telemetry.OTelErrors(zap.NewNop())) })

	cfg, _, _ := serversConfig(t)
	core, logs := observer.New(zap.WarnLevel)
	conns, err := app.Open(context.Background(), &cfg, zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	defer conns.Close()
	m, err := telemetry.NewMetrics(conns.Telemetry.MeterProvider)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.ObserveBacklog(func(context.Context) (map[string]int64, error) {
		return nil, errors.New("backlog: nats://worker:S3cretPw@nats:4222: nats: connection closed")
	}); err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	conns.Telemetry.MetricsHandler.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))

	var got []string
	for _, e := range logs.FilterLoggerName("otel").All() {
		got = append(got, e.ContextMap()["error"].(string))
	}
	if len(got) == 0 || !strings.Contains(strings.Join(got, "\n"), "connection closed") {
		t.Errorf("no OpenTelemetry error in the process's log (standard error got %q)", std.String())
	}
	if s := strings.Join(got, "\n") + std.String(); strings.Contains(s, "S3cretPw") {
		t.Errorf("password logged: %s", s)
	}
	if std.Len() > 0 {
		t.Errorf("plain lines on standard error: %q", std.String())
	}
}
