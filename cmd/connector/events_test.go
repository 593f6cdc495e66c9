package main

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/connector-go/connector/events"
	"github.com/connector-go/connector/internal/streams"
	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/internal/wire"
	"go.uber.org/zap/zaptest"
)

// `events dead` lists the events a listener gave up on, `events replay
// SEQ` gives one back to that listener, which handles it, `events discard
// SEQ` removes one for good; none needs Redis (run here with a dead Redis
// URL).
func TestEventsDeadAndReplay(t *testing.T) {
	srv, _, js := testenv.JetStream(t)
	rdb, prefix := testenv.Redis(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	names := wire.MustNames(prefix)
	if err := streams.Ensure(ctx, js, streams.Config{Names: names, Memory: true}); err != nil {
		t.Fatal(err)
	}
	var fixed atomic.Bool
	var handled atomic.Int32
	l, err := events.NewListeners(js, events.WithRedis(rdb), events.WithPrefix(prefix), events.WithLogger(zaptest.NewLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	pub, err := events.NewPublisher(js, events.WithPrefix(prefix))
	if err != nil {
		t.Fatal(err)
	}
	if err := l.On("export", "res.partner", events.Write, func(context.Context, events.Event) error {
		if !fixed.Load() {
			return errors.New("the shop is down")
		}
		handled.Add(1)
		return nil
	}, events.WithPartitions(1), events.WithMaxDeliver(1)); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	defer func() { cancel(); <-done }()
	if _, err := pub.Publish(ctx, events.Event{Model: "res.partner", Name: events.Write, RecordID: "7"}); err != nil {
		t.Fatal(err)
	}

	env, _ := operatorCLI(t, srv.URL, prefix)
	noRedis := func(k string) string {
		if k == "CONNECTOR_REDIS_URL" {
			return "redis://127.0.0.1:1/0"
		}
		return env(k)
	}
	cli := func(args ...string) string {
		t.Helper()
		stdout, stderr, err := runCmd(t, noRedis, args...)
		if err != nil {
			t.Fatalf("connector %s: %v\n%s", strings.Join(args, " "), err, stderr)
		}
		return stdout
	}
	var letters []events.DeadLetter
	testenv.Eventually(t, 10*time.Second, func() bool {
		letters = nil
		return json.Unmarshal([]byte(cli("events", "dead", "--json")), &letters) == nil && len(letters) == 1
	}, "one dead event")
	if l := letters[0]; l.Listener != "export" || l.Error != "the shop is down" || l.Reason != wire.ReasonError || l.Data != nil {
		t.Fatalf("events dead --json: %+v", l)
	}
	if text := cli("events", "dead"); !strings.Contains(text, "export") || !strings.Contains(text, "the shop is down") {
		t.Errorf("events dead:\n%s", text)
	}
	if text := cli("events", "dead", "--listener", "audit"); !strings.Contains(text, "no dead events") {
		t.Errorf("events dead --listener audit:\n%s", text)
	}
	var st events.Stats
	if err := json.Unmarshal([]byte(cli("events", "stats", "--json")), &st); err != nil || st.Dead != 1 {
		t.Errorf("events stats --json: %+v, %v", st, err)
	}
	if text := cli("events", "stats"); !strings.Contains(text, "export") || !strings.Contains(text, "dead events: 1") {
		t.Errorf("events stats:\n%s", text)
	}

	// A sequence and --all together are a usage error that replays
	// nothing (not every dead event); so are a sequence and --listener (a
	// filter of --all only), rather than an act on another listener's
	// letter.
	seq := strconv.FormatUint(letters[0].Seq, 10)
	for _, args := range [][]string{
		{"events", "replay", seq, "--all"},
		{"events", "replay", "--all", seq},
		{"events", "replay", seq, "--listener", "audit"},
		{"events", "discard", seq, "--listener", "audit"},
		{"events", "discard", seq, "--all"},
	} {
		if _, _, err := runCmd(t, noRedis, args...); err == nil || !strings.Contains(err.Error(), "usage") {
			t.Errorf("connector %s: %v, want a usage error", strings.Join(args, " "), err)
		}
		var still []events.DeadLetter
		if err := json.Unmarshal([]byte(cli("events", "dead", "--json")), &still); err != nil || len(still) != 1 || still[0].Seq != letters[0].Seq {
			t.Fatalf("connector %s: dead events %+v, %v; want the letter %s untouched", strings.Join(args, " "), still, err, seq)
		}
	}

	fixed.Store(true)
	if out := cli("events", "replay", seq); !strings.Contains(out, "replayed "+seq) {
		t.Errorf("events replay: %q", out)
	}
	testenv.Eventually(t, 10*time.Second, func() bool { return handled.Load() == 1 }, "the replayed event handled")
	if text := cli("events", "dead"); !strings.Contains(text, "no dead events") {
		t.Errorf("events dead after the replay:\n%s", text)
	}
	if _, _, err := runCmd(t, noRedis, "events", "replay", seq); err == nil {
		t.Error("a second replay of the same letter succeeded")
	}
	if out := cli("events", "replay", "--all"); !strings.Contains(out, "replayed 0 event(s)") {
		t.Errorf("events replay --all: %q", out)
	}

	// An event not worth replaying is discarded.
	fixed.Store(false)
	if _, err := pub.Publish(ctx, events.Event{Model: "res.partner", Name: events.Write, RecordID: "8"}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() bool {
		letters = nil
		return json.Unmarshal([]byte(cli("events", "dead", "--json")), &letters) == nil && len(letters) == 1
	}, "the second event dead")
	seq = strconv.FormatUint(letters[0].Seq, 10)
	if out := cli("events", "discard", seq); !strings.Contains(out, "discarded "+seq) {
		t.Errorf("events discard: %q", out)
	}
	if text := cli("events", "dead"); !strings.Contains(text, "no dead events") {
		t.Errorf("events dead after the discard:\n%s", text)
	}
	if handled.Load() != 1 {
		t.Errorf("handled %d events, want 1 (the discarded one is not handled)", handled.Load())
	}

	// A letter no listener can handle as it is (a body that is no event)
	// stays where it is after replay --all, which says so rather than
	// only "replayed 0".
	if _, err := js.Publish(ctx, names.EventSubject("res.partner", events.Write, "9"), []byte("not msgpack")); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() bool {
		letters = nil
		return json.Unmarshal([]byte(cli("events", "dead", "--json")), &letters) == nil && len(letters) == 1
	}, "the malformed event dead")
	if out := cli("events", "replay", "--all"); !strings.Contains(out, "replayed 0 event(s)") || !strings.Contains(out, "1 dead event(s) left") {
		t.Errorf("events replay --all with a letter that cannot be replayed: %q", out)
	}
}
