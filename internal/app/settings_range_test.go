package app_test

import (
	"context"
	"flag"
	"io"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/connector-go/connector/internal/app"
)

// A value that parses but that the process cannot use (a concurrency of 0,
// 7 stream replicas, a negative grace or retention, a prefix or channel
// spec the worker refuses) is an error of Check, naming the flag and its
// variable, whether it came from one or the other: not a worker that runs
// with a silent substitute (-replicas=-1 as 1, -events-max-age=-1h as 7
// days, -shutdown-grace=-1s as no grace; a zero retention is the
// default, as in a Config literal), nor one that fails only once
// connected, with an error that names no setting.
func TestOutOfRangeSettingsAreAnError(t *testing.T) {
	for _, c := range []struct{ flag, env, value string }{
		{"concurrency", "CONNECTOR_CONCURRENCY", "0"},
		{"concurrency", "CONNECTOR_CONCURRENCY", "-3"},
		{"replicas", "CONNECTOR_STREAM_REPLICAS", "0"},
		{"replicas", "CONNECTOR_STREAM_REPLICAS", "-1"},
		{"replicas", "CONNECTOR_STREAM_REPLICAS", "7"},
		{"ack-wait", "CONNECTOR_ACK_WAIT", "0s"},
		{"ack-wait", "CONNECTOR_ACK_WAIT", "500ms"},
		{"shutdown-grace", "CONNECTOR_SHUTDOWN_GRACE", "-1s"},
		{"start-wait", "CONNECTOR_START_WAIT", "-1s"},
		{"record-ttl", "CONNECTOR_RECORD_TTL", "-1h"},
		{"dead-max-age", "CONNECTOR_DEAD_MAX_AGE", "-1h"},
		{"events-max-age", "CONNECTOR_EVENTS_MAX_AGE", "-1h"},
		{"prefix", "CONNECTOR_PREFIX", "a.b"},
		{"channels", "CONNECTOR_CHANNELS", "root:x"},
		{"channels", "CONNECTOR_CHANNELS", "shop:2"},
	} {
		for _, from := range []string{"flag", "env"} {
			fs := flag.NewFlagSet("test", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			env := map[string]string{}
			var args []string
			if from == "flag" {
				args = []string{"-" + c.flag + "=" + c.value}
			} else {
				env[c.env] = c.value
			}
			getenv := func(k string) string { return env[k] }
			var cfg app.Config
			cfg.Bind(fs, getenv)
			cfg.BindStartWait(fs, getenv, 0)
			if err := fs.Parse(args); err != nil {
				t.Fatalf("%s %s=%s: %v", from, c.flag, c.value, err)
			}
			err := cfg.Check()
			if err == nil || !strings.Contains(err.Error(), "-"+c.flag) || !strings.Contains(err.Error(), c.env) {
				t.Errorf("%s %s=%q: check %v, want an error naming -%s and %s", from, c.flag, c.value, err, c.flag, c.env)
				continue
			}
			// RunWorker refuses it too, before it touches a connection.
			if err := app.RunWorker(context.Background(), &cfg, nil, nil); err == nil || !strings.Contains(err.Error(), c.env) {
				t.Errorf("%s %s=%q: RunWorker %v, want the same error", from, c.flag, c.value, err)
			}
		}
	}
	if cfg := bind(t, nil); cfg.Check() != nil {
		t.Errorf("defaults: %v", cfg.Check())
	}
	cfg := bind(t, map[string]string{"CONNECTOR_STREAM_REPLICAS": "3", "CONNECTOR_SHUTDOWN_GRACE": "0s",
		"CONNECTOR_DEAD_MAX_AGE": "0s", "CONNECTOR_CHANNELS": "root:4,root.shop:2,root.shop.orders:1:sequential", "CONNECTOR_ACK_WAIT": "1s"})
	if err := cfg.Check(); err != nil {
		t.Errorf("valid values: %v", err)
	}
}

// Every flag of a worker names its variable, every CONNECTOR_ variable the
// process reads has its flag, and the variables README names are those.
func TestEveryFlagHasItsVariable(t *testing.T) {
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	read := map[string]bool{}
	getenv := func(k string) string { read[k] = true; return "" }
	var cfg app.Config
	cfg.Bind(fs, getenv)
	cfg.BindStartWait(fs, getenv, 0)
	re := regexp.MustCompile(`\(env (CONNECTOR_[A-Z_]+)[;)]`)
	vars := map[string]bool{}
	fs.VisitAll(func(f *flag.Flag) {
		m := re.FindStringSubmatch(f.Usage)
		if m == nil {
			t.Errorf("-%s names no variable: %q", f.Name, f.Usage)
			return
		}
		vars[m[1]] = true
	})
	for k := range read {
		if strings.HasPrefix(k, "CONNECTOR_") && !vars[k] {
			t.Errorf("%s is read but no flag names it", k)
		}
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range regexp.MustCompile(`CONNECTOR_[A-Z_]*[A-Z]`).FindAllString(string(readme), -1) {
		if k != "CONNECTOR_TEST_REDIS_URL" && !vars[k] {
			t.Errorf("README names %s, which no flag has", k)
		}
	}
}
