package events_test

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/connector-go/connector/events"
	"github.com/connector-go/connector/internal/streams"
	"github.com/connector-go/connector/internal/telemetry"
	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/internal/wire"
	"github.com/connector-go/connector/worker"
	"github.com/nats-io/nats.go"
	"github.com/vmihailenco/msgpack/v5"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// The wire format is what docs/events.md promises: subject with the encoded
// model and record bucket, Nats-Msg-Id = event id, traceparent in lower
// case, strict msgpack body; a second publish of the same id is deduped.
func TestPublishWireFormat(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	pub := e.publisher(events.WithTracerProvider(tp),
		events.WithOriginFrom(func(context.Context) string { return "shop-1" }))
	at := time.UnixMilli(1700000000123)
	ev := events.Event{Model: "res.partner", Name: events.Write, RecordID: "42", Fields: []string{"name"}, Time: at,
		Data: map[string]any{"name": "Ada"}}
	id, err := pub.Publish(ctx, ev)
	if err != nil {
		t.Fatal(err)
	}
	ev.ID = id
	if _, err := pub.Publish(ctx, ev); err != nil {
		t.Fatalf("republish: %v", err)
	}
	s, err := e.js.Stream(ctx, e.names.EventsStream())
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 1 {
		t.Fatalf("stream holds %d events, want 1 (dedup by Nats-Msg-Id)", info.State.Msgs)
	}
	raw, err := s.GetMsg(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("%s.events.res:partner.write.%02x", e.names.Prefix, wire.EventBucket("42")); raw.Subject != want {
		t.Fatalf("subject %q, want %q", raw.Subject, want)
	}
	if got := raw.Header.Get("Nats-Msg-Id"); got != id {
		t.Fatalf("Nats-Msg-Id %q, want %q", got, id)
	}
	if len(raw.Header["traceparent"]) != 1 {
		t.Fatalf("no lower-case traceparent header: %v", raw.Header)
	}
	var body map[string]any
	if err := msgpack.Unmarshal(raw.Data, &body); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"v", "id", "model", "event", "record_id", "fields", "origin", "time", "data"} {
		if _, ok := body[k]; !ok {
			t.Errorf("body lacks %q: %v", k, body)
		}
	}
	if body["origin"] != "shop-1" || body["model"] != "res.partner" || fmt.Sprint(body["time"]) != "1700000000123" {
		t.Fatalf("body %v", body)
	}
	spans := rec.Ended()
	if len(spans) != 2 || spans[0].SpanKind() != trace.SpanKindProducer {
		t.Fatalf("want 2 producer spans, got %d", len(spans))
	}
	if _, err := pub.Publish(ctx, events.Event{Model: "res.partner", Name: "bad.name", RecordID: "1"}); !errors.Is(err, events.ErrInvalidEvent) {
		t.Fatalf("bad event name: %v", err)
	}
}

