// Package shopconnector is a complete example connector, built only from
// the framework's public packages: it synchronizes the example web shop
// (examples/shop, the external "backend", API versions v1 and v2) with the
// example catalog (examples/catalog, the company's own "local" system).
//
// Read it top to bottom as a tour of the framework:
//
//   - Units (this file) declares the backend type "shop" and its versions:
//     v2 inherits every unit of v1 and registers only what differs (its
//     mappers, its importers and exporters, which read another timestamp
//     field, and its adapter, which pages lists differently).
//   - adapter.go has the two units.Adapter implementations over HTTP: the
//     shop's (network errors, 5xx and 429 are job.Retry; a 404 whose error
//     code says the record does not exist is units.Missing, any other 404,
//     a path the shop does not serve, is a permanent error) and the
//     catalog's, which passes the origin of an import's writes in the
//     X-Origin header.
//   - mappers.go maps products, customers and orders (with their lines)
//     field by field, for both versions.
//   - Register wires the jobs into a worker.Registry (import, export,
//     delete, batch import, all run by the units registry), and the export
//     listeners into events.Listeners: a catalog change becomes an
//     ExportRecord or DeleteRecord job, except when the change was made by
//     that shop's own import (events.SkipOrigin: echo suppression).
//   - Schedule registers the periodic, delayed batch imports: every tick,
//     one job per shop and model searches the shop and enqueues one
//     ImportRecord job per record (deduplicated by identity key). An order
//     imports its customer and products first when they are not bound yet.
//
// Bindings (shop id <-> catalog id, with the last sync date) and record locks
// live in Redis (bindings.Store). Every job goes to the channel "root.shop".
//
// What flows where:
//
//	shop --(scheduled batch import)--> ImportRecord jobs --> catalog (X-Origin: shop id)
//	catalog change --> event (origin) --> export listener --skip own origin--> ExportRecord / DeleteRecord --> shop
package shopconnector

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/connector-go/connector/bindings"
	"github.com/connector-go/connector/events"
	"github.com/connector-go/connector/job"
	"github.com/connector-go/connector/units"
	"github.com/connector-go/connector/worker"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"
)

// Type is the backend type; "v1" and "v2" are its versions.
const Type = "shop"

// Channel is the job channel of the shop connector: one channel per
// backend type, so that capacity can be given to it on its own.
const Channel = "root.shop"

// ImportedModels are imported from the shop by the scheduled batch imports.
// ExportedModels are sent back to the shop when they change in the catalog
// (orders are created in the shop only).
var (
	ImportedModels = []string{"product", "customer", "order"}
	ExportedModels = []string{"product", "customer"}
)

// Shop describes a shop instance: its id (any token, e.g. "shop-eu"), its
// API version ("v1" or "v2") and its base URL.
func Shop(id, version, url string) units.Backend {
	return units.Backend{ID: id, Type: Type, Version: version, Settings: map[string]string{"url": url}}
}

// Units builds the units registry of the shop connector: the backend type
// "shop", version "v1" under it and "v2" under v1. The shop adapters use hc
// (nil: a client with a 30 s timeout).
func Units(hc *http.Client) (*units.Registry, error) {
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	reg := units.NewRegistry()
	shop := reg.Backend(Type)
	v1 := shop.Version("v1")
	v2 := v1.Version("v2")
	var errs []error
	add := func(err error) { errs = append(errs, err) }

	// On the type itself: what no version changes. The adapter factory
	// reads the instance's URL and version; v1 lists say "items".
	add(units.Register(shop, units.AdapterUsage, units.AnyModel, shopAdapter(hc, "items")))
	// Batch imports are delayed: one ImportRecord job per record found,
	// deduplicated by the job's identity key, on the connector's channel.
	add(units.Register(shop, units.BatchImporterUsage, units.AnyModel,
		&units.BatchImporter{Delayed: true, JobOptions: []job.Option{job.WithChannel(Channel)}}))
	add(units.Register(shop, units.DeleterUsage, units.AnyModel, &units.Deleter{}))

	// v1: mappers, and importers/exporters that know v1's timestamp field.
	add(units.Register(v1, units.ImporterUsage, units.AnyModel, &units.Importer{UpdatedAt: stamp("updated_at")}))
	add(units.Register(v1, units.ImporterUsage, "order", &units.Importer{
		UpdatedAt:    stamp("updated_at"),
		Dependencies: orderDeps(field("customer_id"), "lines", field("product_id")),
	}))
	// An exporter that finds the shop's record changed imports it instead,
	// with a job on the connector's channel like all its jobs.
	onShop := []job.Option{job.WithChannel(Channel)}
	add(units.Register(v1, units.ExporterUsage, units.AnyModel, &units.Exporter{UpdatedAt: stamp("updated_at"), JobOptions: onShop}))
	add(units.Register(v1, units.ImportMapperUsage, "product", importProductV1))
	add(units.Register(v1, units.ImportMapperUsage, "customer", importCustomerV1))
	add(units.Register(v1, units.ImportMapperUsage, "order", importOrderV1))
	add(units.Register(v1, units.ImportMapperUsage, "order.line", importLineV1))
	add(units.Register(v1, units.ExportMapperUsage, "product", exportProductV1))
	add(units.Register(v1, units.ExportMapperUsage, "customer", exportCustomerV1))

	// v2 overrides what differs; its batch importer and deleter are the
	// type's, found by walking up the version tree.
	add(units.Register(v2, units.AdapterUsage, units.AnyModel, shopAdapter(hc, "data")))
	add(units.Register(v2, units.ImporterUsage, units.AnyModel, &units.Importer{UpdatedAt: stamp("modified")}))
	add(units.Register(v2, units.ImporterUsage, "order", &units.Importer{
		UpdatedAt:    stamp("modified"),
		Dependencies: orderDeps(nestedID("customer"), "items", nestedID("product")),
	}))
	add(units.Register(v2, units.ExporterUsage, units.AnyModel, &units.Exporter{UpdatedAt: stamp("modified"), JobOptions: onShop}))
	add(units.Register(v2, units.ImportMapperUsage, "product", importProductV2))
	add(units.Register(v2, units.ImportMapperUsage, "customer", importCustomerV2))
	add(units.Register(v2, units.ImportMapperUsage, "order", importOrderV2))
	add(units.Register(v2, units.ImportMapperUsage, "order.line", importLineV2))
	add(units.Register(v2, units.ExportMapperUsage, "product", exportProductV2))
	add(units.Register(v2, units.ExportMapperUsage, "customer", exportCustomerV2))
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return reg, nil
}

