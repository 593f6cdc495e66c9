package events

import (
	"context"
	"errors"
	"time"

	"github.com/connector-go/connector/internal/telemetry"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

// consume runs cons.Consume(handle) until ctx ends (it then drains and
// returns true) or until the consumption ends by itself (false: the caller
// creates the consumer again). nats.go does not always close a consumption
// whose consumer was deleted (the deletion notice missed, later pulls are
// answered "no responders"): such errors make it check that the consumer
// still exists, and stop when it does not.
func consume(ctx context.Context, log *zap.Logger, cons jetstream.Consumer, handle jetstream.MessageHandler, opts ...jetstream.PullConsumeOpt) bool {
	suspect := make(chan struct{}, 1)
	opts = append(opts, jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		if ctx.Err() == nil {
			log.Warn("events: consume", telemetry.ErrField(err))
		}
		if errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrConsumerDeleted) ||
			errors.Is(err, jetstream.ErrConsumerNotFound) {
			select {
			case suspect <- struct{}{}:
			default:
			}
		}
	}))
	cc, err := cons.Consume(handle, opts...)
	if err != nil {
		log.Warn("events: consume", telemetry.ErrField(err))
		return false
	}
	for {
		select {
		case <-ctx.Done():
			// Drain, not Stop: a message already in the client buffer
			// reaches the handler, which gives it back.
			cc.Drain()
			select {
			case <-cc.Closed():
			case <-time.After(5 * time.Second):
			}
			return true
		case <-cc.Closed():
			log.Warn("events: consumption stopped; creating the consumer again")
			return false
		case <-suspect:
			if _, err := cons.Info(ctx); errors.Is(err, jetstream.ErrConsumerNotFound) {
				log.Warn("events: consumer gone; creating it again")
				cc.Stop()
				return false
			}
		}
	}
}
