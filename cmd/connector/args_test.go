package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/connector-go/connector/internal/testenv"
)

// `connector worker` and `connector streams provision` take no arguments:
// a stray one ends flag parsing, so every flag after it would be ignored
// (`--register-schedules false --nats nats://prod:4222`: the schedules
// registered and the default NATS dialled). Like service.Main, they say so
// and connect to nothing.
func TestCommandsRejectStrayArguments(t *testing.T) {
	refused := "nats://" + testenv.FreeAddr(t)
	// Whatever is ignored, nothing is reached: the environment points at
	// nobody too (the defaults, 127.0.0.1:4222 and :6379, may well answer).
	env := map[string]string{
		"CONNECTOR_START_WAIT": "0", "CONNECTOR_LOG_LEVEL": "error", "CONNECTOR_PREFIX": testenv.Prefix(t),
		"CONNECTOR_NATS_URL": refused, "CONNECTOR_REDIS_URL": "redis://" + testenv.FreeAddr(t) + "/0",
	}
	getenv := func(k string) string { return env[k] }
	for _, args := range [][]string{
		{"worker", "--http=", "--register-schedules", "false", "--nats", refused},
		{"streams", "provision", "--replicas", "1", "extra", "--nats", refused},
	} {
		t.Run(strings.Join(args[:2], " "), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			var out, errs testenv.Buffer
			err := run(ctx, args, &out, &errs, getenv)
			if err == nil || !strings.Contains(err.Error(), "unexpected argument") {
				t.Fatalf("connector %s: err = %v, want an unexpected argument error", strings.Join(args, " "), err)
			}
		})
	}
}