// shopAdapter is the AdapterFactory of the shop: the instance's settings
// give the URL, the backend version the API path.
func shopAdapter(hc *http.Client, listKey string) units.AdapterFactory {
	return func(w *units.Work) (units.Adapter, error) {
		url := w.Backend.Settings["url"]
		if url == "" {
			return nil, fmt.Errorf("shop %s has no url setting", w.Backend.ID)
		}
		a, err := NewShopAdapter(hc, strings.TrimRight(url, "/"), w.Backend.Version, w.Model, listKey)
		if err != nil {
			return nil, err
		}
		a.Settle = SearchSettle
		return a, nil
	}
}

// Config is what Register needs.
type Config struct {
	// Shops are the shop instances (see Shop).
	Shops []units.Backend
	// CatalogURL is the base URL of the catalog, e.g. http://catalog:8082.
	CatalogURL string
	// Bindings keeps the bindings and record locks (bindings.New(rdb, prefix)).
	Bindings *bindings.Store
	// Jobs enqueues the jobs of the listeners and the batch imports: the
	// dispatcher.
	Jobs job.Enqueuer
	// HTTPClient calls the shops and the catalog (nil: a client with a
	// 30 s timeout).
	HTTPClient *http.Client
	// Logger (nil: none).
	Logger *zap.Logger
	// Tracer traces the synchronizers' binder, adapter and local calls
	// (nil: none), e.g. the process's TracerProvider.Tracer("...units").
	Tracer trace.Tracer
	// Partitions of each export listener (0: 4): how many events of one
	// listener are handled at once across the fleet.
	Partitions int
}

// Register wires the shop connector into a worker registry and a set of
// event listeners: the four synchronization jobs, and one export listener
// per shop instance and exported model. Run the listeners next to the
// worker (service.Env.Listeners does: see cmd/shop-worker) and call
// Schedule once for the periodic imports.
func Register(reg *worker.Registry, l *events.Listeners, cfg Config) error {
	if len(cfg.Shops) == 0 || cfg.CatalogURL == "" || cfg.Bindings == nil || cfg.Jobs == nil {
		return errors.New("shopconnector: Config needs Shops, CatalogURL, Bindings and Jobs")
	}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	ureg, err := Units(hc)
	if err != nil {
		return err
	}
	catalogURL := strings.TrimRight(cfg.CatalogURL, "/")
	// The Env tells the synchronizers where everything is.
	env := units.Env{
		Backends: units.Backends(cfg.Shops...),
		Binders:  func(backendID, model string) units.Binder { return cfg.Bindings.Binder(backendID, model) },
		Local: func(model string) (units.Adapter, error) {
			return NewCatalogAdapter(hc, catalogURL, model)
		},
		Locker: cfg.Bindings,
		Jobs:   cfg.Jobs,
		Logger: cfg.Logger,
		Tracer: cfg.Tracer,
	}

	// The jobs: their arguments are the framework's, the units registry
	// runs them with the units of the backend's version.
	err = errors.Join(
		worker.Register(reg, func(ctx context.Context, j *job.Job[units.ImportRecord]) (string, error) {
			return ureg.RunImport(ctx, env, j.Args)
		}),
		worker.Register(reg, func(ctx context.Context, j *job.Job[units.ExportRecord]) (string, error) {
			return ureg.RunExport(ctx, env, j.Args)
		}),
		worker.Register(reg, func(ctx context.Context, j *job.Job[units.DeleteRecord]) (string, error) {
			return ureg.RunDelete(ctx, env, j.Args)
		}),
		worker.Register(reg, func(ctx context.Context, j *job.Job[units.ImportBatch]) (string, error) {
			return ureg.RunBatchImport(ctx, env, j.Args)
		}),
	)
	if err != nil {
		return err
	}

	parts := cfg.Partitions
	if parts <= 0 {
		parts = 4
	}
	for _, b := range cfg.Shops {
		for _, model := range ExportedModels {
			mapper, err := units.Lookup(ureg, b.Type, b.Version, units.ExportMapperUsage, model)
			if err != nil {
				return err
			}
			skip := []events.Predicate{
				// Echo suppression: this shop's own import made the change.
				events.SkipOrigin(b.ID),
				// A write that touched no field the export maps.
				events.And(isWrite, events.FieldsUnchanged(mapper.ChangedByFields()...)),
			}
			err = l.On(ExportListener(b.ID, model), model, "", exportHandler(cfg, b.ID, model),
				events.WithSkipIf(skip...), events.WithPartitions(parts))
			if err != nil {
				return err
			}
		}
	}
	return nil
}

