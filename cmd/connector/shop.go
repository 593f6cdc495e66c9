package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/connector-go/connector/bindings"
	"github.com/connector-go/connector/dispatcher"
	"github.com/connector-go/connector/events"
	"github.com/connector-go/connector/examples/catalog"
	"github.com/connector-go/connector/examples/shop"
	"github.com/connector-go/connector/examples/shopconnector"
	"github.com/connector-go/connector/internal/app"
	"github.com/connector-go/connector/internal/telemetry"
	"github.com/connector-go/connector/units"
	"github.com/connector-go/connector/worker"
	"go.uber.org/zap"
)

// shopExample wires the example shop connector (examples/shopconnector)
// into reg for the given shop instances and catalog, and returns the
// service to run beside the worker: the export listeners, after it has
// registered the periodic batch imports (every: a dispatcher.Schedule spec
// such as "@every 10s"; "" registers none).
func shopExample(conns *app.Conns, cfg *app.Config, d *dispatcher.Dispatcher, reg *worker.Registry,
	shops []units.Backend, catalogURL, every string) (app.Part, error) {
	log := conns.Log.Named("shop")
	// The process's telemetry: the listeners' spans and metrics
	// (connector_events_handled_total), the synchronizers' spans (binder,
	// adapter and local calls).
	lopts := []events.Option{
		events.WithPrefix(cfg.Prefix), events.WithRedis(conns.Redis), events.WithLogger(log.Named("events")),
		events.WithTracerProvider(conns.Telemetry.TracerProvider), events.WithMeterProvider(conns.Telemetry.MeterProvider),
		events.WithShutdownGrace(cfg.ShutdownGrace),
	}
	if cfg.LinkedTraces {
		lopts = append(lopts, events.WithLinkedTraces())
	}
	l, err := events.NewListeners(conns.JS, lopts...)
	if err != nil {
		return nil, err
	}
	err = shopconnector.Register(reg, l, shopconnector.Config{
		Shops: shops, CatalogURL: catalogURL, Bindings: bindings.New(conns.Redis, cfg.Prefix, bindings.WithMeterProvider(conns.Telemetry.MeterProvider)), Jobs: d, Logger: log,
		Tracer: conns.Telemetry.TracerProvider.Tracer("github.com/connector-go/connector/units"),
	})
	if err != nil {
		return nil, err
	}
	run := func(ctx context.Context) error {
		// The worker has provisioned the streams before services start.
		switch {
		case every == "":
		case !cfg.RegisterSchedules:
			log.Info("periodic imports left to an operator (register-schedules is false)", zap.String("every", every))
		default:
			if err := shopconnector.Schedule(ctx, d, shops, every); err != nil {
				// A least-privilege worker may not read or purge schedules:
				// the periodic imports are then registered by an operator.
				log.Error("periodic imports not registered; register them with operator rights, "+
					"or set --register-schedules=false (CONNECTOR_REGISTER_SCHEDULES)", telemetry.ErrField(err))
			}
		}
		return l.Run(ctx)
	}
	// Not ready (/readyz) until the listeners listen.
	return app.ReadyService{Service: run, Name: "events", Ready: func(context.Context) error { return l.Ready() }}, nil
}

// serveExample serves h on addr (falling back to a free port on 127.0.0.1
// when addr is busy) until ctx ends, and returns its base URL.
func serveExample(ctx context.Context, name, addr string, h http.Handler, log *zap.Logger) (string, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		log.Warn("address busy; using a free port", zap.String("server", name), zap.String("addr", addr))
		if ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			return "", fmt.Errorf("%s: %w", name, err)
		}
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("example server stopped", zap.String("server", name), telemetry.ErrField(err))
		}
	}()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	return "http://" + ln.Addr().String(), nil
}

