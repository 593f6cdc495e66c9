package events_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/connector-go/connector/events"
	"github.com/connector-go/connector/internal/streams"
	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/internal/wire"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// A dead event is listed (DeadLetters, with its listener) and replayed to
// the listener that gave up on it, and to it only: the other listener of
// the same event does not run again. The letter is gone once replayed; a
// letter no listener could handle (the subject guard's) is refused with
// ErrNotReplayable and stays, until it is discarded.
func TestReplayDeadEventToItsListenerOnly(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	var fixed atomic.Bool
	exports, audits := newCounter(), newCounter()
	l := e.listeners()
	must(t, l.On("export", "res.partner", events.Write, func(_ context.Context, ev events.Event) error {
		if !fixed.Load() {
			return errors.New("the shop is down")
		}
		exports.inc(ev.ID)
		return nil
	}, events.WithPartitions(1), events.WithMaxDeliver(1)))
	must(t, l.On("audit", "res.partner", events.Write, func(_ context.Context, ev events.Event) error {
		audits.inc(ev.ID)
		return nil
	}, events.WithPartitions(1)))
	e.start(l)

	pub := e.publisher()
	id := e.publish(events.Event{Model: "res.partner", Name: events.Write, RecordID: "42", Fields: []string{"name"}})
	// An event on a subject no listener matches: the guard's letter.
	stray := nats.NewMsg(e.names.Prefix + ".events.res.partner.write")
	stray.Data = []byte("x")
	if _, err := e.js.PublishMsg(ctx, stray); err != nil {
		t.Fatal(err)
	}
	var letters []events.DeadLetter
	testenv.Eventually(t, 10*time.Second, func() bool {
		var err error
		letters, err = pub.DeadLetters(ctx, "", 0)
		return err == nil && len(letters) == 2
	}, "two dead letters")
	var exportLetter, guardLetter events.DeadLetter
	for _, dl := range letters {
		switch dl.Listener {
		case "export":
			exportLetter = dl
		case events.GuardName:
			guardLetter = dl
		}
	}
	if only, err := pub.DeadLetters(ctx, "export", 0); err != nil || len(only) != 1 || only[0].Listener != "export" {
		t.Fatalf("the export listener's letters: %+v, %v", only, err)
	}
	if _, err := pub.DeadLetters(ctx, "export.*", 0); !errors.Is(err, events.ErrBadListener) {
		t.Errorf("a listener name with wildcards: %v, want ErrBadListener", err)
	}
	if exportLetter.Seq == 0 || exportLetter.Error != "the shop is down" || exportLetter.Subject != e.names.DeadEventSubject("export", exportLetter.StreamSeq) {
		t.Fatalf("the export listener's letter: %+v", exportLetter)
	}
	if guardLetter.Seq == 0 {
		t.Fatalf("no letter of the subject guard in %+v", letters)
	}
	e.drained("audit")
	if n := audits.get(id); n != 1 {
		t.Fatalf("audit handled the event %d times, want 1", n)
	}

	if err := pub.Replay(ctx, guardLetter.Seq); !errors.Is(err, events.ErrNotReplayable) {
		t.Errorf("replay of the guard's letter: %v, want ErrNotReplayable", err)
	}
	fixed.Store(true)
	if err := pub.Replay(ctx, exportLetter.Seq); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() bool { return exports.get(id) == 1 }, "the replayed event exported")
	e.drained("audit")
	e.drained("export")
	if n := audits.get(id); n != 1 {
		t.Errorf("audit handled the event %d times, want 1: the replay was for export only", n)
	}
	if n := exports.get(id); n != 1 {
		t.Errorf("export handled the replay %d times, want 1", n)
	}
	left, err := pub.DeadLetters(ctx, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 1 || left[0].Seq != guardLetter.Seq {
		t.Errorf("letters left: %+v, want the guard's only", left)
	}
	if err := pub.Replay(ctx, exportLetter.Seq); !errors.Is(err, jetstream.ErrMsgNotFound) {
		t.Errorf("second replay of a removed letter: %v, want ErrMsgNotFound", err)
	}

	// ReplayAll skips what cannot be replayed, without an error.
	if n, err := pub.ReplayAll(ctx, ""); n != 0 || err != nil {
		t.Errorf("ReplayAll: %d, %v; want 0, nil", n, err)
	}
	// A letter of a listener that is gone (renamed) is not replayed: it
	// would reach nobody. It stays.
	ghost := &wire.DeadLetter{V: 1, Reason: wire.ReasonError, Error: "x", Attempts: 1,
		Subject: e.names.EventSubject("res.partner", events.Write, "42"), Data: []byte("x")}
	data, err := wire.Marshal(ghost)
	if err != nil {
		t.Fatal(err)
	}
	ack, err := e.js.Publish(ctx, e.names.DeadEventSubject("renamed", 1), data)
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.Replay(ctx, ack.Sequence); !errors.Is(err, events.ErrNoListener) {
		t.Errorf("replay for a listener that is gone: %v, want ErrNoListener", err)
	}
	if n, err := pub.ReplayAll(ctx, ""); n != 0 || !errors.Is(err, events.ErrNoListener) {
		t.Errorf("ReplayAll with a gone listener's letter: %d, %v; want 0, ErrNoListener", n, err)
	}
	if err := pub.Discard(ctx, ack.Sequence); err != nil {
		t.Fatal(err)
	}

	// What cannot be replayed can be discarded.
	if err := pub.Discard(ctx, guardLetter.Seq); err != nil {
		t.Fatal(err)
	}
	if left, err := pub.DeadLetters(ctx, "", 0); err != nil || len(left) != 0 {
		t.Errorf("letters left after the discard: %+v, %v", left, err)
	}
	if err := pub.Discard(ctx, guardLetter.Seq); !errors.Is(err, jetstream.ErrMsgNotFound) {
		t.Errorf("second discard: %v, want ErrMsgNotFound", err)
	}
}

