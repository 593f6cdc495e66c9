package events_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"sync/atomic"
	"time"

	"github.com/connector-go/connector/events"
	"github.com/connector-go/connector/internal/streams"
	"github.com/connector-go/connector/internal/wire"
	"github.com/connector-go/connector/units"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/vmihailenco/msgpack/v5"
)

// startExample starts an embedded JetStream server (in production, your
// NATS cluster) with the connector streams under prefix (in production,
// the workers provision them).
func startExample(prefix string) (jetstream.JetStream, func(), error) {
	dir, _ := os.MkdirTemp("", "events-example")
	ns, err := server.NewServer(&server.Options{JetStream: true, StoreDir: dir, Port: -1, NoLog: true, NoSigs: true})
	if err != nil {
		return nil, nil, err
	}
	go ns.Start()
	ns.ReadyForConnections(10 * time.Second)
	nc, err := nats.Connect(ns.ClientURL())
	stop := func() {
		if nc != nil {
			nc.Close()
		}
		ns.Shutdown()
		os.RemoveAll(dir)
	}
	if err != nil {
		stop()
		return nil, nil, err
	}
	js, _ := jetstream.New(nc)
	if err := streams.Ensure(context.Background(), js, streams.Config{Names: wire.MustNames(prefix)}); err != nil {
		stop()
		return nil, nil, err
	}
	return js, stop, nil
}

// An export listener that skips the echoes of its own backend's imports.
func ExampleListeners() {
	js, stop, err := startExample("example")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	handled := make(chan events.Event)
	// No Redis here (no WithRedis): delivery is at least once either way.
	l, err := events.NewListeners(js, events.WithPrefix("example"))
	if err != nil {
		fmt.Println(err)
		return
	}
	err = l.On("export_partner_shop1", "res.partner", "", func(ctx context.Context, ev events.Event) error {
		// In a connector: enqueue units.ExportRecord{BackendID: "shop-1", ...}.
		handled <- ev
		return nil
	}, events.WithSkipIf(events.SkipOrigin("shop-1")))
	if err != nil {
		fmt.Println(err)
		return
	}
	done := make(chan error)
	go func() { done <- l.Run(ctx) }()

	pub, err := events.NewPublisher(js, events.WithPrefix("example"), events.WithOriginFrom(units.OriginFrom))
	if err != nil {
		fmt.Println(err)
		return
	}
	// The importer of shop-1 created partner 7: its event is an echo.
	_, _ = pub.Publish(units.WithOrigin(ctx, "shop-1"), events.Event{Model: "res.partner", Name: events.Create, RecordID: "7"})
	// A user renamed it: to be exported.
	_, _ = pub.Publish(ctx, events.Event{Model: "res.partner", Name: events.Write, RecordID: "7", Fields: []string{"name"}})

	ev := <-handled
	fmt.Println(ev.Name, ev.Model, ev.RecordID, ev.Fields, ev.Origin == "")
	cancel()
	fmt.Println(<-done)
	// Output:
	// write res.partner 7 [name] true
	// <nil>
}

// Predicates compose like the seed's @skip_if lambdas.
func ExamplePredicate() {
	skip := events.Or(
		events.SkipOrigin("shop-1"),
		events.And(
			events.SkipIf(func(ev events.Event) bool { return ev.Name == events.Write }),
			events.FieldsUnchanged("name", "email"),
		),
	)
	fmt.Println(skip(events.Event{Name: events.Write, Origin: "shop-1"}))
	fmt.Println(skip(events.Event{Name: events.Write, Fields: []string{"write_date"}}))
	fmt.Println(skip(events.Event{Name: events.Write, Fields: []string{"email"}}))
	fmt.Println(skip(events.Event{Name: events.Create, Fields: []string{"write_date"}}))
	// Output:
	// true
	// true
	// false
	// false
}

// The message a publisher in any language sends for an event: subject with
// the encoded model and the record's bucket, Nats-Msg-Id = event id, and a
// msgpack map (docs/events.md).
func ExamplePublisher_Message() {
	pub, err := events.NewPublisher(nil) // the default prefix, "connector"
	if err != nil {
		fmt.Println(err)
		return
	}
	msg, err := pub.Message(events.Event{
		ID: "01JD7X3M9Q8Z5K2V4N6P8R0T2W", Model: "res.partner", Name: events.Write, RecordID: "42",
		Fields: []string{"name"}, Origin: "shop-1", Time: time.UnixMilli(1700000000123),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(msg.Subject)
	fmt.Println("Nats-Msg-Id:", msg.Header.Get("Nats-Msg-Id"))
	var body map[string]any
	if err := msgpack.Unmarshal(msg.Data, &body); err != nil {
		fmt.Println(err)
		return
	}
	for _, k := range slices.Sorted(maps.Keys(body)) {
		fmt.Printf("%s: %v\n", k, body[k])
	}
	// Output:
	// connector.events.res:partner.write.83
	// Nats-Msg-Id: 01JD7X3M9Q8Z5K2V4N6P8R0T2W
	// event: write
	// fields: [name]
	// id: 01JD7X3M9Q8Z5K2V4N6P8R0T2W
	// model: res.partner
	// origin: shop-1
	// record_id: 42
	// time: 1700000000123
	// v: 1
}

// A listener gives up on an event (its backend was down); once the
// backend is back, the operator replays the dead event to that listener
// alone (`connector events replay SEQ`); the audit listener, which handled
// it the first time, does not handle it again (TestReplayDeadEventToItsListenerOnly
// checks that).
func ExamplePublisher_Replay() {
	js, stop, err := startExample("replay")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	var backendUp atomic.Bool
	exported, audited := make(chan string, 4), make(chan string, 4)
	l, err := events.NewListeners(js, events.WithPrefix("replay"))
	if err != nil {
		fmt.Println(err)
		return
	}
	_ = l.On("export", "res.partner", "", func(ctx context.Context, ev events.Event) error {
		if !backendUp.Load() {
			return errors.New("shop unreachable")
		}
		exported <- ev.RecordID
		return nil
	}, events.WithMaxDeliver(1)) // give up at once, for the example
	_ = l.On("audit", "res.partner", "", func(ctx context.Context, ev events.Event) error {
		audited <- ev.RecordID
		return nil
	})
	done := make(chan error)
	go func() { done <- l.Run(ctx) }()

	pub, err := events.NewPublisher(js, events.WithPrefix("replay"))
	if err != nil {
		fmt.Println(err)
		return
	}
	_, _ = pub.Publish(ctx, events.Event{Model: "res.partner", Name: events.Write, RecordID: "7"})
	fmt.Println("audited", <-audited)

	var dead []events.DeadLetter
	for deadline := time.Now().Add(10 * time.Second); len(dead) == 0 && time.Now().Before(deadline); {
		dead, _ = pub.DeadLetters(ctx, "", 0)
		time.Sleep(10 * time.Millisecond) // polling a condition, with a deadline
	}
	if len(dead) == 0 {
		fmt.Println("timeout")
		return
	}
	fmt.Println("dead for", dead[0].Listener+":", dead[0].Error)

	backendUp.Store(true)
	if err := pub.Replay(ctx, dead[0].Seq); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("exported", <-exported) // and not audited again
	cancel()
	fmt.Println(<-done)
	// Output:
	// audited 7
	// dead for export: shop unreachable
	// exported 7
	// <nil>
}
