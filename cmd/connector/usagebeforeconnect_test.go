package main

import (
	"strings"
	"testing"

	"github.com/connector-go/connector/internal/testenv"
)

// A command missing its id (or given a sequence that is none) is a usage
// error, said as such before any connection: an operator who forgot the
// id is not told that NATS or Redis cannot be reached (nor kept waiting
// for them to time out).
func TestUsageErrorsComeBeforeConnecting(t *testing.T) {
	env := map[string]string{
		"CONNECTOR_NATS_URL": "nats://" + testenv.FreeAddr(t), "CONNECTOR_REDIS_URL": "redis://" + testenv.FreeAddr(t) + "/0",
		"CONNECTOR_PREFIX": testenv.Prefix(t),
	}
	getenv := func(k string) string { return env[k] }
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"jobs", "show"}, "usage: connector jobs show ID"},
		{[]string{"jobs", "show", "a", "b"}, "usage: connector jobs show ID"},
		{[]string{"jobs", "cancel"}, "usage: connector jobs cancel ID"},
		{[]string{"jobs", "requeue"}, "usage: connector jobs requeue ID"},
		{[]string{"jobs", "dead", "x"}, "unexpected argument"},
		{[]string{"jobs", "stats", "x"}, "unexpected argument"},
		{[]string{"events", "replay"}, "usage: connector events replay SEQ"},
		{[]string{"events", "discard"}, "usage: connector events discard SEQ"},
		{[]string{"events", "replay", "abc"}, `"abc": not a dead-letter sequence`},
		{[]string{"events", "stats", "x"}, "unexpected argument"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			_, stderr, err := runCmd(t, getenv, tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q (before connecting)\n%s", err, tc.want, stderr)
			}
		})
	}
}
