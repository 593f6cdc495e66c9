// Command catalog runs the example local system (package catalog): an
// in-memory catalog of products, customers and orders with an HTTP JSON API,
// which publishes a domain event to NATS JetStream for every change.
//
//	catalog --addr :8082       # or CATALOG_ADDR=:8082 catalog
//	catalog --check            # probe /healthz of a running catalog, exit 0 or 1
//
// NATS is configured like every connector process (--nats or
// CONNECTOR_NATS_URL, CONNECTOR_NATS_USER, CONNECTOR_NATS_PASSWORD_FILE, ...;
// CONNECTOR_PREFIX names the streams). The events stream must exist
// (`connector streams provision`). Each published event is traced with a
// PRODUCER span, exported by OTLP from the standard OTEL_* variables
// (OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_SERVICE_NAME, default "catalog"); the
// listeners that handle it continue that trace. It stops gracefully on
// SIGINT or SIGTERM.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/connector-go/connector/events"
	"github.com/connector-go/connector/examples/catalog"
	"github.com/connector-go/connector/internal/connect"
	"github.com/connector-go/connector/internal/telemetry"
	"github.com/connector-go/connector/internal/wire"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, nil)
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "catalog:", telemetry.Redact(err.Error()))
		os.Exit(1)
	}
}

// run serves until ctx ends. onListen, if not nil, is told the address
// listened on (useful with --addr 127.0.0.1:0).
func run(ctx context.Context, args []string, getenv func(string) string, onListen func(net.Addr)) error {
	fs := flag.NewFlagSet("catalog", flag.ContinueOnError)
	addr := fs.String("addr", envOr(getenv, "CATALOG_ADDR", ":8082"), "listen address (env CATALOG_ADDR)")
	prefix := fs.String("prefix", envOr(getenv, "CONNECTOR_PREFIX", wire.DefaultPrefix), "prefix of the connector's subjects and streams (env CONNECTOR_PREFIX)")
	check := fs.Bool("check", false, "probe GET /healthz on --addr and exit (for container health checks)")
	var nc connect.NATSConfig
	nc.Bind(fs, getenv)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *check {
		return probe(*addr)
	}
	log, err := telemetry.NewLogger(envOr(getenv, "CONNECTOR_LOG_LEVEL", "info"), envOr(getenv, "CONNECTOR_LOG_FORMAT", "json"))
	if err != nil {
		return err
	}
	tel, err := telemetry.Setup(ctx, telemetry.Config{ServiceName: "catalog"})
	if err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = tel.Shutdown(sctx)
	}()
	if nc.Name == "" {
		nc.Name = "catalog"
	}
	conn, err := connect.ConnectNATS(ctx, nc, log)
	if err != nil {
		return err
	}
	defer connect.DrainNATS(conn, 10*time.Second)
	js, err := jetstream.New(conn)
	if err != nil {
		return err
	}
	pub, err := events.NewPublisher(js, events.WithPrefix(*prefix), events.WithTracerProvider(tel.TracerProvider))
	if err != nil {
		return err
	}
	srv := &http.Server{
		Addr:              *addr,
		Handler:           catalog.New(catalog.WithPublisher(pub), catalog.WithLogger(log)),
		ReadHeaderTimeout: 5 * time.Second,
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	log.Info("catalog listening", zap.String("addr", ln.Addr().String()), zap.String("prefix", *prefix),
		zap.String("traces", tel.TracesExporter))
	if onListen != nil {
		onListen(ln.Addr())
	}
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return err
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func probe(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	resp, err := (&http.Client{Timeout: 3 * time.Second}).Get("http://" + net.JoinHostPort(host, port) + "/healthz")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthz: %s", resp.Status)
	}
	return nil
}

func envOr(getenv func(string) string, k, def string) string {
	if v := getenv(k); v != "" {
		return v
	}
	return def
}
