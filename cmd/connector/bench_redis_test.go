package main

import (
	"strings"
	"testing"

	"github.com/connector-go/connector/internal/testenv"
)

// connector bench reaches Redis with the credentials of the other
// commands (CONNECTOR_REDIS_USER, CONNECTOR_REDIS_PASSWORD, ...): with a
// user Redis refuses, the run goes without job records and says why.
// Before, bench read CONNECTOR_REDIS_URL alone and connected as the
// default user.
func TestBenchUsesRedisCredentials(t *testing.T) {
	url := testenv.RedisURL(t)
	stdout, stderr, err := runCmd(t, func(k string) string {
		return map[string]string{
			"CONNECTOR_REDIS_URL":      url,
			"CONNECTOR_REDIS_USER":     "no-such-user-bench",
			"CONNECTOR_REDIS_PASSWORD": "bench-Secret-9",
		}[k]
	}, "bench", "-n", "20", "-rounds", "1")
	if err != nil {
		t.Fatalf("bench: %v\n%s", err, stderr)
	}
	if !strings.Contains(stdout, "job records: false") {
		t.Fatalf("bench ignored CONNECTOR_REDIS_USER/PASSWORD:\n%s", stdout)
	}
	if strings.Contains(stdout+stderr, "bench-Secret-9") {
		t.Fatalf("password printed:\n%s", stdout+stderr)
	}
}