// devShop starts the example shop and catalog on local ports and wires the
// shop connector for one shop instance, "shop-v1" (API v1). It returns the
// listeners service and the text that tells the user what to try.
func devShop(ctx context.Context, conns *app.Conns, cfg *app.Config, d *dispatcher.Dispatcher, reg *worker.Registry,
	shopAddr, catalogAddr, every string) (app.Part, string, error) {
	log := conns.Log
	shopURL, err := serveExample(ctx, "shop", shopAddr, shop.NewServer(shop.WithSampleData()), log)
	if err != nil {
		return nil, "", err
	}
	pub, err := events.NewPublisher(conns.JS, events.WithPrefix(cfg.Prefix))
	if err != nil {
		return nil, "", err
	}
	cat := catalog.New(catalog.WithPublisher(pub), catalog.WithLogger(log.Named("catalog")))
	catalogURL, err := serveExample(ctx, "catalog", catalogAddr, cat, log)
	if err != nil {
		return nil, "", err
	}
	shops := []units.Backend{shopconnector.Shop("shop-v1", "v1", shopURL)}
	svc, err := shopExample(conns, cfg, d, reg, shops, catalogURL, every)
	if err != nil {
		return nil, "", err
	}
	help := fmt.Sprintf(`The example connector (examples/shopconnector) syncs the shop (backend
"shop-v1", API v1) with the catalog (the local system); batch imports run %s.
  shop     %[2]s/v1/products   (also /v1/customers, /v1/orders, and /v2/...)
  catalog  %[3]s/products      (also /customers, /orders)
Change a price in the shop, then watch it reach the catalog at the next import:
  curl -X PATCH %[2]s/v1/products/1 -d '{"price": 7.5}'
  curl %[3]s/products
Rename a product in the catalog: an event, an export job, one write in the shop
(the catalog numbers its records in the order the imports brought them: its
product 1 is not always the shop's product 1):
  curl -X PATCH %[3]s/products/1 -d '{"name": "Espresso cup XL"}'
  curl %[2]s/v1/products
Create one in the catalog: it is created in the shop and bound, not imported back:
  curl -X POST %[3]s/products -d '{"name": "Tea pot", "price": 25}'
Make the shop fail (503) twice, then change the catalog: the export is retried:
  curl -X POST %[2]s/admin/faults -d '{"status": 503, "count": 2}'
  curl -X PATCH %[3]s/products/2 -d '{"name": "Coffee beans, 1 kg bag"}'
`, every, shopURL, catalogURL)
	return svc, help, nil
}

// workerShop is the hook for `connector worker` in Docker Compose and
// Kubernetes: when SHOP_URL and CATALOG_URL are set, it adds the example
// connector for one shop instance (SHOP_ID, default "shop"; SHOP_VERSION,
// default "v1"; imports on SHOP_IMPORT_SCHEDULE, default "@every 30s") to
// reg, and returns the service to pass to app.RunWorker and a function
// that releases its dispatcher. Without SHOP_URL it returns nothing.
func workerShop(conns *app.Conns, cfg *app.Config, reg *worker.Registry, getenv func(string) string) (app.Part, func(), error) {
	shopURL, catalogURL := getenv("SHOP_URL"), getenv("CATALOG_URL")
	if shopURL == "" || catalogURL == "" {
		return nil, func() {}, nil
	}
	or := func(k, def string) string {
		if v := getenv(k); v != "" {
			return v
		}
		return def
	}
	d, err := conns.Dispatcher(cfg)
	if err != nil {
		return nil, nil, err
	}
	release := func() { _ = d.Close(context.Background()) }
	shops := []units.Backend{shopconnector.Shop(or("SHOP_ID", "shop"), or("SHOP_VERSION", "v1"), shopURL)}
	svc, err := shopExample(conns, cfg, d, reg, shops, catalogURL, or("SHOP_IMPORT_SCHEDULE", "@every 30s"))
	if err != nil {
		release()
		return nil, nil, err
	}
	return svc, release, nil
}
