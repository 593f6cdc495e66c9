package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/connector-go/connector/examples/shopconnector"
	"github.com/connector-go/connector/internal/streams"
	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/internal/wire"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// shop-schedule, configured from the environment as in Compose (user and
// password file), registers one schedule per imported model, idempotently,
// and the schedules fire ImportBatch jobs on the connector's channel.
func TestRegistersThePeriodicImports(t *testing.T) {
	const pw = "sched-Operator-Pw-1"
	srv := testenv.StartNATS(t, func(o *server.Options) { o.Username, o.Password = "operator", pw })
	nc := srv.Connect(t, nats.UserInfo("operator", pw))
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	prefix := testenv.Prefix(t)
	names := wire.MustNames(prefix)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := streams.Ensure(ctx, js, streams.Config{Names: names, Memory: true}); err != nil {
		t.Fatal(err)
	}
	pwFile := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pwFile, []byte(pw+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"CONNECTOR_NATS_URL": srv.URL, "CONNECTOR_NATS_USER": "operator", "CONNECTOR_NATS_PASSWORD_FILE": pwFile,
		"CONNECTOR_PREFIX": prefix, "SHOP_ID": "shop-eu", "SHOP_IMPORT_SCHEDULE": "@every 1s",
	}
	getenv := func(k string) string { return env[k] }
	for range 2 { // the second run finds the schedules registered as asked
		var out, errOut bytes.Buffer
		if err := run(ctx, nil, getenv, &out, &errOut); err != nil {
			t.Fatalf("run: %v\n%s", err, errOut.String())
		}
		if !strings.Contains(out.String(), "shop-eu") {
			t.Errorf("output %q does not name the shop", out.String())
		}
	}
	s, err := js.Stream(ctx, names.JobsStream())
	if err != nil {
		t.Fatal(err)
	}
	for _, model := range shopconnector.ImportedModels {
		subject := names.PeriodicSubject("shop-import-shop-eu-" + model)
		info, err := s.Info(ctx, jetstream.WithSubjectFilter(subject))
		if err != nil {
			t.Fatal(err)
		}
		if n := info.State.Subjects[subject]; n != 1 {
			t.Errorf("%s holds %d schedules, want 1", subject, n)
		}
	}
	// The schedules fire: jobs land on the connector's channel.
	testenv.Eventually(t, 10*time.Second, func() bool {
		info, err := s.Info(ctx, jetstream.WithSubjectFilter(names.JobsChannelFilter(shopconnector.Channel)))
		if err != nil {
			return false
		}
		var n uint64
		for _, c := range info.State.Subjects {
			n += c
		}
		return n >= uint64(len(shopconnector.ImportedModels))
	}, "a tick of every schedule on channel %s", shopconnector.Channel)

	// A wrong password fails, and the error does not quote it.
	env["CONNECTOR_NATS_PASSWORD_FILE"] = ""
	env["CONNECTOR_NATS_PASSWORD"] = "wrong-" + pw
	err = run(ctx, []string{"--timeout", "5s"}, getenv, &bytes.Buffer{}, &bytes.Buffer{})
	if err == nil {
		t.Fatal("connected with a wrong password")
	}
	if strings.Contains(err.Error(), pw) {
		t.Errorf("error quotes the password: %v", err)
	}
}

// Without the jobs stream there is nothing to schedule into: an error, not
// a silent success.
func TestFailsWithoutStreams(t *testing.T) {
	srv := testenv.StartNATS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	env := map[string]string{"CONNECTOR_NATS_URL": srv.URL, "CONNECTOR_PREFIX": testenv.Prefix(t)}
	if err := run(ctx, nil, func(k string) string { return env[k] }, &bytes.Buffer{}, &bytes.Buffer{}); err == nil {
		t.Fatal("registered schedules without a jobs stream")
	}
}
