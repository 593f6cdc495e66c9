package app_test

import (
	"context"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/connector-go/connector/internal/app"
)

// Boolean variables read as the flags read their values (strconv.ParseBool):
// CONNECTOR_PROVISION=TRUE or =1 must not turn provisioning off, nor
// CONNECTOR_LINKED_TRACES=1 leave linked traces off.
func TestBoolEnvParsedAsFlags(t *testing.T) {
	for _, v := range []string{"true", "TRUE", "True", "1", "t"} {
		cfg := bind(t, map[string]string{"CONNECTOR_PROVISION": v, "CONNECTOR_LINKED_TRACES": v})
		if !cfg.Provision || !cfg.LinkedTraces {
			t.Errorf("%s=%q: provision %v, linked traces %v; want true, true", "CONNECTOR_PROVISION/LINKED_TRACES", v, cfg.Provision, cfg.LinkedTraces)
		}
	}
	for _, v := range []string{"false", "FALSE", "0", "f"} {
		cfg := bind(t, map[string]string{"CONNECTOR_PROVISION": v, "CONNECTOR_LINKED_TRACES": v})
		if cfg.Provision || cfg.LinkedTraces {
			t.Errorf("%q: provision %v, linked traces %v; want false, false", v, cfg.Provision, cfg.LinkedTraces)
		}
	}
	if cfg := bind(t, nil); !cfg.Provision || cfg.LinkedTraces {
		t.Errorf("defaults: provision %v, linked traces %v; want true, false", cfg.Provision, cfg.LinkedTraces)
	}
}

// CONNECTOR_CHANNELS_FILE is read like --channels-file: a file that
// cannot be read is an error, not a worker silently running without its
// channel capacities.
func TestChannelsFileFromEnv(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "channels")
	if err := os.WriteFile(good, []byte("root:4\nroot.shop:2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := bind(t, map[string]string{"CONNECTOR_CHANNELS_FILE": good})
	if strings.TrimSpace(cfg.Channels) != "root:4\nroot.shop:2" || cfg.Check() != nil {
		t.Errorf("from a readable file: channels %q, check %v", cfg.Channels, cfg.Check())
	}

	missing := filepath.Join(dir, "missing")
	cfg = bind(t, map[string]string{"CONNECTOR_CHANNELS_FILE": missing})
	err := cfg.Check()
	if err == nil || !strings.Contains(err.Error(), "CONNECTOR_CHANNELS_FILE") || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("unreadable CONNECTOR_CHANNELS_FILE: check %v, want an error naming it", err)
	}
	// RunWorker refuses to start on it (before it touches a connection).
	if err := app.RunWorker(context.Background(), &cfg, nil, nil); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("RunWorker with an unreadable CONNECTOR_CHANNELS_FILE: %v", err)
	}

	// A flag or CONNECTOR_CHANNELS given instead makes the file moot.
	cfg = bind(t, map[string]string{"CONNECTOR_CHANNELS_FILE": missing}, "--channels", "root:3")
	if cfg.Channels != "root:3" || cfg.Check() != nil {
		t.Errorf("--channels over an unreadable env file: channels %q, check %v", cfg.Channels, cfg.Check())
	}
	cfg = bind(t, map[string]string{"CONNECTOR_CHANNELS_FILE": missing, "CONNECTOR_CHANNELS": "root:5"})
	if cfg.Channels != "root:5" || cfg.Check() != nil {
		t.Errorf("CONNECTOR_CHANNELS beside an unreadable file: channels %q, check %v", cfg.Channels, cfg.Check())
	}
	cfg = bind(t, map[string]string{"CONNECTOR_CHANNELS_FILE": missing}, "--channels-file", good)
	if strings.TrimSpace(cfg.Channels) != "root:4\nroot.shop:2" || cfg.Check() != nil {
		t.Errorf("--channels-file over an unreadable env file: channels %q, check %v", cfg.Channels, cfg.Check())
	}
	// The flag's own file error is a flag error, as before.
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var c app.Config
	c.Bind(fs, func(string) string { return "" })
	if err := fs.Parse([]string{"--channels-file", missing}); err == nil {
		t.Error("--channels-file with a missing file parsed")
	}
}

// A variable whose value does not parse is an error that names it, not
// the default in silence (CONNECTOR_RECORD_TTL=7d would keep records 7
// days by luck; CONNECTOR_CONCURRENCY=abc would run 256 jobs at once).
func TestMalformedEnvIsAnError(t *testing.T) {
	for k, v := range map[string]string{
		"CONNECTOR_CONCURRENCY":        "abc",
		"CONNECTOR_STREAM_REPLICAS":    "three",
		"CONNECTOR_RECORD_TTL":         "7d",
		"CONNECTOR_ACK_WAIT":           "30",
		"CONNECTOR_PROVISION":          "yes",
		"CONNECTOR_REGISTER_SCHEDULES": "no",
		"CONNECTOR_START_WAIT":         "1 minute",
	} {
		fs := flag.NewFlagSet("test", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		var cfg app.Config
		getenv := func(key string) string {
			if key == k {
				return v
			}
			return ""
		}
		cfg.Bind(fs, getenv)
		cfg.BindStartWait(fs, getenv, 0)
		if err := fs.Parse(nil); err != nil {
			t.Fatal(err)
		}
		err := cfg.Check()
		if err == nil || !strings.Contains(err.Error(), k) || !strings.Contains(err.Error(), v) {
			t.Errorf("%s=%q: check %v, want an error naming it", k, v, err)
		}
		if err := app.RunWorker(context.Background(), &cfg, nil, nil); err == nil || !strings.Contains(err.Error(), k) {
			t.Errorf("%s=%q: RunWorker %v, want the same error", k, v, err)
		}
	}
	if cfg := bind(t, map[string]string{"CONNECTOR_CONCURRENCY": "8", "CONNECTOR_RECORD_TTL": "36h"}); cfg.Check() != nil {
		t.Errorf("valid values: %v", cfg.Check())
	}
}
