// Command shop-schedule registers the periodic batch imports of the example
// shop connector (shopconnector.Schedule: one JetStream message schedule per
// shop and imported model) and exits.
//
// Registering or replacing a schedule reads and purges its subject in the
// jobs stream, which only the NATS "operator" role may do
// (docs/security.md): least-privilege workers cannot. Run it once per
// deployment with the operator's credentials, as the Compose service
// "shop-schedule" does; running it again is harmless.
//
//	shop-schedule --shop-id shop --every "@every 30s"
//
// Every flag has an environment variable (SHOP_ID, SHOP_IMPORT_SCHEDULE,
// CONNECTOR_PREFIX); NATS is configured like every
// connector process (CONNECTOR_NATS_URL, CONNECTOR_NATS_USER,
// CONNECTOR_NATS_PASSWORD_FILE, ...). The jobs stream must exist
// (`connector streams provision`); the periodic jobs need nats-server 2.14
// or newer.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/connector-go/connector/dispatcher"
	"github.com/connector-go/connector/examples/shopconnector"
	"github.com/connector-go/connector/internal/connect"
	"github.com/connector-go/connector/internal/telemetry"
	"github.com/connector-go/connector/internal/wire"
	"github.com/connector-go/connector/units"
	"github.com/nats-io/nats.go/jetstream"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "shop-schedule:", telemetry.Redact(err.Error()))
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("shop-schedule", flag.ContinueOnError)
	fs.SetOutput(stderr)
	id := fs.String("shop-id", envOr(getenv, "SHOP_ID", "shop"), "backend id of the shop instance, as the workers know it (env SHOP_ID)")
	every := fs.String("every", envOr(getenv, "SHOP_IMPORT_SCHEDULE", "@every 30s"), `schedule of the batch imports: "@every 30s", "@hourly" or a 6-field cron spec (env SHOP_IMPORT_SCHEDULE)`)
	prefix := fs.String("prefix", envOr(getenv, "CONNECTOR_PREFIX", wire.DefaultPrefix), "prefix of the connector's subjects and streams (env CONNECTOR_PREFIX)")
	timeout := fs.Duration("timeout", time.Minute, "give up after this long")
	var nc connect.NATSConfig
	nc.Bind(fs, getenv)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if nc.Name == "" {
		nc.Name = "shop-schedule"
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	conn, err := connect.ConnectNATS(ctx, nc, nil)
	if err != nil {
		return err
	}
	defer conn.Close()
	js, err := jetstream.New(conn)
	if err != nil {
		return err
	}
	d, err := dispatcher.New(js, dispatcher.WithPrefix(*prefix))
	if err != nil {
		return err
	}
	defer func() { _ = d.Close(context.WithoutCancel(ctx)) }()
	// Only the id matters to a schedule: the workers know the shop's
	// version and URL.
	shops := []units.Backend{{ID: *id, Type: shopconnector.Type}}
	if err := shopconnector.Schedule(ctx, d, shops, *every); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "periodic imports of shop %s registered: %v, %q\n", *id, shopconnector.ImportedModels, *every)
	return nil
}

func envOr(getenv func(string) string, k, def string) string {
	if v := getenv(k); v != "" {
		return v
	}
	return def
}
