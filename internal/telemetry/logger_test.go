package telemetry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/connector-go/connector/internal/testenv"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

func TestRedact(t *testing.T) {
	cases := []struct{ in, want string }{
		{"nats://u:pw@h:4222", "nats://u:xxxxx@h:4222"},
		{"nats://tok@h:4222", "nats://xxxxx@h:4222"},
		{"redis://:pw@h:6379/0", "redis://:xxxxx@h:6379/0"},
		{"rediss://user:s3cr%40t@h:6380", "rediss://user:xxxxx@h:6380"},
		{"https://api.example.com/v1/orders?id=7&token=abc123&x=1", "https://api.example.com/v1/orders?id=7&token=xxxxx&x=1"},
		{"https://h/p?access_token=abc", "https://h/p?access_token=xxxxx"},
		{"https://h/p?API_KEY=abc#frag", "https://h/p?API_KEY=xxxxx#frag"},
		{"dial nats://a:b@h1:4222,nats://c:d@h2:4222: refused", "dial nats://a:xxxxx@h1:4222,nats://c:xxxxx@h2:4222: refused"},
		{"connect redis://default:p@ss:w0rd@db:6379: timeout", "connect redis://default:xxxxx@db:6379: timeout"},
		{"host=db user=app password=hunter2 sslmode=disable", "host=db user=app password=xxxxx sslmode=disable"},
		{"Authorization: Bearer eyJhbGciOi.x-y_z", "Authorization: Bearer xxxxx"},
		// Left alone.
		{"https://shop.example.com/orders/42", "https://shop.example.com/orders/42"},
		{"https://user@github.com/x", "https://user@github.com/x"},
		{"redis://h:6379/0", "redis://h:6379/0"},
		{"nats://h:4222", "nats://h:4222"},
		{"job done in 3s, key=order-7", "job done in 3s, key=order-7"},
		{"plain text, no secrets", "plain text, no secrets"},
		{"", ""},
	}
	for _, c := range cases {
		if got := Redact(c.in); got != c.want {
			t.Errorf("Redact(%q)\n got %q\nwant %q", c.in, got, c.want)
		}
		if got := Redact(Redact(c.in)); got != c.want {
			t.Errorf("Redact not idempotent on %q: %q", c.in, got)
		}
	}
}

func TestNewLoggerJSON(t *testing.T) {
	var buf bytes.Buffer
	log, err := NewLogger("info", "json", WithLogOutput(&buf))
	if err != nil {
		t.Fatal(err)
	}
	const secret = "Sup3rS3cret"
	url := "nats://worker:" + secret + "@nats.internal:4222"
	log.Debug("hidden at info level")
	log.Info("connecting", RedactedURL("url", url), zap.String("redis", Redact("redis://:"+secret+"@r:6379")))
	log.Error("connect failed", zap.String("error", Redact(errors.New("dial "+url+": refused").Error())))
	_ = log.Sync()

	out := buf.String()
	if strings.Contains(out, secret) {
		t.Fatalf("password logged:\n%s", out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 {
		t.Fatalf("want 2 lines (debug filtered), got %d:\n%s", len(lines), out)
	}
	var rec map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &rec); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, lines[0])
	}
	for _, k := range []string{"ts", "level", "caller", "msg", "url", "redis"} {
		if _, ok := rec[k]; !ok {
			t.Errorf("field %q missing in %v", k, rec)
		}
	}
	if rec["level"] != "info" || rec["msg"] != "connecting" || rec["url"] != "nats://worker:xxxxx@nats.internal:4222" {
		t.Errorf("unexpected record %v", rec)
	}
	if err := json.Unmarshal([]byte(lines[1]), &rec); err != nil {
		t.Fatal(err)
	}
	if _, ok := rec["stacktrace"]; !ok {
		t.Errorf("error record without stacktrace: %v", rec)
	}
}

func TestNewLoggerConsoleAndErrors(t *testing.T) {
	var buf bytes.Buffer
	log, err := NewLogger("debug", "console", WithLogOutput(&buf))
	if err != nil {
		t.Fatal(err)
	}
	log.Debug("hello", zap.Int("n", 1))
	if out := buf.String(); !strings.Contains(out, "hello") || strings.HasPrefix(out, "{") {
		t.Fatalf("console output %q", out)
	}
	if _, err := NewLogger("loud", "json"); err == nil {
		t.Error("bad level accepted")
	}
	if _, err := NewLogger("info", "xml"); err == nil {
		t.Error("bad format accepted")
	}
}

func TestTraceFields(t *testing.T) {
	if f := TraceFields(context.Background()); f != nil {
		t.Errorf("fields without span: %v", f)
	}
	tr, _ := newTestTracer(t)
	ctx, span := tr.Start(context.Background(), "job")
	defer span.End()
	var buf bytes.Buffer
	log, err := NewLogger("info", "json", WithLogOutput(&buf))
	if err != nil {
		t.Fatal(err)
	}
	log.With(TraceFields(ctx)...).Info("done")
	var rec map[string]any
	if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
		t.Fatal(err)
	}
	if rec["trace_id"] != span.SpanContext().TraceID().String() || rec["span_id"] != span.SpanContext().SpanID().String() {
		t.Errorf("record %v", rec)
	}
}

// go-redis's own log lines (a failed dial during an outage) come out as
// JSON lines of the process's logger, at warn level and redacted, instead
// of plain lines on standard error.
func TestRedisLogs(t *testing.T) {
	var buf testenv.Buffer
	log, err := NewLogger("info", "json", WithLogOutput(&buf))
	if err != nil {
		t.Fatal(err)
	}
	redis.SetLogger(RedisLogs(log))
	t.Cleanup(func() { redis.SetLogger(RedisLogs(zap.NewNop())) })

	c := redis.NewClient(&redis.Options{Addr: testenv.FreeAddr(t), MaxRetries: -1})
	if err := c.Ping(context.Background()).Err(); err == nil {
		t.Fatal("ping of a closed port succeeded")
	}
	_ = c.Close()
	RedisLogs(log).Printf(context.Background(), "sentinel: dial %s failed", "redis://:Sup3rS3cret@r:6379")
	_ = log.Sync()

	out := buf.String()
	if strings.Contains(out, "Sup3rS3cret") {
		t.Fatalf("password logged:\n%s", out)
	}
	var dial bool
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("not JSON: %v\n%s", err, line)
		}
		if rec["level"] != "warn" || rec["logger"] != "go-redis" {
			t.Errorf("level %v, logger %v; want warn, go-redis: %s", rec["level"], rec["logger"], line)
		}
		msg, _ := rec["msg"].(string)
		caller, _ := rec["caller"].(string)
		if strings.Contains(msg, "failed to dial") {
			dial = true
			if caller == "" || strings.HasPrefix(caller, "telemetry/") || strings.HasPrefix(caller, "internal/log") {
				t.Errorf("caller %q, want go-redis's line that logged (pool/pool.go)", caller)
			}
		}
	}
	if !dial {
		t.Fatalf("no line for the failed dial:\n%s", out)
	}
}