// A letter written without its event (too large to go in it) is replayed
// from the events stream: the listener gets the whole event again. Once
// the events stream is recreated, the letter's sequence there holds
// another event, even on the same subject: such a letter is refused with
// ErrNotReplayable, and stays.
func TestReplayReadsTooLargeEventFromTheEventsStream(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	var fixed atomic.Bool
	var blob atomic.Int64
	got := newCounter()
	l := e.listeners()
	must(t, l.On("bulky", "res.partner", events.Write, func(_ context.Context, ev events.Event) error {
		if !fixed.Load() {
			return errors.New("the shop refuses it")
		}
		got.inc(ev.ID)
		if s, ok := ev.Data["blob"].(string); ok {
			blob.Store(int64(len(s)))
		}
		return nil
	}, events.WithPartitions(1), events.WithMaxDeliver(1)))
	e.start(l)
	pub := e.publisher()

	big := largeEvent(t, pub, "big")
	_, err := pub.Publish(ctx, big)
	must(t, err)
	var letters []events.DeadLetter
	testenv.Eventually(t, 10*time.Second, func() bool {
		letters, err = pub.DeadLetters(ctx, "bulky", 0)
		return err == nil && len(letters) == 1
	}, "the large event dead-lettered")
	if len(letters[0].Data) != 0 {
		t.Fatalf("the large event's letter carries %d bytes of it", len(letters[0].Data))
	}
	fixed.Store(true)
	must(t, pub.Replay(ctx, letters[0].Seq))
	testenv.Eventually(t, 10*time.Second, func() bool { return got.get(big.ID) == 1 }, "the replayed event handled")
	if n, want := blob.Load(), int64(len(big.Data["blob"].(string))); n != want {
		t.Fatalf("the replayed event's blob has %d bytes, want %d", n, want)
	}

	// Dead again, then the events stream is recreated and another event of
	// the same record (same subject) takes the sequence of the dead one.
	fixed.Store(false)
	big.ID = "large-big-2"
	_, err = pub.Publish(ctx, big)
	must(t, err)
	testenv.Eventually(t, 10*time.Second, func() bool {
		letters, err = pub.DeadLetters(ctx, "bulky", 0)
		return err == nil && len(letters) == 1
	}, "the large event dead-lettered again")
	letter := letters[0]
	fixed.Store(true)
	must(t, e.js.DeleteStream(ctx, e.names.EventsStream()))
	must(t, streams.Ensure(ctx, e.js, streams.Config{Names: e.names, Memory: true}))
	var last string
	for range letter.StreamSeq {
		last = e.publish(events.Event{Model: "res.partner", Name: events.Write, RecordID: "big"})
	}
	testenv.Eventually(t, 30*time.Second, func() bool { return got.get(last) == 1 }, "the new stream's events handled")
	if err := pub.Replay(ctx, letter.Seq); !errors.Is(err, events.ErrNotReplayable) {
		t.Fatalf("replay of a letter whose event is gone with the old stream: %v, want ErrNotReplayable", err)
	}
	if n, err := pub.ReplayAll(ctx, "bulky"); n != 0 || err != nil {
		t.Errorf("ReplayAll: %d, %v; want 0, nil", n, err)
	}
	if left, err := pub.DeadLetters(ctx, "bulky", 0); err != nil || len(left) != 1 || left[0].Seq != letter.Seq {
		t.Errorf("letters left: %+v, %v; want the one refused", left, err)
	}
}

// A letter of a recreated dead-letter stream (sequences restart at 1) is
// replayed even when the old stream's letter at the same sequence was
// replayed within the dedup window: the replay's Nats-Msg-Id holds the
// letter's died_at too. Otherwise the replay would be dropped as a
// duplicate and the letter removed: the event lost.
func TestReplayAfterDeadLetterStreamIsRecreated(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	var fixed atomic.Bool
	got := newCounter()
	l := e.listeners()
	must(t, l.On("export", "res.partner", events.Write, func(_ context.Context, ev events.Event) error {
		if !fixed.Load() {
			return errors.New("the shop is down")
		}
		got.inc(ev.RecordID)
		return nil
	}, events.WithPartitions(1), events.WithMaxDeliver(1)))
	e.start(l)
	pub := e.publisher()

	replayOne := func(record string) {
		t.Helper()
		fixed.Store(false)
		e.publish(events.Event{Model: "res.partner", Name: events.Write, RecordID: record})
		var letters []events.DeadLetter
		testenv.Eventually(t, 10*time.Second, func() bool {
			var err error
			letters, err = pub.DeadLetters(ctx, "export", 0)
			return err == nil && len(letters) == 1
		}, "the event of %s dead-lettered", record)
		if letters[0].Seq != 1 {
			t.Fatalf("letter at dead-letter stream seq %d, want 1", letters[0].Seq)
		}
		fixed.Store(true)
		must(t, pub.Replay(ctx, letters[0].Seq))
		testenv.Eventually(t, 10*time.Second, func() bool { return got.get(record) == 1 }, "the replay of %s handled", record)
	}
	replayOne("first")
	must(t, e.js.DeleteStream(ctx, e.names.DeadStream()))
	must(t, streams.Ensure(ctx, e.js, streams.Config{Names: e.names, Memory: true}))
	replayOne("second")
}
