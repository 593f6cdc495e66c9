// Command shop runs the example web shop (package shop): a demonstration
// external system for the connector examples, with an HTTP JSON API in two
// versions (/v1, /v2) and fault injection (/admin/faults).
//
//	shop --addr :8081          # or SHOP_ADDR=:8081 shop
//	shop --seed=false          # start empty
//	shop --check               # probe /healthz of a running shop, exit 0 or 1
//
// It stops gracefully on SIGINT or SIGTERM.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/connector-go/connector/examples/shop"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], nil)
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "shop:", err)
		os.Exit(1)
	}
}

// run serves until ctx ends. onListen, if not nil, is told the address
// listened on (useful with --addr 127.0.0.1:0).
func run(ctx context.Context, args []string, onListen func(net.Addr)) error {
	fs := flag.NewFlagSet("shop", flag.ContinueOnError)
	addr := fs.String("addr", envOr("SHOP_ADDR", ":8081"), "listen address (env SHOP_ADDR)")
	seed := fs.Bool("seed", true, "start with a few sample products, customers and orders")
	check := fs.Bool("check", false, "probe GET /healthz on --addr and exit (for container health checks)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *check {
		return probe(*addr)
	}

	var opts []shop.Option
	if *seed {
		opts = append(opts, shop.WithSampleData())
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	srv := &http.Server{
		Addr:              *addr,
		Handler:           shop.NewServer(opts...),
		ReadHeaderTimeout: 5 * time.Second,
	}

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	log.Info("shop listening", "addr", ln.Addr().String())
	if onListen != nil {
		onListen(ln.Addr())
	}

	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("shop stopping")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
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
	client := &http.Client{Timeout: 3 * time.Second}
	resp, err := client.Get("http://" + net.JoinHostPort(host, port) + "/healthz")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthz: %s", resp.Status)
	}
	return nil
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
