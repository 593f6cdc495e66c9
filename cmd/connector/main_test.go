package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/connector-go/connector/internal/telemetry"
	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/job"
	"github.com/connector-go/connector/worker"
	"github.com/nats-io/nats-server/v2/server"
)

const secret = "S3CRET"

// TestMain runs main instead of the tests when CONNECTOR_TEST_RUN_MAIN
// holds arguments (separated by \x1f): the test binary is then the
// connector command itself, for tests that run it as a process (see
// runMain).
func TestMain(m *testing.M) {
	if args := os.Getenv("CONNECTOR_TEST_RUN_MAIN"); args != "" {
		os.Args = append([]string{"connector"}, strings.Split(args, "\x1f")...)
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// secretEnv is an environment holding the secret in every variable that
// can carry one; other variables are empty.
func secretEnv(extra map[string]string) func(string) string {
	env := map[string]string{
		"CONNECTOR_NATS_URL":       "nats://u:" + secret + "@127.0.0.1:1",
		"CONNECTOR_NATS_PASSWORD":  secret,
		"CONNECTOR_NATS_TOKEN":     secret,
		"CONNECTOR_REDIS_URL":      "redis://:" + secret + "@127.0.0.1:1/0",
		"CONNECTOR_REDIS_PASSWORD": secret,
	}
	for k, v := range extra {
		env[k] = v
	}
	return func(k string) string { return env[k] }
}

// runCmd runs the command in-process and returns its outputs and error.
func runCmd(t *testing.T, getenv func(string) string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	// The logger may still write to stderr once run returned (nats.go's
	// closed-connection callback runs on its own goroutine).
	var out bytes.Buffer
	var errb testenv.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err = run(ctx, args, &out, &errb, getenv)
	return out.String(), errb.String(), err
}

// noSecret fails when the secret is in stdout, stderr, the error or the
// error as main prints it.
func noSecret(t *testing.T, stdout, stderr string, err error) {
	t.Helper()
	for name, text := range map[string]string{"stdout": stdout, "stderr": stderr} {
		if strings.Contains(text, secret) {
			t.Errorf("%s shows the secret:\n%s", name, text)
		}
	}
	if err != nil {
		if strings.Contains(err.Error(), secret) {
			t.Errorf("error holds the secret: %v", err)
		}
		if strings.Contains(telemetry.Redact(err.Error()), secret) {
			t.Errorf("error as main prints it holds the secret: %v", telemetry.Redact(err.Error()))
		}
	}
}

func TestSecretsNotPrintedOnConnectionErrors(t *testing.T) {
	noEnv := func(string) string { return "" }
	// A NATS server whose user "user" has the password S3CRET, for the
	// cases that get past NATS; another with a different password.
	good := testenv.StartNATS(t, func(o *server.Options) { o.Username, o.Password = "user", secret })
	other := testenv.StartNATS(t, func(o *server.Options) { o.Username, o.Password = "user", "something-else" })
	host := func(s *testenv.NATSServer) string { return strings.TrimPrefix(s.URL, "nats://") }

	for _, tc := range []struct {
		name string
		args []string
		want string // in the error
	}{
		{"nats unreachable", []string{"jobs", "show", "X", "--nats", "nats://user:" + secret + "@127.0.0.1:1",
			"--redis", "redis://:" + secret + "@127.0.0.1:1"}, "127.0.0.1:1"},
		{"nats refuses the password", []string{"jobs", "show", "X", "--nats", "nats://user:" + secret + "@" + host(other),
			"--redis", "redis://:" + secret + "@127.0.0.1:1"}, "uthorization"},
		{"password flag refused", []string{"jobs", "dead", "--nats", "nats://" + host(other), "--nats-user", "user",
			"--nats-password", secret}, "uthorization"},
		{"redis unreachable", []string{"jobs", "show", "X", "--nats", "nats://user:" + secret + "@" + host(good),
			"--redis", "redis://:" + secret + "@127.0.0.1:1/0"}, "127.0.0.1:1"},
		{"redis password flag", []string{"jobs", "requeue", "--all", "--nats", "nats://user:" + secret + "@" + host(good),
			"--redis", "redis://127.0.0.1:1/0", "--redis-password", secret}, "127.0.0.1:1"},
		{"streams provision unreachable", []string{"streams", "provision", "--nats", "nats://user:" + secret + "@127.0.0.1:1"}, "127.0.0.1:1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stdout, stderr, err := runCmd(t, noEnv, tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want an error about %q", err, tc.want)
			}
			noSecret(t, stdout, stderr, err)
		})
	}
}

// -h shows flag defaults taken from the environment: secrets as xxxxx and
// URLs redacted.
func TestHelpHidesSecretsFromEnvironment(t *testing.T) {
	for _, args := range [][]string{
		{"worker", "-h"},
		{"streams", "provision", "-h"},
		{"jobs", "show", "-h"},
		{"jobs", "dead", "-h"},
		{"jobs", "stats", "-h"},
		{"jobs", "cancel", "-h"},
		{"bench", "-h"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			stdout, stderr, err := runCmd(t, secretEnv(nil), args...)
			if !errors.Is(err, flag.ErrHelp) {
				t.Fatalf("err = %v, want flag.ErrHelp", err)
			}
			noSecret(t, stdout, stderr, err)
			if !strings.Contains(stdout+stderr, "xxxxx") {
				t.Errorf("no redacted default shown: the test proves nothing\n%s", stderr)
			}
		})
	}
}

