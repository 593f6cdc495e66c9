package unitstest_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/connector-go/connector/units/unitstest"
)

// The kit answers a call made with an ended context as bindings.Store
// does: the context's error, and nothing written. Before, it ignored the
// context, so a flow that must bind after its write although its job was
// cancelled passed its tests on the kit and failed on Redis.
func TestStoreAnswersAnEndedContext(t *testing.T) {
	var st unitstest.Store
	b := st.MemBinder("shop", "product")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := b.Bind(ctx, "e1", "l1", time.Now()); !errors.Is(err, context.Canceled) {
		t.Fatalf("Bind with an ended context: %v, want context.Canceled", err)
	}
	if _, found, _ := b.ToInternal(context.Background(), "e1"); found {
		t.Fatal("Bind with an ended context wrote the binding")
	}
	if _, _, err := b.ToInternal(ctx, "e1"); !errors.Is(err, context.Canceled) {
		t.Errorf("ToInternal: %v", err)
	}
	if _, _, err := b.ToExternal(ctx, "l1"); !errors.Is(err, context.Canceled) {
		t.Errorf("ToExternal: %v", err)
	}
	if _, _, err := b.SyncDate(ctx, "e1"); !errors.Is(err, context.Canceled) {
		t.Errorf("SyncDate: %v", err)
	}
	if err := b.Unbind(ctx, "e1"); !errors.Is(err, context.Canceled) {
		t.Errorf("Unbind: %v", err)
	}
	if _, err := st.Acquire(ctx, "r", time.Second); !errors.Is(err, context.Canceled) || st.Held("r") {
		t.Errorf("Acquire: %v (held %v)", err, st.Held("r"))
	}
}
