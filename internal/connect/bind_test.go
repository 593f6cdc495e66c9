package connect_test

import (
	"flag"
	"io"
	"testing"

	"github.com/connector-go/connector/internal/connect"
)

// Every setting comes from its environment variable, and its flag beats
// the variable: a variable or flag wired to the wrong field fails here.
func TestBindEverySetting(t *testing.T) {
	env := map[string]string{
		"CONNECTOR_NATS_URL":            "tls://env-nats:4222",
		"CONNECTOR_NATS_CREDS":          "/env/nats.creds",
		"CONNECTOR_NATS_NKEY":           "/env/nats.nk",
		"CONNECTOR_NATS_USER":           "env-user",
		"CONNECTOR_NATS_PASSWORD":       "env-nats-pw",
		"CONNECTOR_NATS_PASSWORD_FILE":  "/env/nats-pw",
		"CONNECTOR_NATS_TOKEN":          "env-nats-token",
		"CONNECTOR_NATS_TOKEN_FILE":     "/env/nats-token",
		"CONNECTOR_NATS_CA":             "/env/nats-ca.pem",
		"CONNECTOR_NATS_CERT":           "/env/nats-cert.pem",
		"CONNECTOR_NATS_KEY":            "/env/nats-key.pem",
		"CONNECTOR_NATS_INBOX_PREFIX":   "_INBOX_env",
		"CONNECTOR_REDIS_URL":           "rediss://env-redis:6380/1",
		"CONNECTOR_REDIS_USER":          "env-redis-user",
		"CONNECTOR_REDIS_PASSWORD":      "env-redis-pw",
		"CONNECTOR_REDIS_PASSWORD_FILE": "/env/redis-pw",
		"CONNECTOR_REDIS_CA":            "/env/redis-ca.pem",
		"CONNECTOR_REDIS_CERT":          "/env/redis-cert.pem",
		"CONNECTOR_REDIS_KEY":           "/env/redis-key.pem",
	}
	flags := map[string]string{
		"nats": "tls://flag-nats:4222", "nats-creds": "/flag/nats.creds", "nats-nkey": "/flag/nats.nk",
		"nats-user": "flag-user", "nats-password": "flag-nats-pw", "nats-password-file": "/flag/nats-pw",
		"nats-token": "flag-nats-token", "nats-token-file": "/flag/nats-token", "nats-ca": "/flag/nats-ca.pem",
		"nats-cert": "/flag/nats-cert.pem", "nats-key": "/flag/nats-key.pem", "nats-inbox-prefix": "_INBOX_flag",
		"redis": "rediss://flag-redis:6380/2", "redis-user": "flag-redis-user", "redis-password": "flag-redis-pw",
		"redis-password-file": "/flag/redis-pw", "redis-ca": "/flag/redis-ca.pem", "redis-cert": "/flag/redis-cert.pem",
		"redis-key": "/flag/redis-key.pem",
	}
	fields := func(n connect.NATSConfig, r connect.RedisConfig) map[string]string {
		return map[string]string{
			"nats": n.URL, "nats-creds": n.CredsFile, "nats-nkey": n.NKeySeedFile, "nats-user": n.User,
			"nats-password": n.Password, "nats-password-file": n.PasswordFile, "nats-token": n.Token,
			"nats-token-file": n.TokenFile, "nats-ca": n.CAFile, "nats-cert": n.CertFile, "nats-key": n.KeyFile,
			"nats-inbox-prefix": n.InboxPrefix,
			"redis":             r.URL, "redis-user": r.Username, "redis-password": r.Password, "redis-password-file": r.PasswordFile,
			"redis-ca": r.CAFile, "redis-cert": r.CertFile, "redis-key": r.KeyFile,
		}
	}
	// The variable of each flag.
	varOf := map[string]string{
		"nats": "CONNECTOR_NATS_URL", "nats-creds": "CONNECTOR_NATS_CREDS", "nats-nkey": "CONNECTOR_NATS_NKEY",
		"nats-user": "CONNECTOR_NATS_USER", "nats-password": "CONNECTOR_NATS_PASSWORD",
		"nats-password-file": "CONNECTOR_NATS_PASSWORD_FILE", "nats-token": "CONNECTOR_NATS_TOKEN",
		"nats-token-file": "CONNECTOR_NATS_TOKEN_FILE", "nats-ca": "CONNECTOR_NATS_CA", "nats-cert": "CONNECTOR_NATS_CERT",
		"nats-key": "CONNECTOR_NATS_KEY", "nats-inbox-prefix": "CONNECTOR_NATS_INBOX_PREFIX",
		"redis": "CONNECTOR_REDIS_URL", "redis-user": "CONNECTOR_REDIS_USER", "redis-password": "CONNECTOR_REDIS_PASSWORD",
		"redis-password-file": "CONNECTOR_REDIS_PASSWORD_FILE", "redis-ca": "CONNECTOR_REDIS_CA",
		"redis-cert": "CONNECTOR_REDIS_CERT", "redis-key": "CONNECTOR_REDIS_KEY",
	}
	bind := func(args []string) map[string]string {
		var n connect.NATSConfig
		var r connect.RedisConfig
		fs := flag.NewFlagSet("x", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		n.Bind(fs, func(k string) string { return env[k] })
		r.Bind(fs, func(k string) string { return env[k] })
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		n2 := 0
		fs.VisitAll(func(*flag.Flag) { n2++ })
		if n2 != len(varOf) {
			t.Errorf("%d flags registered, this test knows %d: add the new ones", n2, len(varOf))
		}
		return fields(n, r)
	}
	for f, got := range bind(nil) {
		if want := env[varOf[f]]; got != want {
			t.Errorf("--%s from %s: %q, want %q", f, varOf[f], got, want)
		}
	}
	var args []string
	for f, v := range flags {
		args = append(args, "--"+f, v)
	}
	for f, got := range bind(args) {
		if got != flags[f] {
			t.Errorf("--%s %q: got %q (the flag must beat %s)", f, flags[f], got, varOf[f])
		}
	}
}