func isWrite(ev events.Event) bool { return ev.Name == events.Write }

// ExportListener names the export listener of a shop instance and model
// (its durable consumers are named after it): "shop_export_<id>_<model>",
// or with a hash of an id too long for a listener name (64 characters).
func ExportListener(backendID, model string) string {
	return named("shop_export", "_", backendID, model, 64)
}

// named is prefix, backendID and model joined by sep when that is a valid
// name of at most max characters (letters, digits, '_' or '-'), else
// prefix+"h" and model around a hash of backendID: valid, stable, and
// distinct from the names of other ids.
func named(prefix, sep, backendID, model string, max int) string {
	if s := prefix + sep + backendID + sep + model; len(s) <= max && isToken(s) {
		return s
	}
	sum := sha256.Sum256([]byte(backendID))
	return prefix + "h" + sep + hex.EncodeToString(sum[:16]) + sep + model
}

// exportHandler turns a catalog event into a job: an ExportRecord for a
// create or write (with the changed fields, so that only they are sent), a
// DeleteRecord for an unlink of a record the shop has. The job id derives
// from the event id: an event delivered twice enqueues one job (JetStream
// deduplicates by job id).
func exportHandler(cfg Config, backendID, model string) events.Handler {
	return func(ctx context.Context, ev events.Event) error {
		opts := []job.Option{job.WithChannel(Channel)}
		if id := exportJobID(backendID, ev.ID); id != "" {
			opts = append(opts, job.WithID(id))
		}
		if ev.Name == events.Unlink {
			ext, found, err := cfg.Bindings.Binder(backendID, model).ToExternal(ctx, ev.RecordID)
			if err != nil || !found {
				return err // never exported: nothing to delete
			}
			_, err = cfg.Jobs.Enqueue(ctx, units.DeleteRecord{BackendID: backendID, Model: model, ExternalID: ext}, opts...)
			return err
		}
		fields := ev.Fields
		if ev.Name == events.Create {
			fields = nil
		}
		_, err := cfg.Jobs.Enqueue(ctx, units.ExportRecord{BackendID: backendID, Model: model, LocalID: ev.RecordID, Fields: fields}, opts...)
		return err
	}
}

// exportJobID is the job id of the export of event evID to backendID:
// "ev-<backend id>-<event id>" when that is a valid job id (1-128 letters,
// digits, '_' or '-'), else "evh-<head of the backend id>-<sha-256 of
// both>": still valid, the same for the same event, and distinct from
// every other (an id of the first form never starts with "evh-"). "" for
// an event without an id.
func exportJobID(backendID, evID string) string {
	if evID == "" {
		return ""
	}
	if id := "ev-" + backendID + "-" + evID; len(id) <= 128 && isToken(id) {
		return id
	}
	sum := sha256.Sum256([]byte(backendID + "\x00" + evID))
	head := []byte(backendID[:min(len(backendID), 40)])
	for i, c := range head {
		if !isToken(string(c)) {
			head[i] = '_'
		}
	}
	return "evh-" + string(head) + "-" + hex.EncodeToString(sum[:])
}

// isToken reports whether s is made of letters, digits, '_' and '-'.
func isToken(s string) bool {
	for _, c := range []byte(s) {
		if !(c == '-' || c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			return false
		}
	}
	return true
}

// Scheduler registers periodic jobs; *dispatcher.Dispatcher implements it.
type Scheduler interface {
	Schedule(ctx context.Context, name, spec string, args job.Args, opts ...job.Option) error
}

// Schedule registers, for every shop and imported model, a periodic
// ImportBatch job ("@every 30s", "@hourly", or a 6-field cron spec). The
// schedule lives in JetStream: it fires once per tick for the whole fleet,
// and registering it again from every process is harmless.
func Schedule(ctx context.Context, s Scheduler, shops []units.Backend, spec string) error {
	for _, b := range shops {
		for _, model := range ImportedModels {
			err := s.Schedule(ctx, named("shop-import", "-", b.ID, model, 128), spec,
				units.ImportBatch{BackendID: b.ID, Model: model}, job.WithChannel(Channel))
			if err != nil {
				return fmt.Errorf("shopconnector: schedule %s %s: %w", b.ID, model, err)
			}
		}
	}
	return nil
}
