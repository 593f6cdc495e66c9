package main

import (
	"context"
	"strings"
	"testing"

	"github.com/connector-go/connector/internal/testenv"
)

// A jobs command whose job records do not reach Redis fails, though the
// operation itself was done in JetStream: `jobs requeue` as a Redis user
// refused the writes of the records (APPEND, SET) requeues the job, says
// so, and exits with an error that says its record was not updated, rather
// than 0 with a record still saying dead.
func TestJobsRequeueFailsWhenItsRecordsDoNotReachRedis(t *testing.T) {
	if testenv.RedisEmbedded() {
		t.Skip("the embedded store has no ACLs")
	}
	url, prefix, _, ids := twoDeadJobs(t)
	rdb, _ := testenv.Redis(t)
	ctx := context.Background()
	user, pw := "connector-test-"+prefix, "pw-"+prefix
	if err := rdb.Do(ctx, "ACL", "SETUSER", user, "on", ">"+pw, "~*"+prefix+"*", "resetchannels",
		"+@all", "-append", "-set", "-setex", "-psetex").Err(); err != nil {
		t.Skipf("this Redis takes no ACL rules: %v", err)
	}
	t.Cleanup(func() { rdb.Do(context.Background(), "ACL", "DELUSER", user) })
	env, _ := operatorCLI(t, url, prefix)
	limited := func(k string) string {
		switch k {
		case "CONNECTOR_REDIS_USER":
			return user
		case "CONNECTOR_REDIS_PASSWORD":
			return pw
		}
		return env(k)
	}
	for _, args := range [][]string{{"jobs", "requeue", ids[0]}, {"jobs", "requeue", "--all"}} {
		stdout, stderr, err := runCmd(t, limited, args...)
		if err == nil {
			t.Fatalf("connector %s: no error although its job records did not reach Redis\n%s%s", strings.Join(args, " "), stdout, stderr)
		}
		if msg := err.Error(); !strings.Contains(msg, "job records") || !strings.Contains(msg, "NATS") {
			t.Errorf("connector %s: error %q does not say that the records, not the operation in NATS, failed", strings.Join(args, " "), msg)
		}
		if !strings.Contains(stdout, "requeued") {
			t.Errorf("connector %s: does not say what it did in NATS:\n%s", strings.Join(args, " "), stdout)
		}
		if strings.Contains(stdout+stderr+err.Error(), pw) {
			t.Errorf("connector %s: password printed", strings.Join(args, " "))
		}
	}
}
