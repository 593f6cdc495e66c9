// Command shop-worker is the example shop connector as a connector of your
// own is built: a main that hands its registry to service.Main, with a
// setup that wires the connector's jobs and export listeners on the
// process's connections. It runs as "connector worker" does, with the same
// flags and CONNECTOR_* environment, plus the shop's:
//
//	SHOP_URL=http://shop:8081 CATALOG_URL=http://catalog:8082 \
//	  shop-worker --nats nats://nats:4222 --redis redis://redis:6379/0
//
// SHOP_ID (default "shop") names the shop instance, SHOP_VERSION (v1 or v2)
// its API version. The periodic batch imports are registered by an
// operator, with shop-schedule.
package main

import (
	"context"
	"errors"
	"os"

	"github.com/connector-go/connector/bindings"
	"github.com/connector-go/connector/examples/shopconnector"
	"github.com/connector-go/connector/service"
	"github.com/connector-go/connector/units"
	"github.com/connector-go/connector/worker"
)

func main() {
	reg := worker.NewRegistry()
	service.Main(reg, setup(reg, os.Getenv))
}

// setup wires the shop connector into reg and the process's listeners.
func setup(reg *worker.Registry, getenv func(string) string) service.Setup {
	return func(ctx context.Context, env *service.Env) error {
		shopURL, catalogURL := getenv("SHOP_URL"), getenv("CATALOG_URL")
		if shopURL == "" || catalogURL == "" {
			return errors.New("SHOP_URL and CATALOG_URL are required")
		}
		shop := shopconnector.Shop(or(getenv("SHOP_ID"), "shop"), or(getenv("SHOP_VERSION"), "v1"), shopURL)
		l, err := env.Listeners()
		if err != nil {
			return err
		}
		return shopconnector.Register(reg, l, shopconnector.Config{
			Shops:      []units.Backend{shop},
			CatalogURL: catalogURL,
			Bindings:   bindings.New(env.Redis, env.Prefix, bindings.WithMeterProvider(env.MeterProvider)),
			Jobs:       env.Dispatcher,
			Logger:     env.Log.Named("shop"),
			Tracer:     env.TracerProvider.Tracer("github.com/connector-go/connector/units"),
		})
	}
}

func or(v, def string) string {
	if v == "" {
		return def
	}
	return v
}
