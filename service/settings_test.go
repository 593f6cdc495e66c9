package service

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/connector-go/connector/worker"
)

// An unreadable CONNECTOR_CHANNELS_FILE stops the process before it
// connects (status 2, a bad setting, the variable named), instead of a worker running
// without its channel capacities.
func TestUnreadableChannelsFileStopsTheProcess(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "channels")
	env := map[string]string{
		"CONNECTOR_CHANNELS_FILE": missing,
		// Nothing listens there: reaching the connection would fail otherwise.
		"CONNECTOR_NATS_URL": "nats://127.0.0.1:1", "CONNECTOR_START_WAIT": "0",
	}
	err := Run(context.Background(), nil, func(k string) string { return env[k] }, worker.NewRegistry())
	var out bytes.Buffer
	if code := exitCode(err, &out, "myconnector"); code != 2 || !strings.Contains(out.String(), "CONNECTOR_CHANNELS_FILE") ||
		strings.Contains(out.String(), "connect: nats") {
		t.Fatalf("exit %d, stderr %q: want 2 and the channels file named, before any connection", code, out.String())
	}
}

// A bad setting the flag package did not report itself (a stray argument,
// a log level from CONNECTOR_LOG_LEVEL) exits with 2 and says why: the
// process used to exit 2 without a word.
func TestBadSettingsSayWhy(t *testing.T) {
	for _, c := range []struct {
		env  map[string]string
		args []string
		want string
	}{
		{nil, []string{"stray-argument"}, "stray-argument"},
		{nil, []string{"--log-level", "loud"}, "loud"},
		{map[string]string{"CONNECTOR_LOG_LEVEL": "loud"}, nil, "loud"},
		{map[string]string{"CONNECTOR_ACK_WAIT": "30"}, nil, `CONNECTOR_ACK_WAIT="30"`},
	} {
		err := Run(context.Background(), c.args, func(k string) string { return c.env[k] }, worker.NewRegistry())
		var out bytes.Buffer
		if code := exitCode(err, &out, "myconnector"); code != 2 || !strings.Contains(out.String(), c.want) {
			t.Errorf("%v %v: exit %d, stderr %q; want 2 and a message naming %q", c.env, c.args, code, out.String(), c.want)
		}
	}
	// A flag error the flag package printed is not printed twice.
	err := Run(context.Background(), []string{"--no-such-flag"}, func(string) string { return "" }, worker.NewRegistry())
	var out bytes.Buffer
	if code := exitCode(err, &out, "myconnector"); code != 2 || out.Len() != 0 {
		t.Errorf("--no-such-flag: exit %d, printed again %q", code, out.String())
	}
}
