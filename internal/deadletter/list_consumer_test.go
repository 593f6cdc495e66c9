package deadletter_test

import (
	"context"
	"testing"
	"time"

	"github.com/connector-go/connector/internal/deadletter"
	"github.com/connector-go/connector/internal/wire"
)

// Each listing reads through a consumer of its own, which the server
// deletes once idle: within 30 s, not the client library's default of 5
// minutes, so a dashboard polling the dead letters does not keep a pile
// of them alive.
func TestListingConsumersGoSoon(t *testing.T) {
	js, n := provisioned(t)
	ctx := context.Background()
	b, err := wire.Marshal(&wire.DeadLetter{V: 1, Reason: wire.ReasonError, JobID: "j1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, n.DeadJobSubject("j1"), b); err != nil {
		t.Fatal(err)
	}
	if got, err := deadletter.List(ctx, js, n.DeadStream(), []string{n.DeadJobSubject("*")}, 0); err != nil || len(got) != 1 {
		t.Fatalf("List: %d letters, %v", len(got), err)
	}
	s, err := js.Stream(ctx, n.DeadStream())
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	for info := range s.ListConsumers(ctx).Info() {
		seen++
		if th := info.Config.InactiveThreshold; th <= 0 || th > 30*time.Second {
			t.Errorf("consumer %s kept %v once idle, want at most 30s", info.Name, th)
		}
	}
	if seen == 0 {
		t.Fatal("no consumer seen: the test proves nothing")
	}
}
