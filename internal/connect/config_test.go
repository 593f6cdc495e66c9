package connect_test

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/connector-go/connector/internal/connect"
	"github.com/connector-go/connector/internal/testenv"
)

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"nats://u:secret@h":                         "nats://u:xxxxx@h",
		"redis://:pw@h":                             "redis://:xxxxx@h",
		"rediss://user:pw@h:6380/0":                 "rediss://user:xxxxx@h:6380/0",
		"nats://tok@h:4222":                         "nats://xxxxx@h:4222",
		"tls://a:b@h1:4222,tls://c:d@h2:4222":       "tls://a:xxxxx@h1:4222,tls://c:xxxxx@h2:4222",
		"https://h/p?token=abc&x=1":                 "https://h/p?token=xxxxx&x=1",
		"dial nats://u:p@h: connection refused":     "dial nats://u:xxxxx@h: connection refused",
		"redis://h:6379/0":                          "redis://h:6379/0",
		"redis://user@h:6379":                       "redis://user@h:6379",
		"Authorization: Bearer abc.def":             "Authorization: Bearer xxxxx",
		"redis+cluster://u:pw@h1:1,h2:2?password=x": "redis+cluster://u:xxxxx@h1:1,h2:2?password=xxxxx",
		"no secrets here":                           "no secrets here",
	} {
		if got := connect.Redact(in); got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestBind: defaults come from the environment, *_FILE secrets are read
// from files, flags override env, and -help never shows a secret.
func TestBind(t *testing.T) {
	pwFile := writeFile(t, "nats-pw", "file-Nats-Pw\n")
	rpwFile := writeFile(t, "redis-pw", "file-Redis-Pw\n")
	ca := newPKI(t).CA
	env := map[string]string{
		"CONNECTOR_NATS_URL":            "nats://envuser:env-Url-Pw@nats.example:4222",
		"CONNECTOR_NATS_USER":           "envuser",
		"CONNECTOR_NATS_PASSWORD_FILE":  pwFile,
		"CONNECTOR_NATS_TOKEN":          "env-Token-123",
		"CONNECTOR_NATS_CA":             ca,
		"CONNECTOR_REDIS_URL":           "rediss://:env-Redis-Url-Pw@redis.example:6380/0",
		"CONNECTOR_REDIS_USER":          "connector",
		"CONNECTOR_REDIS_PASSWORD_FILE": rpwFile,
	}
	secrets := []string{"env-Url-Pw", "file-Nats-Pw", "env-Token-123", "env-Redis-Url-Pw", "file-Redis-Pw", "flag-Pw"}

	var nc connect.NATSConfig
	var rc connect.RedisConfig
	fs := flag.NewFlagSet("connector", flag.ContinueOnError)
	var help bytes.Buffer
	fs.SetOutput(&help)
	nc.Bind(fs, func(k string) string { return env[k] })
	rc.Bind(fs, func(k string) string { return env[k] })
	if err := fs.Parse([]string{"--nats-token", "", "--redis-password", "flag-Pw"}); err != nil {
		t.Fatal(err)
	}
	if nc.URL != env["CONNECTOR_NATS_URL"] || nc.User != "envuser" || nc.PasswordFile != pwFile || nc.CAFile != ca || nc.Token != "" {
		t.Errorf("nats config from env: %+v", nc)
	}
	if rc.URL != env["CONNECTOR_REDIS_URL"] || rc.Username != "connector" || rc.Password != "flag-Pw" || rc.PasswordFile != "" {
		t.Errorf("redis config from env/flags: %+v", rc)
	}
	// The password file is what Options uses (the token was cleared by flag).
	if _, err := nc.Options(nil); err != nil {
		t.Fatalf("options: %v", err)
	}

	fs.PrintDefaults()
	var logged bytes.Buffer
	zl := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(&logged), zap.DebugLevel))
	zl.Info("config", zap.Any("nats", nc), zap.Any("redis", rc), zap.Stringer("n", nc), zap.Any("np", &nc))
	out := help.String() + nc.String() + rc.String() + fmt.Sprint(nc, rc) + fmt.Sprintf("%v %+v %#v %v %+v %#v %v %#v", nc, nc, nc, rc, rc, rc, &nc, &rc) + logged.String()
	assertNoSecret(t, out, secrets)
	for _, f := range []string{"-nats ", "-nats-creds", "-nats-nkey", "-nats-user", "-nats-password", "-nats-password-file", "-nats-token", "-nats-token-file", "-nats-inbox-prefix", "-nats-ca", "-nats-cert", "-nats-key", "-redis ", "-redis-user", "-redis-password", "-redis-password-file", "-redis-ca", "-redis-cert", "-redis-key"} {
		if !strings.Contains(help.String(), f) {
			t.Errorf("flag %s not registered:\n%s", f, help.String())
		}
	}
	if !strings.Contains(help.String(), "nats://envuser:xxxxx@nats.example:4222") {
		t.Errorf("-help should show the redacted env URL:\n%s", help.String())
	}

	// Defaults without any environment.
	var d connect.NATSConfig
	var dr connect.RedisConfig
	fs2 := flag.NewFlagSet("x", flag.ContinueOnError)
	d.Bind(fs2, func(string) string { return "" })
	dr.Bind(fs2, nil)
	if d.URL != connect.DefaultNATSURL || dr.URL != connect.DefaultRedisURL {
		t.Errorf("defaults: %q %q", d.URL, dr.URL)
	}
}

// ExampleConnectNATS connects with settings taken from flags and the
// environment, as cmd/connector does.
func ExampleConnectNATS() {
	var cfg connect.NATSConfig
	fs := flag.NewFlagSet("connector", flag.ContinueOnError)
	cfg.Bind(fs, func(string) string { return "" }) // os.Getenv in main
	_ = fs.Parse([]string{"--nats", "nats://worker:s3cret@127.0.0.1:1", "--nats-ca", "/etc/nats/ca.pem"})
	fmt.Println(cfg)
	// Output: nats://worker:xxxxx@127.0.0.1:1 ca=/etc/nats/ca.pem
}

func ExampleRedact() {
	fmt.Println(connect.Redact("redis://:pw@redis:6379/0"))
	fmt.Println(connect.Redact("dial tls://u:secret@nats:4222: i/o timeout"))
	// Output:
	// redis://:xxxxx@redis:6379/0
	// dial tls://u:xxxxx@nats:4222: i/o timeout
}

// TestConnectNATSContext: a cancelled context ends the wait for a server.
func TestConnectNATSContext(t *testing.T) {
	srv := testenv.StartNATS(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if nc, err := connect.ConnectNATS(ctx, connect.NATSConfig{URL: srv.URL}, nil); err == nil {
		// The dial may have won the race; either outcome is fine as long
		// as nothing hangs.
		nc.Close()
	}
}

// ExampleConnectRedis connects to Redis with the password from a mounted
// Secret; the URL stays free of credentials.
func ExampleConnectRedis() {
	cfg := connect.RedisConfig{
		URL:          "rediss://redis.redis.svc:6379/0",
		Username:     "connector",
		PasswordFile: "/var/run/secrets/connector/redis-password",
		CAFile:       "/var/run/secrets/connector/ca.crt",
	}
	fmt.Println(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rdb, err := connect.ConnectRedis(ctx, cfg, nil)
	if err != nil {
		return // the error names the server, never the password
	}
	defer rdb.Close()
	// Output: rediss://redis.redis.svc:6379/0 user=connector password=xxxxx ca=/var/run/secrets/connector/ca.crt
}
