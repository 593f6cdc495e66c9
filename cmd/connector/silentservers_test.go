package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/connector-go/connector/internal/testenv"
)

// The operator commands take no --start-wait: one attempt each. Against
// a NATS or a Redis that accepts connections and never answers, they
// fail within the connect timeouts (5s each), naming what they could not
// reach, instead of hanging (the context here has no deadline).
func TestOperatorCommandsDoNotHangOnSilentServers(t *testing.T) {
	srv := testenv.StartNATS(t)
	_, prefix := testenv.Redis(t)
	silent := testenv.SilentAddr(t)
	for _, tc := range []struct {
		name, nats, redis, want string
		args                    []string
	}{
		{"nats silent", "nats://" + silent, testenv.RedisURL(t), "connect: nats nats://" + silent, []string{"jobs", "dead"}},
		{"redis silent", srv.URL, "redis://" + silent + "/0", "connect: redis redis://" + silent, []string{"jobs", "show", "some-id"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := map[string]string{"CONNECTOR_NATS_URL": tc.nats, "CONNECTOR_REDIS_URL": tc.redis, "CONNECTOR_PREFIX": prefix}
			done := make(chan error, 1)
			go func() {
				var out, errb testenv.Buffer
				done <- run(context.Background(), tc.args, &out, &errb, func(k string) string { return env[k] })
			}()
			select {
			case err := <-done:
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("err = %v, want %q", err, tc.want)
				}
			case <-time.After(20 * time.Second):
				t.Fatalf("connector %s did not return within 20s", strings.Join(tc.args, " "))
			}
		})
	}
}
