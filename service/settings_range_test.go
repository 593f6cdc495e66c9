package service

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/connector-go/connector/worker"
)

// A setting that parses but cannot be used stops the process before it
// connects, as a bad setting (status 2) that names the flag and its
// variable: -concurrency=0 used to connect, provision the streams and then
// fail with "worker: concurrency must be >= 1" (status 1); -replicas=-1
// and -shutdown-grace=-1s ran in silence.
func TestUnusableSettingsStopTheProcess(t *testing.T) {
	for _, c := range []struct {
		env  map[string]string
		args []string
		want string
	}{
		{nil, []string{"--concurrency", "0"}, "CONNECTOR_CONCURRENCY"},
		{map[string]string{"CONNECTOR_STREAM_REPLICAS": "-1"}, nil, "-replicas"},
		{map[string]string{"CONNECTOR_SHUTDOWN_GRACE": "-1s"}, nil, "-shutdown-grace"},
		{nil, []string{"--channels", "root:x"}, "CONNECTOR_CHANNELS"},
	} {
		env := map[string]string{"CONNECTOR_NATS_URL": "nats://127.0.0.1:1", "CONNECTOR_START_WAIT": "0"}
		for k, v := range c.env {
			env[k] = v
		}
		err := Run(context.Background(), c.args, func(k string) string { return env[k] }, worker.NewRegistry())
		var out bytes.Buffer
		if code := exitCode(err, &out, "myconnector"); code != 2 || !strings.Contains(out.String(), c.want) ||
			strings.Contains(out.String(), "connect: nats") {
			t.Errorf("%v %v: exit %d, stderr %q; want 2 and %s named, before any connection", c.env, c.args, code, out.String(), c.want)
		}
	}
}
