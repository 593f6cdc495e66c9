package events_test

import (
	"context"
	"testing"
	"time"

	"github.com/connector-go/connector/events"
	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/internal/wire"
	"github.com/nats-io/nats.go"
)

// A bucket token that reads as a negative number ("-1": two characters,
// and fmt's %02x of -1 gives it back) is no bucket: no partitioned
// listener's filter names it, so the subject guard must dead-letter the
// event rather than acknowledge it and leave it unseen until MaxAge.
func TestGuardDeadLettersNegativeBucket(t *testing.T) {
	e := newEnv(t)
	got := newCounter()
	l := e.listeners()
	must(t, l.On("sink", "res.partner", "", got.handle, events.WithPartitions(8)))
	e.start(l)

	good, err := e.publisher().Message(events.Event{ID: wire.NewID(), Model: "res.partner", Name: events.Write, RecordID: "42", Time: time.Now()})
	must(t, err)
	bad := e.names.Prefix + ".events.res:partner.write.-1"
	m := nats.NewMsg(bad)
	m.Data, m.Header = good.Data, nats.Header{"Nats-Msg-Id": []string{wire.NewID()}}
	if _, err := e.js.PublishMsg(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	if _, err := e.js.PublishMsg(context.Background(), good); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() bool { return got.get("42") == 1 }, "good event handled")
	cons, err := e.js.Consumer(context.Background(), e.names.EventsStream(), events.GuardConsumer)
	must(t, err)
	testenv.Eventually(t, 10*time.Second, func() bool {
		info, err := cons.Info(context.Background())
		return err == nil && info.NumAckPending == 0 && info.NumPending == 0
	}, "guard drained")
	dls := e.deadLetters()
	if len(dls) != 1 || dls[0].Subject != bad || dls[0].Reason != wire.ReasonUnknownModel {
		t.Fatalf("dead letters %+v; want one unknown_model letter of %s", dls, bad)
	}
}
