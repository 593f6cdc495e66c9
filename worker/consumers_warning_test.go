package worker_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/internal/wire"
	"github.com/connector-go/connector/worker"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// The server checks every ack against every consumer of the jobs stream
// (docs/architecture.md, Known limits): past 64 consumers the worker says
// so, once, and not before.
func TestManyConsumersOnTheJobsStreamAreWarnedOf(t *testing.T) {
	e := newEnv(t)
	core, logs := observer.New(zapcore.InfoLevel)
	idle := make([]string, 0, 20)
	for i := 1; i <= 20; i++ {
		idle = append(idle, "root.idle"+strconv.Itoa(i))
	}
	// root and 20 channels: 63 consumers.
	e.start(worker.NewRegistry(), worker.WithLogger(zap.New(core)), worker.WithChannels(strings.Join(idle, ",")))
	const warning = "many consumers on the jobs stream"
	// at is the index in the log of the line saying that the sweeper made
	// channel's consumer (-1: not yet); the sweeps run one after the other
	// and log in order, each checking the count before it makes consumers.
	at := func(channel string) int {
		for i, l := range logs.All() {
			if l.Message == "unconfigured channel runs under its nearest configured ancestor" && l.ContextMap()["channel"] == channel {
				return i
			}
		}
		return -1
	}
	publish := func(channel string) {
		t.Helper()
		b, err := wire.Marshal(map[string]any{"v": 1, "id": wire.NewID(), "name": "test.nobody", "args": map[string]any{}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.js.Publish(context.Background(), e.names().JobsSubject(channel, 1), b); err != nil {
			t.Fatal(err)
		}
	}
	// The 64th consumer is made by a sweep that counted 63; the 65th by one
	// that counted 64; the sweep after counts 65 and warns.
	publish("root.fresh1")
	testenv.Eventually(t, 15*time.Second, func() bool { return at("root.fresh1") >= 0 }, "the sweeper made root.fresh1's consumer")
	publish("root.fresh2")
	testenv.Eventually(t, 15*time.Second, func() bool { return logs.FilterMessageSnippet(warning).Len() > 0 }, "a warning once the jobs stream holds 65 consumers")
	second := at("root.fresh2")
	for i, l := range logs.All() {
		if strings.Contains(l.Message, warning) && (second < 0 || i < second) {
			t.Fatalf("warned before the 65th consumer (line %d, root.fresh2's consumer made at line %d): %v", i, second, l.ContextMap())
		}
	}
	if n := logs.FilterMessageSnippet(warning).Len(); n != 1 {
		t.Errorf("%d warnings, want 1", n)
	}
	if c := logs.FilterMessageSnippet(warning).All()[0].ContextMap()["consumers"]; c != int64(65) {
		t.Errorf("warning counts %v consumers, want 65", c)
	}
}
