package events_test

import (
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/connector-go/connector/events"
	"github.com/connector-go/connector/internal/testenv"
)

// proc is a running events/internal/listenerproc.
type proc struct {
	cmd    *exec.Cmd
	stderr *testenv.Buffer
	done   chan struct{}
}

// startProc runs a listener process on e's servers; it is stopped (SIGTERM)
// at the end of the test unless already killed.
func (e *env) startProc(id string, args ...string) *proc {
	e.t.Helper()
	bin := testenv.GoBuild(e.t, "./events/internal/listenerproc")
	args = append([]string{"-nats", e.srv.URL, "-redis", testenv.RedisURL(e.t), "-prefix", e.names.Prefix, "-id", id}, args...)
	p := &proc{cmd: exec.Command(bin, args...), stderr: &testenv.Buffer{}, done: make(chan struct{})}
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	e.t.Cleanup(func() {
		select {
		case <-p.done:
			return
		default:
		}
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if e.t.Failed() {
			e.t.Logf("process %s stderr:\n%s", id, p.stderr.String())
		}
	})
	return p
}

func (p *proc) kill(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-p.done
}

// publishBatch publishes perRecord events for each of records records,
// interleaved, with data n = 0..perRecord-1 (offset by from), and returns
// the event ids.
func (e *env) publishBatch(records, perRecord, from int) []string {
	e.t.Helper()
	pub := e.publisher()
	var ids []string
	for n := from; n < from+perRecord; n++ {
		for r := 0; r < records; r++ {
			id, err := pub.Publish(context.Background(), events.Event{
				Model: "res.partner", Name: events.Write, RecordID: fmt.Sprintf("r%d", r),
				Data: map[string]any{"n": n},
			})
			if err != nil {
				e.t.Fatal(err)
			}
			ids = append(ids, id)
		}
	}
	return ids
}

// counts returns how many times each event was handled (0 if never).
func (e *env) counts(ids []string) []int {
	e.t.Helper()
	ctx := context.Background()
	keys := make([]string, len(ids))
	for i, id := range ids {
		keys[i] = e.names.RedisKey("count", id)
	}
	vals, err := e.rdb.MGet(ctx, keys...).Result()
	if err != nil {
		e.t.Fatal(err)
	}
	out := make([]int, len(ids))
	for i, v := range vals {
		if s, ok := v.(string); ok {
			out[i], _ = strconv.Atoi(s)
		}
	}
	return out
}

func (e *env) handledAll(ids []string) (handled int) {
	for _, c := range e.counts(ids) {
		if c > 0 {
			handled++
		}
	}
	return handled
}

// checkOrder asserts each record's events were handled in publication
// order: strictly increasing, or non-decreasing when strict is false
// (an event redelivered after a crash is handled again right away).
func (e *env) checkOrder(records int, strict bool) {
	e.t.Helper()
	for r := 0; r < records; r++ {
		list, err := e.rdb.LRange(context.Background(), e.names.RedisKey("order", fmt.Sprintf("r%d", r)), 0, -1).Result()
		if err != nil {
			e.t.Fatal(err)
		}
		prev := -1
		for _, s := range list {
			n, _ := strconv.Atoi(s)
			if n < prev || (strict && n == prev) {
				e.t.Fatalf("record r%d handled out of order: %v", r, list)
			}
			prev = n
		}
	}
}

func (e *env) byProc(id string) int {
	n, _ := e.rdb.Get(context.Background(), e.names.RedisKey("by", id)).Int()
	return n
}

// Two worker processes share a listener: every event is handled exactly
// once, both processes take part, and each record's events are handled in
// order.
func TestTwoProcessesShareAListener(t *testing.T) {
	e := newEnv(t)
	e.startProc("A", "-partitions", "8", "-work", "1ms")
	e.startProc("B", "-partitions", "8", "-work", "1ms")
	const records, perRecord = 16, 15
	ids := e.publishBatch(records, perRecord, 0)
	testenv.Eventually(t, 40*time.Second, func() bool { return e.handledAll(ids) == len(ids) }, "all %d events handled", len(ids))
	for i, c := range e.counts(ids) {
		if c != 1 {
			t.Fatalf("event %s handled %d times", ids[i], c)
		}
	}
	e.checkOrder(records, true)
	a, b := e.byProc("A"), e.byProc("B")
	if a == 0 || b == 0 || a+b != len(ids) {
		t.Fatalf("process A handled %d, B %d, of %d", a, b, len(ids))
	}
	t.Logf("A handled %d, B %d", a, b)
}

// Workers are killed (SIGKILL) with events pending and in flight: first
// one, then the other, so that events wait with no worker at all, and more
// are published meanwhile. Restarted workers handle every event, each
// record's events still in order; only the events in flight at a kill (at
// most one per partition and kill) may be handled twice.
func TestKilledWorkersEventsAreHandledAfterRestart(t *testing.T) {
	e := newEnv(t)
	const partitions = 4
	args := []string{"-partitions", strconv.Itoa(partitions), "-work", "5ms", "-ackwait", "1s"}
	a := e.startProc("A", args...)
	b := e.startProc("B", args...)
	const records, perRecord = 12, 20
	ids := e.publishBatch(records, perRecord, 0)
	testenv.Eventually(t, 30*time.Second, func() bool { return e.byProc("A") >= 10 && e.byProc("B") >= 10 }, "both processes handle events")
	a.kill(t)
	b.kill(t)
	handled := e.handledAll(ids)
	if handled == len(ids) {
		t.Fatalf("all events handled before the kills; the test proves nothing")
	}
	t.Logf("%d of %d handled at the kills", handled, len(ids))
	// More events while no worker runs, then both come back.
	ids = append(ids, e.publishBatch(records, 5, perRecord)...)
	e.startProc("A2", args...)
	e.startProc("B2", args...)
	testenv.Eventually(t, 40*time.Second, func() bool { return e.handledAll(ids) == len(ids) }, "all %d events handled", len(ids))
	dup := 0
	for _, c := range e.counts(ids) {
		if c > 1 {
			dup++
		}
	}
	if dup > 2*partitions {
		t.Fatalf("%d events handled twice; at most %d were in flight", dup, 2*partitions)
	}
	e.checkOrder(records, false)
	t.Logf("A %d, B %d, A2 %d, B2 %d, handled twice %d", e.byProc("A"), e.byProc("B"), e.byProc("A2"), e.byProc("B2"), dup)
}