// Each listener is a durable consumer shared by every worker: with three
// workers, every event is handled exactly once per listener, and two
// listeners on the same event each get all of them.
func TestEachListenerHandlesEachEventOnceAcrossWorkers(t *testing.T) {
	e := newEnv(t)
	const n = 120
	a, b := newCounter(), newCounter()
	var workersUsed sync.Map
	for w := 0; w < 3; w++ {
		l := e.listeners()
		if err := l.On("export_a", "res.partner", events.Write, func(_ context.Context, ev events.Event) error {
			a.inc(ev.ID)
			workersUsed.Store(w, true)
			return nil
		}, events.WithPartitions(4)); err != nil {
			t.Fatal(err)
		}
		if err := l.On("export_b", "res.partner", "", func(_ context.Context, ev events.Event) error {
			b.inc(ev.ID)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		e.start(l)
	}
	ids := make([]string, n)
	for i := range ids {
		ids[i] = e.publish(events.Event{Model: "res.partner", Name: events.Write, RecordID: fmt.Sprint(i)})
	}
	testenv.Eventually(t, 30*time.Second, func() bool {
		return len(a.snapshot()) == n && len(b.snapshot()) == n
	}, "both listeners handle all %d events", n)
	for _, id := range ids {
		if a.get(id) != 1 || b.get(id) != 1 {
			t.Fatalf("event %s handled %d/%d times", id, a.get(id), b.get(id))
		}
	}
	used := 0
	workersUsed.Range(func(any, any) bool { used++; return true })
	if used < 2 {
		t.Fatalf("only %d worker handled events; the test proves nothing", used)
	}
}

// A listener for (model, event) gets only that event of that model; a
// listener for a model with "" gets all its events; dotted model names do
// not leak into other models' subjects.
func TestListenerFilters(t *testing.T) {
	e := newEnv(t)
	writes, all := newCounter(), newCounter()
	l := e.listeners()
	must(t, l.On("writes", "res.partner", events.Write, func(_ context.Context, ev events.Event) error {
		writes.inc(ev.Model + "/" + ev.Name)
		return nil
	}, events.WithPartitions(1)))
	must(t, l.On("all", "res.partner", "", func(_ context.Context, ev events.Event) error {
		all.inc(ev.Model + "/" + ev.Name)
		return nil
	}, events.WithPartitions(2)))
	e.start(l)
	for _, ev := range []events.Event{
		{Model: "res.partner", Name: events.Create, RecordID: "1"},
		{Model: "res.partner", Name: events.Write, RecordID: "1"},
		{Model: "res.partner", Name: events.Unlink, RecordID: "1"},
		{Model: "res.partner.bank", Name: events.Write, RecordID: "1"},
		{Model: "res", Name: events.Write, RecordID: "1"},
	} {
		e.publish(ev)
	}
	// Markers after everything: once one is handled, everything before it
	// in its partition has been (one record id: one partition), so events
	// wrongly matched could not arrive later.
	e.publish(events.Event{Model: "res.partner", Name: "marker", RecordID: "1"})
	e.publish(events.Event{Model: "res.partner", Name: events.Write, RecordID: "1", Data: map[string]any{"marker": true}})
	testenv.Eventually(t, 10*time.Second, func() bool { return all.get("res.partner/marker") == 1 }, "marker handled")
	testenv.Eventually(t, 10*time.Second, func() bool { return writes.get("res.partner/write") == 2 }, "writes handled")
	testenv.Eventually(t, 10*time.Second, func() bool { return all.get("res.partner/write") == 2 }, "writes handled by the all-events listener")
	if got := all.snapshot(); len(got) != 4 || got["res.partner/create"] != 1 || got["res.partner/unlink"] != 1 || got["res.partner/marker"] != 1 {
		t.Fatalf("all-events listener got %v", got)
	}
	if got := writes.snapshot(); len(got) != 1 {
		t.Fatalf("write listener got %v", got)
	}
}

// Events of one record are handled in publication order, with several
// workers pulling from every partition, handlers of random duration and
// failures retried after a delay; events of different records do run in
// parallel.
func TestPerRecordOrderUnderParallelism(t *testing.T) {
	e := newEnv(t)
	const records, perRecord = 16, 12
	var (
		mu       sync.Mutex
		seen     = map[string][]int{}
		running  atomic.Int32
		maxRun   atomic.Int32
		violated atomic.Value
		failures atomic.Int32
	)
	handler := func(_ context.Context, ev events.Event) error {
		r := running.Add(1)
		defer running.Add(-1)
		for {
			m := maxRun.Load()
			if r <= m || maxRun.CompareAndSwap(m, r) {
				break
			}
		}
		// Random work, so that workers finish out of order.
		time.Sleep(time.Duration(rand.IntN(3000)) * time.Microsecond)
		n, _ := strconv.Atoi(fmt.Sprint(ev.Data["n"]))
		if (n+len(ev.RecordID))%7 == 0 && ev.Attempt == 1 {
			// A failure: the event is retried later, and its record's
			// later events must wait for it.
			failures.Add(1)
			return errors.New("transient")
		}
		mu.Lock()
		defer mu.Unlock()
		list := seen[ev.RecordID]
		if len(list) > 0 && list[len(list)-1] >= n {
			violated.Store(fmt.Sprintf("record %s: %d after %v", ev.RecordID, n, list))
		}
		seen[ev.RecordID] = append(list, n)
		return nil
	}
	for w := 0; w < 3; w++ {
		l := e.listeners()
		must(t, l.On("ordered", "product.product", events.Write, handler, events.WithPartitions(8),
			events.WithRetryDelay(func(int) time.Duration { return 10 * time.Millisecond })))
		e.start(l)
	}
	pub := e.publisher()
	for n := 0; n < perRecord; n++ {
		for r := 0; r < records; r++ {
			if _, err := pub.Publish(context.Background(), events.Event{
				Model: "product.product", Name: events.Write, RecordID: fmt.Sprintf("p%d", r),
				Data: map[string]any{"n": n},
			}); err != nil {
				t.Fatal(err)
			}
		}
	}
	testenv.Eventually(t, 40*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		total := 0
		for _, l := range seen {
			total += len(l)
		}
		return total == records*perRecord
	}, "all events handled")
	if v := violated.Load(); v != nil {
		t.Fatalf("order violated: %v", v)
	}
	if maxRun.Load() < 2 {
		t.Fatalf("at most %d handler ran at once: no parallelism across records", maxRun.Load())
	}
	if failures.Load() == 0 {
		t.Fatal("no handler failed; retries untested")
	}
	t.Logf("max handlers at once: %d, failures retried: %d", maxRun.Load(), failures.Load())
}

// skip_if: predicates compose; skipped events are acknowledged without
// calling the handler, and the listener goes on.
func TestSkipIf(t *testing.T) {
	e := newEnv(t)
	got := newCounter()
	l := e.listeners()
	must(t, l.On("export_shop1", "res.partner", "", got.handle, events.WithPartitions(1), events.WithSkipIf(
		events.SkipOrigin("shop-1"),
		events.And(events.SkipIf(func(ev events.Event) bool { return ev.Name == events.Write }), events.FieldsUnchanged("name", "email")),
	)))
	e.start(l)
	e.publish(events.Event{Model: "res.partner", Name: events.Write, RecordID: "echo", Origin: "shop-1", Fields: []string{"name"}})
	e.publish(events.Event{Model: "res.partner", Name: events.Write, RecordID: "other-backend", Origin: "shop-2", Fields: []string{"name"}})
	e.publish(events.Event{Model: "res.partner", Name: events.Write, RecordID: "unmapped", Fields: []string{"write_date"}})
	e.publish(events.Event{Model: "res.partner", Name: events.Create, RecordID: "created", Fields: []string{"write_date"}})
	e.publish(events.Event{Model: "res.partner", Name: events.Write, RecordID: "user", Fields: []string{"email"}})
	testenv.Eventually(t, 10*time.Second, func() bool { return got.get("user") == 1 }, "last event handled")
	want := map[string]int{"other-backend": 1, "created": 1, "user": 1}
	if g := got.snapshot(); fmt.Sprint(g) != fmt.Sprint(want) {
		t.Fatalf("handled %v, want %v", g, want)
	}
}

func TestPredicates(t *testing.T) {
	ev := events.Event{Origin: "a", Fields: []string{"x"}}
	yes := events.SkipIf(func(events.Event) bool { return true })
	no := events.Not(yes)
	cases := []struct {
		name string
		p    events.Predicate
		want bool
	}{
		{"origin match", events.SkipOrigin("b", "a"), true},
		{"origin other", events.SkipOrigin("b"), false},
		{"origin empty", events.SkipOrigin(""), false},
		{"and", events.And(yes, no), false},
		{"and empty", events.And(), true},
		{"or", events.Or(no, yes), true},
		{"or empty", events.Or(), false},
		{"fields hit", events.FieldsUnchanged("x"), false},
		{"fields miss", events.FieldsUnchanged("y"), true},
		{"not", events.Not(events.SkipOrigin("a")), false},
	}
	for _, c := range cases {
		if got := c.p(ev); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
	if events.FieldsUnchanged("y")(events.Event{}) {
		t.Error("an event without a field list must not be skipped")
	}
	// No origin is a user's (or another process's) change, never an echo:
	// not even a backend id left empty by mistake skips it.
	if events.SkipOrigin("", "shop-1")(events.Event{Fields: []string{"x"}}) {
		t.Error("SkipOrigin skipped an event without origin")
	}
}

// Bad events are dead-lettered with a reason, keeping the original
// message, and the listener goes on with the next event.
func TestBadEventsAreDeadLettered(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	got := newCounter()
	l := e.listeners()
	must(t, l.On("sink", "res.partner", "", got.handle, events.WithPartitions(1)))
	e.start(l)

	garbage := nats.NewMsg(e.names.EventSubject("res.partner", events.Write, "1"))
	garbage.Data = []byte("not msgpack")
	garbage.Header.Set("X-Test", "kept")
	if _, err := e.js.PublishMsg(ctx, garbage); err != nil {
		t.Fatal(err)
	}
	// A valid body published on another model's subject.
	mismatch, err := e.publisher().Message(events.Event{ID: wire.NewID(), Model: "res.users", Name: events.Write, RecordID: "2", Time: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	mismatch.Subject = e.names.EventSubject("res.partner", events.Write, "2")
	if _, err := e.js.PublishMsg(ctx, mismatch); err != nil {
		t.Fatal(err)
	}
	// A body whose event is not the subject's: a listener of writes must
	// not handle a create.
	otherEvent, err := e.publisher().Message(events.Event{ID: wire.NewID(), Model: "res.partner", Name: events.Create, RecordID: "3", Time: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	otherEvent.Subject = e.names.EventSubject("res.partner", events.Write, "3")
	if _, err := e.js.PublishMsg(ctx, otherEvent); err != nil {
		t.Fatal(err)
	}
	// A body whose record is not in the subject's bucket: its events would
	// not be ordered with the record's other events.
	otherBucket, err := e.publisher().Message(events.Event{ID: wire.NewID(), Model: "res.partner", Name: events.Write, RecordID: "4", Time: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	otherBucket.Subject = e.names.EventSubject("res.partner", events.Write, "5")
	if otherBucket.Subject == e.names.EventSubject("res.partner", events.Write, "4") {
		t.Fatal("records 4 and 5 share a bucket; the test proves nothing")
	}
	if _, err := e.js.PublishMsg(ctx, otherBucket); err != nil {
		t.Fatal(err)
	}
	e.publish(events.Event{Model: "res.partner", Name: events.Write, RecordID: "good"})
	testenv.Eventually(t, 10*time.Second, func() bool { return got.get("good") == 1 }, "good event handled after bad ones")
	letters := e.deadLetters()
	if len(letters) != 4 {
		t.Fatalf("%d dead letters, want 4", len(letters))
	}
	if letters[0].Reason != wire.ReasonMalformed || string(letters[0].Data) != "not msgpack" ||
		letters[0].Subject != garbage.Subject || letters[0].Headers["X-Test"][0] != "kept" || letters[0].StreamSeq != 1 {
		t.Fatalf("letter 0: %+v", letters[0])
	}
	for i, dl := range letters[1:] {
		if dl.Reason != wire.ReasonUnknownModel || dl.StreamSeq != uint64(i+2) {
			t.Fatalf("letter %d: %+v", i+1, dl)
		}
	}
	if len(got.snapshot()) != 1 {
		t.Fatalf("handler saw %v", got.snapshot())
	}
}

// A failing handler is retried after a delay; after MaxDeliver deliveries
// the event is dead-lettered with reason "error" (or "panic", for a
// panicking handler or skip_if predicate) and terminated, and the listener
// goes on. A handler that recovers is not dead-lettered.
func TestHandlerErrorsRetryThenDeadLetter(t *testing.T) {
	e := newEnv(t)
	calls := newCounter()
	l := e.listeners()
	must(t, l.On("flaky", "sale.order", "", func(_ context.Context, ev events.Event) error {
		calls.inc(ev.RecordID)
		switch {
		case ev.RecordID == "broken":
			return errors.New("backend says no")
		case ev.RecordID == "panics":
			panic("boom")
		case ev.RecordID == "flaky" && ev.Attempt == 1:
			return errors.New("temporary")
		}
		return nil
	}, events.WithPartitions(1), events.WithMaxDeliver(3),
		events.WithRetryDelay(func(int) time.Duration { return 20 * time.Millisecond }),
		events.WithSkipIf(func(ev events.Event) bool {
			if ev.RecordID == "predicate-panics" {
				panic("bad predicate")
			}
			return false
		})))
	e.start(l)
	for _, r := range []string{"broken", "flaky", "panics", "predicate-panics", "after"} {
		e.publish(events.Event{Model: "sale.order", Name: events.Write, RecordID: r})
	}
	testenv.Eventually(t, 15*time.Second, func() bool { return calls.get("after") == 1 }, "event after the failures handled")
	if c := calls.snapshot(); c["broken"] != 3 || c["flaky"] != 2 || c["panics"] != 3 {
		t.Fatalf("calls %v, want broken 3, flaky 2, panics 3", c)
	}
	testenv.Eventually(t, 5*time.Second, func() bool { return len(e.deadLetters()) == 3 }, "three dead letters")
	letters := e.deadLetters()
	if letters[0].Reason != wire.ReasonError || letters[0].Attempts != 3 || letters[0].Error != "backend says no" {
		t.Fatalf("letter 0: %+v", letters[0])
	}
	for _, dl := range letters[1:] {
		if dl.Reason != wire.ReasonPanic || dl.Stack == "" || dl.Attempts != 3 {
			t.Fatalf("letter: %+v", dl)
		}
	}
	if calls.get("predicate-panics") != 0 {
		t.Fatal("handler called although its predicate panicked")
	}
	// Terminated: the consumer has nothing pending or waiting for an ack.
	cons, err := e.js.Consumer(context.Background(), e.names.EventsStream(), events.ConsumerName("flaky", 0, 1))
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, func() bool {
		info, err := cons.Info(context.Background())
		return err == nil && info.NumAckPending == 0 && info.NumPending == 0
	}, "consumer drained")
}

// The dead letter is written before the event is terminated: while the
// letter cannot be written (here the dead-letter stream is gone), the event
// is not terminated but delivered again; once the letter can be written it
// is, and the event is terminated.
func TestEventRetriedWhileItsDeadLetterCannotBeWritten(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	calls := newCounter()
	l := e.listeners()
	must(t, l.On("unlucky", "sale.order", "", func(_ context.Context, ev events.Event) error {
		calls.inc(ev.RecordID)
		return errors.New("backend says no")
	}, events.WithPartitions(1), events.WithMaxDeliver(1),
		events.WithRetryDelay(func(int) time.Duration { return 20 * time.Millisecond })))
	must(t, e.js.DeleteStream(ctx, e.names.DeadStream()))
	e.start(l)
	e.publish(events.Event{Model: "sale.order", Name: events.Write, RecordID: "1"})
	testenv.Eventually(t, 15*time.Second, func() bool { return calls.get("1") >= 3 },
		"the event delivered again while its letter cannot be written")

	must(t, streams.Ensure(ctx, e.js, streams.Config{Names: e.names, Memory: true}))
	testenv.Eventually(t, 15*time.Second, func() bool { return len(e.deadLetters()) == 1 }, "the letter written once the stream is back")
	if dl := e.deadLetters()[0]; dl.Reason != wire.ReasonError || dl.Attempts < 3 {
		t.Fatalf("letter %+v", dl)
	}
	cons, err := e.js.Consumer(ctx, e.names.EventsStream(), events.ConsumerName("unlucky", 0, 1))
	must(t, err)
	testenv.Eventually(t, 5*time.Second, func() bool {
		info, err := cons.Info(ctx)
		return err == nil && info.NumAckPending == 0 && info.NumPending == 0
	}, "event terminated")
}

// An event too large for its dead letter to carry it (the letter is the
// event plus its own fields: over max_payload) is dead-lettered all the
// same, by a letter without the event's body and headers that points at it
// in the events stream (StreamSeq, and the time the stream stored it in
// EnqueuedAt); the partition goes on with its next event. Without that the
// letter could never be written, the event would be given back forever,
// and, one event at a time per partition, the events behind it would wait
// for good. So too for the subject guard's letters.
func TestLargeDeadEventIsDeadLetteredWithoutItsBody(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	got := newCounter()
	l := e.listeners()
	must(t, l.On("bulky", "res.partner", "", func(_ context.Context, ev events.Event) error {
		got.inc(ev.RecordID)
		if ev.RecordID == "big" {
			return errors.New("the shop refuses it")
		}
		return nil
	}, events.WithPartitions(1), events.WithMaxDeliver(1),
		events.WithRetryDelay(func(int) time.Duration { return 50 * time.Millisecond })))
	e.start(l)
	pub := e.publisher()

	big := largeEvent(t, pub, "big")
	if _, err := pub.Publish(ctx, big); err != nil {
		t.Fatalf("publish of a body under the documented limit: %v", err)
	}
	e.publish(events.Event{Model: "res.partner", Name: events.Write, RecordID: "next"})
	// As large, on a subject no listener can match: the guard's letter.
	stray := nats.NewMsg(e.names.Prefix + ".events.res.partner.write")
	stray.Data = make([]byte, (1<<20)-256)
	strayAck, err := e.js.PublishMsg(ctx, stray)
	must(t, err)

	testenv.Eventually(t, 15*time.Second, func() bool { return got.get("next") == 1 },
		"the next event of the partition handled after the large one")
	e.drained("bulky")
	if n := got.get("big"); n != 1 {
		t.Errorf("the large event handled %d times, want 1", n)
	}
	letters, err := pub.DeadLetters(ctx, "bulky", 0)
	must(t, err)
	if len(letters) != 1 {
		t.Fatalf("dead letters of bulky: %+v; want the large event's", letters)
	}
	stream, err := e.js.Stream(ctx, e.names.EventsStream())
	must(t, err)
	stored, err := stream.GetMsg(ctx, letters[0].StreamSeq)
	must(t, err)
	if dl := letters[0]; len(dl.Data) != 0 || len(dl.Headers) != 0 || dl.Reason != wire.ReasonError ||
		dl.DeadLetter.Subject != stored.Subject || dl.EnqueuedAt != stored.Time.UnixMilli() || stored.Header.Get(wire.HeaderMsgID) != big.ID {
		t.Fatalf("letter %+v of the event stored at seq %d (%s, %v)", dl, dl.StreamSeq, stored.Subject, stored.Time)
	}
	var guarded []events.DeadLetter
	testenv.Eventually(t, 10*time.Second, func() bool {
		guarded, err = pub.DeadLetters(ctx, events.GuardName, 0)
		return err == nil && len(guarded) == 1
	}, "the large stray event dead-lettered by the guard")
	if dl := guarded[0]; len(dl.Data) != 0 || dl.StreamSeq != strayAck.Sequence || dl.Reason != wire.ReasonUnknownModel {
		t.Fatalf("the guard's letter: %+v", dl)
	}
}

// Events published while no worker runs wait in the stream; a listener
// started later handles all of them. A listener stopped with events pending
// and started again (another Listeners, same name) resumes where it was.
func TestEventsWaitForWorkers(t *testing.T) {
	e := newEnv(t)
	got := newCounter()
	h := func(_ context.Context, ev events.Event) error { got.inc(ev.ID); return nil }
	for i := 0; i < 20; i++ {
		e.publish(events.Event{Model: "res.partner", Name: events.Create, RecordID: fmt.Sprint(i)})
	}
	l := e.listeners()
	must(t, l.On("late", "res.partner", "", h))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	testenv.Eventually(t, 10*time.Second, func() bool { return len(got.snapshot()) == 20 }, "20 pending events handled")
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		e.publish(events.Event{Model: "res.partner", Name: events.Create, RecordID: fmt.Sprint(i)})
	}
	l2 := e.listeners()
	must(t, l2.On("late", "res.partner", "", h))
	e.start(l2)
	testenv.Eventually(t, 10*time.Second, func() bool { return len(got.snapshot()) == 40 }, "20 more handled after restart")
	for id, c := range got.snapshot() {
		if c != 1 {
			t.Fatalf("event %s handled %d times", id, c)
		}
	}
}

// The handler's CONSUMER span is a child of the publisher's PRODUCER span.
func TestTracingParentsConsumerToProducer(t *testing.T) {
	e := newEnv(t)
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	tr := tp.Tracer("test")
	var handlerSpan atomic.Value
	l := e.listeners(events.WithTracerProvider(tp))
	must(t, l.On("traced", "res.partner", "", func(ctx context.Context, _ events.Event) error {
		handlerSpan.Store(trace.SpanContextFromContext(ctx))
		return nil
	}, events.WithPartitions(1)))
	e.start(l)
	ctx, root := tr.Start(context.Background(), "request")
	if _, err := e.publisher(events.WithTracerProvider(tp)).Publish(ctx,
		events.Event{Model: "res.partner", Name: events.Write, RecordID: "1"}); err != nil {
		t.Fatal(err)
	}
	root.End()
	testenv.Eventually(t, 10*time.Second, func() bool { return handlerSpan.Load() != nil }, "handled")
	sc := handlerSpan.Load().(trace.SpanContext)
	if sc.TraceID() != root.SpanContext().TraceID() {
		t.Fatalf("handler in trace %s, publisher in %s", sc.TraceID(), root.SpanContext().TraceID())
	}
	testenv.Eventually(t, 5*time.Second, func() bool { return len(rec.Ended()) == 3 }, "3 spans ended")
	var producer, consumer sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		switch s.SpanKind() {
		case trace.SpanKindProducer:
			producer = s
		case trace.SpanKindConsumer:
			consumer = s
		}
	}
	if producer == nil || consumer == nil || consumer.Parent().SpanID() != producer.SpanContext().SpanID() {
		t.Fatalf("consumer span not a child of the producer span")
	}
}

// With WithLinkedTraces each handling of an event starts a new trace: its
// CONSUMER span is a root with one link to the publisher's PRODUCER span,
// and the handler runs in that new trace. A retried event gets one such
// span per delivery, each linked to the same producer span.
func TestLinkedTracesLinkConsumerToProducer(t *testing.T) {
	e := newEnv(t)
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp), sdktrace.WithSampler(sdktrace.AlwaysSample()))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	tr := tp.Tracer("test")
	var mu sync.Mutex
	var handled []trace.SpanContext // the handler's span, per delivery
	l := e.listeners(events.WithTracerProvider(tp), events.WithLinkedTraces())
	must(t, l.On("linked", "res.partner", "", func(ctx context.Context, ev events.Event) error {
		mu.Lock()
		handled = append(handled, trace.SpanContextFromContext(ctx))
		mu.Unlock()
		if ev.Attempt == 1 {
			return errors.New("catalog unavailable")
		}
		return nil
	}, events.WithPartitions(1), events.WithRetryDelay(func(int) time.Duration { return 10 * time.Millisecond })))
	e.start(l)

	ctx, root := tr.Start(context.Background(), "request")
	id, err := e.publisher(events.WithTracerProvider(tp)).Publish(ctx,
		events.Event{Model: "res.partner", Name: events.Write, RecordID: "1"})
	root.End()
	if err != nil {
		t.Fatal(err)
	}
	consumers := func() (producer tracetest.SpanStub, out tracetest.SpanStubs) {
		for _, s := range exp.GetSpans() {
			switch s.SpanKind {
			case trace.SpanKindProducer:
				producer = s
			case trace.SpanKindConsumer:
				out = append(out, s)
			}
		}
		return producer, out
	}
	testenv.Eventually(t, 15*time.Second, func() bool { _, c := consumers(); return len(c) == 2 },
		"two consumer spans ended (a failed delivery and its retry)")
	producer, cons := consumers()
	if !producer.SpanContext.IsValid() || producer.Parent.SpanID() != root.SpanContext().SpanID() {
		t.Fatalf("producer span %+v: want the child of the request span", producer)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(handled) != 2 {
		t.Fatalf("%d deliveries handled, want 2", len(handled))
	}
	for i, c := range cons {
		if c.SpanContext.TraceID() == producer.SpanContext.TraceID() {
			t.Errorf("consumer span %d in the producer's trace %s: want a new trace", i, c.SpanContext.TraceID())
		}
		if c.Parent.IsValid() {
			t.Errorf("consumer span %d has parent %s: want a root span", i, c.Parent.SpanID())
		}
		if len(c.Links) != 1 || c.Links[0].SpanContext.TraceID() != producer.SpanContext.TraceID() ||
			c.Links[0].SpanContext.SpanID() != producer.SpanContext.SpanID() {
			t.Errorf("consumer span %d links %+v: want one link to the producer span %s", i, c.Links, producer.SpanContext.SpanID())
		}
		if c.Name != "process "+e.names.EventsStream() {
			t.Errorf("consumer span %d named %q", i, c.Name)
		}
		var msgID string
		for _, kv := range c.Attributes {
			if kv.Key == "messaging.message.id" {
				msgID = kv.Value.AsString()
			}
		}
		if msgID != id {
			t.Errorf("consumer span %d: messaging.message.id %q, want %q", i, msgID, id)
		}
		if !slices.ContainsFunc(handled, func(sc trace.SpanContext) bool { return sc.Equal(c.SpanContext) }) {
			t.Errorf("consumer span %d is not the span the handler ran in", i)
		}
	}
	if len(cons) == 2 && cons[0].SpanContext.TraceID() == cons[1].SpanContext.TraceID() {
		t.Error("both deliveries in one trace: want a new trace per delivery")
	}
}

// A prefix that cannot name subjects is refused by both constructors; a
// SharedOption serves both.
func TestConstructorsCheckThePrefix(t *testing.T) {
	for _, bad := range []string{"a.b", "a b", "a>"} {
		if _, err := events.NewPublisher(nil, events.WithPrefix(bad)); err == nil {
			t.Errorf("NewPublisher accepted prefix %q", bad)
		}
		if _, err := events.NewListeners(nil, events.WithPrefix(bad)); err == nil {
			t.Errorf("NewListeners accepted prefix %q", bad)
		}
	}
	shared := []events.SharedOption{events.WithPrefix("shop-2")}
	pub, err := events.NewPublisher(nil, shared[0])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := events.NewListeners(nil, shared[0]); err != nil {
		t.Fatal(err)
	}
	msg, err := pub.Message(events.Event{ID: "1", Model: "res.partner", Name: events.Write, RecordID: "1", Time: time.Now()})
	if err != nil || !strings.HasPrefix(msg.Subject, "shop-2.events.") {
		t.Fatalf("subject under WithPrefix(\"shop-2\"): %v, %v", msg, err)
	}
}

// An ack wait under 1 s is refused, as the worker refuses it: the
// heartbeats tick every AckWait/3, and a tick of 0 panicked in the
// listener's goroutine, taking the process down.
func TestListenersRefuseATinyAckWait(t *testing.T) {
	for _, d := range []time.Duration{time.Nanosecond, 2 * time.Nanosecond, 500 * time.Millisecond} {
		if _, err := events.NewListeners(nil, events.WithAckWait(d)); err == nil {
			t.Errorf("NewListeners accepted an ack wait of %s", d)
		}
	}
	if _, err := events.NewListeners(nil, events.WithAckWait(time.Second)); err != nil {
		t.Fatal(err)
	}
}

func TestOnValidates(t *testing.T) {
	l, err := events.NewListeners(nil, events.WithPrefix("x"))
	if err != nil {
		t.Fatal(err)
	}
	h := func(context.Context, events.Event) error { return nil }
	bad := []func() error{
		func() error { return l.On("a.b", "m", "", h) },
		func() error { return l.On("a", "", "", h) },
		func() error { return l.On("a", "m", "x.y", h) },
		func() error { return l.On("a", "m", "", nil) },
		func() error { return l.On("a", "m", "", h, events.WithPartitions(3)) },
		func() error { return l.On("a", "m", "", h, events.WithPartitions(512)) },
		func() error { return l.On("a", "m", "", h, events.WithMaxDeliver(0)) },
	}
	for i, f := range bad {
		if err := f(); !errors.Is(err, events.ErrBadListener) {
			t.Errorf("case %d: err = %v", i, err)
		}
	}
	must(t, l.On("a", "m", "", h))
	if err := l.On("a", "m", "", h); !errors.Is(err, events.ErrBadListener) {
		t.Errorf("duplicate name: %v", err)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// The listener keeps, per partition, the stream sequence of the last event
// handled (in Redis, shared by every process). An event delivered again
// after it was handled (its acknowledgement lost) is acknowledged without
// calling the handler again. Here the lost acks are simulated by raising
// the mark while no worker runs.
func TestEventsHandledBeforeAreNotHandledAgain(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	got := newCounter()
	h := func(_ context.Context, ev events.Event) error { got.inc(ev.RecordID); return nil }
	l := e.listeners()
	must(t, l.On("dedupe", "res.partner", "", h, events.WithPartitions(1)))
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- l.Run(runCtx) }()
	e.publish(events.Event{Model: "res.partner", Name: events.Write, RecordID: "1"})
	testenv.Eventually(t, 10*time.Second, func() bool { return got.get("1") == 1 }, "first event handled")
	cancel()
	must(t, <-done)

	cons, err := e.js.Consumer(ctx, e.names.EventsStream(), events.ConsumerName("dedupe", 0, 1))
	if err != nil {
		t.Fatal(err)
	}
	stream, err := e.js.Stream(ctx, e.names.EventsStream())
	if err != nil {
		t.Fatal(err)
	}
	key := e.names.RedisKey("events", "seq", events.ConsumerName("dedupe", 0, 1), strconv.FormatInt(stream.CachedInfo().Created.UnixNano(), 10), "res.partner/*")
	if v, err := e.rdb.Get(ctx, key).Int(); err != nil || v != 1 {
		t.Fatalf("mark %s = %d, %v; want 1", key, v, err)
	}
	// The mark expires a day after the events it covers have aged out of
	// the stream: marks of retired consumers and old streams do not pile up.
	maxAge := stream.CachedInfo().Config.MaxAge
	if ttl, err := e.rdb.PTTL(ctx, key).Result(); err != nil || ttl <= maxAge || ttl > maxAge+24*time.Hour {
		t.Fatalf("mark %s expires in %v (%v); want within a day over the stream's MaxAge %v", key, ttl, err, maxAge)
	}
	must(t, e.rdb.Set(ctx, key, 3, 0).Err())
	for _, r := range []string{"2", "3", "4"} {
		e.publish(events.Event{Model: "res.partner", Name: events.Write, RecordID: r})
	}
	l2 := e.listeners()
	must(t, l2.On("dedupe", "res.partner", "", h, events.WithPartitions(1)))
	e.start(l2)
	testenv.Eventually(t, 10*time.Second, func() bool { return got.get("4") == 1 }, "event 4 handled")
	if got.get("2") != 0 || got.get("3") != 0 {
		t.Fatalf("events below the mark handled again: %v", got.snapshot())
	}
	testenv.Eventually(t, 5*time.Second, func() bool {
		info, err := cons.Info(ctx)
		return err == nil && info.NumAckPending == 0 && info.NumPending == 0
	}, "consumer drained")
}

// A consumer deleted under a running listener (an operator's mistake) is
// created again; it reads the stream from the start, and the marks in
// Redis keep the events already handled from being handled again.
func TestDeletedConsumerIsRecreated(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	got := newCounter()
	l := e.listeners()
	must(t, l.On("phoenix", "res.partner", "", got.handle, events.WithPartitions(1)))
	e.start(l)
	for i := 0; i < 5; i++ {
		e.publish(events.Event{Model: "res.partner", Name: events.Write, RecordID: fmt.Sprint(i)})
	}
	testenv.Eventually(t, 10*time.Second, func() bool { return len(got.snapshot()) == 5 }, "5 events handled")
	must(t, e.js.DeleteConsumer(ctx, e.names.EventsStream(), events.ConsumerName("phoenix", 0, 1)))
	for i := 5; i < 10; i++ {
		e.publish(events.Event{Model: "res.partner", Name: events.Write, RecordID: fmt.Sprint(i)})
	}
	testenv.Eventually(t, 20*time.Second, func() bool { return len(got.snapshot()) == 10 }, "events after the deletion handled")
	for r, c := range got.snapshot() {
		if c != 1 {
			t.Fatalf("record %s handled %d times", r, c)
		}
	}
}

// With WithMeterProvider, connector.events.handled counts each delivery by
// listener, model, event and outcome.
func TestMetricsCountOutcomes(t *testing.T) {
	e := newEnv(t)
	reader := sdkmetric.NewManualReader()
	got := newCounter()
	l := e.listeners(events.WithMeterProvider(sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))))
	must(t, l.On("metered", "res.partner", "", func(_ context.Context, ev events.Event) error {
		got.inc(ev.RecordID)
		if ev.RecordID == "flaky" && ev.Attempt == 1 {
			return errors.New("once")
		}
		return nil
	}, events.WithPartitions(1), events.WithSkipIf(events.SkipOrigin("shop-1")),
		events.WithRetryDelay(func(int) time.Duration { return 10 * time.Millisecond })))
	e.start(l)
	e.publish(events.Event{Model: "res.partner", Name: events.Write, RecordID: "echo", Origin: "shop-1"})
	e.publish(events.Event{Model: "res.partner", Name: events.Write, RecordID: "flaky"})
	e.publish(events.Event{Model: "res.partner", Name: events.Create, RecordID: "ok"})
	testenv.Eventually(t, 10*time.Second, func() bool { return got.get("ok") == 1 }, "handled")
	counts := map[string]int64{}
	testenv.Eventually(t, 5*time.Second, func() bool {
		var rm metricdata.ResourceMetrics
		if err := reader.Collect(context.Background(), &rm); err != nil {
			t.Fatal(err)
		}
		clear(counts)
		for _, sm := range rm.ScopeMetrics {
			for _, mt := range sm.Metrics {
				if mt.Name != telemetry.MetricEventsHandled {
					continue
				}
				for _, dp := range mt.Data.(metricdata.Sum[int64]).DataPoints {
					ev, _ := dp.Attributes.Value(telemetry.AttrEventName)
					oc, _ := dp.Attributes.Value(telemetry.AttrEventOutcome)
					li, _ := dp.Attributes.Value(telemetry.AttrEventListener)
					if li.AsString() == "metered" {
						counts[ev.AsString()+"/"+oc.AsString()] += dp.Value
					}
				}
			}
		}
		return counts["create/succeeded"] == 1
	}, "metrics recorded")
	want := map[string]int64{"write/skipped": 1, "write/retried": 1, "write/succeeded": 1, "create/succeeded": 1}
	if fmt.Sprint(counts) != fmt.Sprint(want) {
		t.Fatalf("counts %v, want %v", counts, want)
	}
}

// Shutdown: Run waits for running handlers, cancels their context after the
// grace period, and the interrupted event is handled by another worker.
func TestShutdownGraceCancelsHandlers(t *testing.T) {
	e := newEnv(t)
	e.interruptedByShutdown("graceful", func(ctx context.Context) error { return ctx.Err() },
		events.WithPartitions(1), events.WithRetryDelay(func(int) time.Duration { return 10 * time.Millisecond }))
	got := newCounter()
	l2 := e.listeners()
	must(t, l2.On("graceful", "res.partner", "", got.handle, events.WithPartitions(1)))
	e.start(l2)
	testenv.Eventually(t, 10*time.Second, func() bool { return got.get("1") == 1 }, "interrupted event handled by the next worker")
}

// A handler stopped by the shutdown (the grace period over, it returns
// its context's error) has not had an attempt: its event is handed back at
// once, not retried after a delay, and the next delivery is attempt 1
// again. Before, it counted: on its last attempt (here the only one,
// WithMaxDeliver(1)) a rolling deploy dead-lettered the event.
func TestShutdownInterruptionIsNotAnAttempt(t *testing.T) {
	e := newEnv(t)
	e.interruptedByShutdown("interrupted", func(ctx context.Context) error { return fmt.Errorf("export stopped: %w", ctx.Err()) },
		events.WithPartitions(1), events.WithMaxDeliver(1))
	attempts := make(chan int, 1)
	l2 := e.listeners()
	must(t, l2.On("interrupted", "res.partner", "", func(_ context.Context, ev events.Event) error {
		attempts <- ev.Attempt
		return nil
	}, events.WithPartitions(1), events.WithMaxDeliver(1)))
	e.start(l2)
	select {
	case n := <-attempts:
		if n != 1 {
			t.Fatalf("the next process sees attempt %d, want 1", n)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("the interrupted event was not handled by the next process (dead letters: %d)", len(e.deadLetters()))
	}
	if dls := e.deadLetters(); len(dls) != 0 {
		t.Fatalf("dead letters: %+v", dls[0])
	}
}

// A publisher in another language follows docs/events.md with a plain
// client: subject built by hand (FNV-1a bucket from the standard library),
// body a plain msgpack map. The listener handles it like its own events.
func TestForeignPublisherPerDocs(t *testing.T) {
	e := newEnv(t)
	got := make(chan events.Event, 1)
	l := e.listeners()
	must(t, l.On("foreign", "sale.order.line", events.Write, func(_ context.Context, ev events.Event) error {
		got <- ev
		return nil
	}, events.WithPartitions(4)))
	e.start(l)

	h := fnv.New32a()
	h.Write([]byte("SO042/7"))
	subject := fmt.Sprintf("%s.events.sale:order:line.write.%02x", e.names.Prefix, h.Sum32()&0xff)
	body, err := msgpack.Marshal(map[string]any{
		"v": 1, "id": "5b0c3f9e-1d7a-4c1e-9a53-2f0d8c1e7b11", "model": "sale.order.line", "event": "write",
		"record_id": "SO042/7", "fields": []string{"qty"}, "time": uint64(1700000000000),
		"data": map[string]any{"qty": 3, "nested": []any{1, "x", map[string]any{"y": true}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	msg := nats.NewMsg(subject)
	msg.Header["Nats-Msg-Id"] = []string{"5b0c3f9e-1d7a-4c1e-9a53-2f0d8c1e7b11"}
	msg.Header["traceparent"] = []string{"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
	msg.Data = body
	if _, err := e.js.PublishMsg(context.Background(), msg); err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-got:
		if ev.RecordID != "SO042/7" || ev.Model != "sale.order.line" || ev.Time.UnixMilli() != 1700000000000 ||
			fmt.Sprint(ev.Fields) != "[qty]" || fmt.Sprint(ev.Data["qty"]) != "3" {
			t.Fatalf("event %+v", ev)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("foreign event not handled")
	}
}

// Listeners and the worker stop within the same grace by default, inside
// the 30 s a pod gets to stop.
func TestShutdownGraceMatchesTheWorker(t *testing.T) {
	if events.DefaultShutdownGrace != worker.DefaultShutdownGrace {
		t.Fatalf("events.DefaultShutdownGrace %v, worker.DefaultShutdownGrace %v", events.DefaultShutdownGrace, worker.DefaultShutdownGrace)
	}
}

// A handler that ignores its cancelled context does not hold Run past the
// shutdown grace and a few seconds more: the process stops, and the event,
// not settled, comes back to the listener elsewhere after its ack wait.
func TestStuckHandlerDoesNotHoldShutdown(t *testing.T) {
	e := newEnv(t)
	release := make(chan struct{})
	defer close(release)
	started := make(chan struct{})
	l := e.listeners(events.WithShutdownGrace(100 * time.Millisecond))
	must(t, l.On("stuck", "res.partner", "", func(ctx context.Context, ev events.Event) error {
		close(started)
		<-release // ignores ctx
		return nil
	}, events.WithPartitions(1)))
	e.stopWhileHandling(l, started)
}
