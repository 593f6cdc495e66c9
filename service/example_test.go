package service_test

import (
	"context"

	"github.com/connector-go/connector/events"
	"github.com/connector-go/connector/job"
	"github.com/connector-go/connector/service"
	"github.com/connector-go/connector/worker"
)

// ExportPartner exports one local partner to the shop.
type ExportPartner struct {
	PartnerID string `msgpack:"partner_id"`
}

func (ExportPartner) JobName() string { return "shop.export_partner" }

// The main of a connector's own worker image: its jobs, and a listener
// that enqueues an export whenever a partner is written locally, except
// for the writes the shop's own importer made. Run it with the flags or
// the CONNECTOR_* environment of "connector worker" (-nats, -redis,
// -prefix, -channels, ...).
func Example() {
	reg := worker.NewRegistry()
	worker.MustRegister(reg, func(ctx context.Context, j *job.Job[ExportPartner]) (string, error) {
		// Read the partner, map it, send it to the shop (units.Synchronizer).
		return "exported " + j.Args.PartnerID, nil
	})
	service.Main(reg, func(ctx context.Context, env *service.Env) error {
		l, err := env.Listeners()
		if err != nil {
			return err
		}
		return l.On("shop_export_partner", "res.partner", events.Write, func(ctx context.Context, ev events.Event) error {
			_, err := env.Dispatcher.Enqueue(ctx, ExportPartner{PartnerID: ev.RecordID}, job.WithChannel("root.shop"))
			return err
		}, events.WithSkipIf(events.SkipOrigin("shop")))
	})
}