// main prints a failing command's error redacted (telemetry.Redact) on
// standard error and exits 1. This runs main in a child process: the test
// binary itself, re-executed with CONNECTOR_TEST_RUN_MAIN set. Whatever
// the libraries print on the process's standard error (go-redis's pool
// logger) is checked too.
func TestMainRedactsErrors(t *testing.T) {
	good := testenv.StartNATS(t, func(o *server.Options) { o.Username, o.Password = "user", secret })
	for _, tc := range []struct {
		name, want string
		args       []string
	}{
		{"nats", "nats://user:xxxxx@127.0.0.1:1",
			[]string{"jobs", "show", "X", "--nats", "nats://user:" + secret + "@127.0.0.1:1", "--redis", "redis://:" + secret + "@127.0.0.1:1"}},
		{"redis", "127.0.0.1:1",
			[]string{"jobs", "show", "X", "--nats", strings.Replace(good.URL, "nats://", "nats://user:"+secret+"@", 1),
				"--redis", "redis://:" + secret + "@127.0.0.1:1/0"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestMainRedactsErrors$")
			cmd.Env = append(os.Environ(), "CONNECTOR_TEST_RUN_MAIN="+strings.Join(tc.args, "\x1f"),
				"CONNECTOR_NATS_PASSWORD=", "CONNECTOR_REDIS_PASSWORD=", "CONNECTOR_NATS_URL=", "CONNECTOR_REDIS_URL=")
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != 1 {
				t.Fatalf("exit: %v, want status 1\nstdout: %s\nstderr: %s", err, stdout.String(), stderr.String())
			}
			if !strings.Contains(stderr.String(), "connector: ") || !strings.Contains(stderr.String(), tc.want) {
				t.Errorf("stderr %q: want the error, with %q", stderr.String(), tc.want)
			}
			noSecret(t, stdout.String(), stderr.String(), nil)
		})
	}
}

type leakyJob struct{}

func (leakyJob) JobName() string { return "test.leaky" }

// The operator commands show a dead job's error, which may quote a URL
// with a password (the job record and the dead letter keep the handler's
// error as it was): they must print it redacted, in text and JSON.
func TestJobsCommandsRedactJobErrors(t *testing.T) {
	srv, _, js := testenv.JetStream(t)
	rdb, prefix := testenv.Redis(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reg := worker.NewRegistry()
	worker.MustRegister(reg, func(ctx context.Context, j *job.Job[leakyJob]) (string, error) {
		return "", fmt.Errorf("push to redis://:%s@10.0.0.9:6379/0: refused", secret)
	})
	d := runWorker(t, js, rdb, prefix, reg)
	id, err := d.Enqueue(ctx, leakyJob{})
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 20*time.Second, func() bool {
		rec, err := d.Job(ctx, id)
		return err == nil && rec.State == job.StateDead
	}, "job %s dead", id)

	env, _ := operatorCLI(t, srv.URL, prefix)
	for _, args := range [][]string{
		{"jobs", "show", id},
		{"jobs", "show", id, "--json"},
		{"jobs", "dead"},
		{"jobs", "dead", "--json"},
	} {
		t.Run(strings.Join(args[:2], " ")+map[bool]string{true: " --json"}[args[len(args)-1] == "--json"], func(t *testing.T) {
			stdout, stderr, err := runCmd(t, env, args...)
			if err != nil {
				t.Fatalf("%v: %v\n%s", args, err, stderr)
			}
			if !strings.Contains(stdout, "10.0.0.9") {
				t.Fatalf("%v: the error is not shown:\n%s", args, stdout)
			}
			if strings.Contains(stdout, secret) {
				t.Fatalf("%v prints the job's error unredacted", args)
			}
			noSecret(t, stdout, stderr, err)
		})
	}
}

// A CONNECTOR_* variable whose value does not parse stops every command
// that reads it, before any connection, with an error naming it.
func TestMalformedEnvStopsTheCommands(t *testing.T) {
	getenv := func(k string) string {
		if k == "CONNECTOR_RECORD_TTL" {
			return "7d"
		}
		return ""
	}
	for _, args := range [][]string{
		{"worker"},
		{"streams", "provision"},
		{"jobs", "show", "some-id"},
		{"events", "stats"},
	} {
		var out, errs strings.Builder
		err := run(context.Background(), args, &out, &errs, getenv)
		if err == nil || !strings.Contains(err.Error(), `CONNECTOR_RECORD_TTL="7d"`) {
			t.Errorf("connector %s: %v, want the variable named", strings.Join(args, " "), err)
		}
	}
}

// A missing command is a usage error (status 2 from main), not a request
// for help: the usage goes to stderr and a script learns it called the
// command wrong. -h and help still succeed.
func TestMissingCommandIsAUsageError(t *testing.T) {
	for _, args := range [][]string{{}, {"jobs"}, {"events"}} {
		_, stderr, err := runCmd(t, func(string) string { return "" }, args...)
		if !errors.Is(err, errNoCommand) || !strings.Contains(stderr, "usage") {
			t.Errorf("connector %s: %v, usage printed %v; want errNoCommand and the usage", strings.Join(args, " "), err, strings.Contains(stderr, "usage"))
		}
	}
	for _, args := range [][]string{{"jobs", "-h"}, {"events", "help"}} {
		if _, _, err := runCmd(t, func(string) string { return "" }, args...); !errors.Is(err, flag.ErrHelp) {
			t.Errorf("connector %s: %v, want flag.ErrHelp", strings.Join(args, " "), err)
		}
	}
}
