package events_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/connector-go/connector/events"
	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/internal/wire"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// orderLog records, per record, the data "n" of each handled event, and
// how many times each event was handled.
type orderLog struct {
	mu    sync.Mutex
	seen  map[string][]int
	count map[string]int
}

func newOrderLog() *orderLog { return &orderLog{seen: map[string][]int{}, count: map[string]int{}} }

func (o *orderLog) handler(_ context.Context, ev events.Event) error {
	n, _ := strconv.Atoi(fmt.Sprint(ev.Data["n"]))
	o.mu.Lock()
	defer o.mu.Unlock()
	o.seen[ev.RecordID] = append(o.seen[ev.RecordID], n)
	o.count[ev.ID]++
	return nil
}

func (o *orderLog) handled() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.count)
}

// check asserts every id was handled exactly once and each record's events
// in strictly increasing order.
func (o *orderLog) check(t *testing.T, ids []string) {
	t.Helper()
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, id := range ids {
		if c := o.count[id]; c != 1 {
			t.Fatalf("event %s handled %d times, want once", id, c)
		}
	}
	if len(o.count) != len(ids) {
		t.Fatalf("%d events handled, want %d", len(o.count), len(ids))
	}
	for r, list := range o.seen {
		for i := 1; i < len(list); i++ {
			if list[i] <= list[i-1] {
				t.Fatalf("record %s handled out of order: %v", r, list)
			}
		}
	}
}

// runFor runs l until stop is called; stop waits for Run to return.
func (e *env) runFor(l *events.Listeners) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					e.t.Errorf("Run: %v", err)
				}
			case <-time.After(15 * time.Second):
				e.t.Errorf("Run did not return")
			}
		})
	}
	e.t.Cleanup(stop)
	return stop
}

// metadata returns consumer's metadata.
func (e *env) metadata(consumer string) map[string]string {
	e.t.Helper()
	return e.consumerConfig(consumer).Metadata
}

// consumerConfig returns consumer's configuration.
func (e *env) consumerConfig(consumer string) jetstream.ConsumerConfig {
	e.t.Helper()
	c, err := e.js.Consumer(context.Background(), e.names.EventsStream(), consumer)
	if err != nil {
		e.t.Fatalf("consumer %s: %v", consumer, err)
	}
	return c.CachedInfo().Config
}

// repartitioning runs a listener of name on "res.partner" under a chosen
// partition count, one run at a time, and publishes events of records
// records; ids are the events published so far, in order.
type repartitioning struct {
	e       *env
	name    string
	records int
	opts    []events.Option
	log     *orderLog
	ids     []string
}

func (e *env) repartition(name string, records int, opts ...events.Option) *repartitioning {
	return &repartitioning{e: e, name: name, records: records, log: newOrderLog(),
		opts: append([]events.Option{events.WithIntervals(50*time.Millisecond, 100*time.Millisecond)}, opts...)}
}

// start runs the listener with partitions partitions until stop is called.
func (r *repartitioning) start(partitions int) (stop func()) {
	l := r.e.listeners(r.opts...)
	must(r.e.t, l.On(r.name, "res.partner", "", r.log.handler, events.WithPartitions(partitions)))
	return r.e.runFor(l)
}

// batch publishes count events per record, numbered from from.
func (r *repartitioning) batch(from, count int) {
	r.ids = append(r.ids, r.e.publishBatch(r.records, count, from)...)
}

// Changing a listener's partition count hands the listener over where the
// old consumers stopped: the events handled under 2 partitions are not
// handled again under 8, the events that waited meanwhile are handled once,
// in per-record order; going back to 2 partitions works the same way (the
// retired consumers are taken back, with the floors of the 8).
func TestRepartitionHandsOverWithoutReplayOrLoss(t *testing.T) {
	e := newEnv(t)
	r := e.repartition("resized", 12)
	log, start, batch := r.log, r.start, r.batch

	stop := start(2)
	batch(0, 5)
	testenv.Eventually(t, 20*time.Second, func() bool { return log.handled() == len(r.ids) }, "first batch handled under 2 partitions")
	stop()
	batch(5, 5) // waits for the next configuration

	stop = start(8)
	testenv.Eventually(t, 30*time.Second, func() bool { return log.handled() == len(r.ids) }, "second batch handled under 8 partitions")
	log.check(t, r.ids)
	for i := 0; i < 2; i++ {
		cfg := e.consumerConfig(events.ConsumerName("resized", i, 2))
		if cfg.Metadata["connector.retired"] == "" || cfg.InactiveThreshold != events.DefaultRetiredConsumerTTL {
			t.Fatalf("2-partition consumer %d not retired with the default TTL: %v, inactive threshold %v", i, cfg.Metadata, cfg.InactiveThreshold)
		}
	}
	if cfg := e.consumerConfig(events.ConsumerName("resized", 3, 8)); cfg.InactiveThreshold != 0 {
		t.Fatalf("a live consumer has an inactive threshold: %v", cfg.InactiveThreshold)
	}
	stop()
	batch(10, 5)

	stop = start(2)
	testenv.Eventually(t, 30*time.Second, func() bool { return log.handled() == len(r.ids) }, "third batch handled under 2 partitions again")
	log.check(t, r.ids)
	if cfg := e.consumerConfig(events.ConsumerName("resized", 1, 2)); cfg.Metadata["connector.retired"] != "" || cfg.InactiveThreshold != 0 {
		t.Fatalf("the 2-partition consumers are still retired: %v, inactive threshold %v", cfg.Metadata, cfg.InactiveThreshold)
	}
	if md := e.metadata(events.ConsumerName("resized", 0, 8)); md["connector.retired"] == "" {
		t.Fatalf("the 8-partition consumers are not retired: %v", md)
	}
	stop()
}

// The consumers of a retired partitioning are deleted by the server once
// nothing pulls from them for WithRetiredConsumerTTL, and that loses
// nothing: the live set goes on, and a later change back to the old count
// starts from the live set's positions (no event handled twice, none
// skipped, per-record order kept).
func TestRetiredConsumersAreDeletedAfterTheirTTL(t *testing.T) {
	e := newEnv(t)
	r := e.repartition("pruned", 8, events.WithRetiredConsumerTTL(time.Second))
	log, start, batch := r.log, r.start, r.batch
	gone := func(partitions int) bool {
		for i := 0; i < partitions; i++ {
			_, err := e.js.Consumer(context.Background(), e.names.EventsStream(), events.ConsumerName("pruned", i, partitions))
			if !errors.Is(err, jetstream.ErrConsumerNotFound) {
				return false
			}
		}
		return true
	}

	stop := start(2)
	batch(0, 3)
	testenv.Eventually(t, 20*time.Second, func() bool { return log.handled() == len(r.ids) }, "first batch handled under 2 partitions")
	stop()

	stop = start(4)
	batch(3, 3)
	testenv.Eventually(t, 30*time.Second, func() bool { return log.handled() == len(r.ids) }, "second batch handled under 4 partitions")
	testenv.Eventually(t, 30*time.Second, func() bool { return gone(2) }, "the retired 2-partition consumers deleted by the server")
	batch(6, 3)
	testenv.Eventually(t, 20*time.Second, func() bool { return log.handled() == len(r.ids) }, "third batch handled by the live set")
	log.check(t, r.ids)
	stop()

	// Back to 2: its consumers are gone; the new ones start from the 4's.
	batch(9, 3)
	stop = start(2)
	testenv.Eventually(t, 30*time.Second, func() bool { return log.handled() == len(r.ids) }, "fourth batch handled under 2 partitions again")
	testenv.Eventually(t, 30*time.Second, func() bool { return gone(4) }, "the retired 4-partition consumers deleted by the server")
	log.check(t, r.ids)
	stop()
}

// Two worker processes configured with different partition counts for one
// listener never both consume it: the second waits (handling nothing) while
// the first runs, so each event is handled once, and takes over, without
// replay, when the first stops; a process started again with the old count
// then waits in turn.
func TestProcessesWithDifferentPartitionCounts(t *testing.T) {
	e := newEnv(t)
	const records = 8
	a := e.startProc("A", "-partitions", "4", "-work", "1ms")
	// A's consumers exist before B looks.
	testenv.Eventually(t, 20*time.Second, func() bool {
		_, err := e.js.Consumer(context.Background(), e.names.EventsStream(), events.ConsumerName("shared", 3, 4))
		return err == nil
	}, "A's consumers created")
	b := e.startProc("B", "-partitions", "8", "-work", "1ms")
	logged := func(p *proc, s string) func() bool {
		return func() bool { return strings.Contains(p.stderr.String(), s) }
	}
	testenv.Eventually(t, 20*time.Second, logged(b, "events: listening"), "B runs")
	// A runs, idle: B keeps waiting well past its idle window (A's pull
	// requests show it alive), rather than taking over.
	holds(t, 10*time.Second, func() bool {
		_, err := e.js.Consumer(context.Background(), e.names.EventsStream(), events.ConsumerName("shared", 0, 8))
		return errors.Is(err, jetstream.ErrConsumerNotFound) && e.metadata(events.ConsumerName("shared", 0, 4))["connector.retired"] == ""
	}, "B waits while A runs, idle")

	ids := e.publishBatch(records, 10, 0)
	testenv.Eventually(t, 30*time.Second, func() bool { return e.handledAll(ids) == len(ids) }, "first batch handled")
	if got := e.byProc("B"); got != 0 {
		t.Fatalf("B handled %d events while A ran another partitioning", got)
	}
	for i, c := range e.counts(ids) {
		if c != 1 {
			t.Fatalf("event %s handled %d times", ids[i], c)
		}
	}
	if !logged(b, "waiting until no process runs them")() {
		t.Fatalf("B does not say why it waits")
	}

	// A stops; events published meanwhile wait; B takes over.
	if err := a.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-a.done
	ids = append(ids, e.publishBatch(records, 10, 10)...)
	testenv.Eventually(t, 40*time.Second, func() bool { return e.handledAll(ids) == len(ids) }, "second batch handled by B")
	for i, c := range e.counts(ids) {
		if c != 1 {
			t.Fatalf("event %s handled %d times", ids[i], c)
		}
	}
	if got := e.byProc("B"); got != records*10 {
		t.Fatalf("B handled %d events, want the %d published after A stopped", got, records*10)
	}

	// A process with the old count now waits for B's partitioning.
	a2 := e.startProc("A2", "-partitions", "4", "-work", "1ms")
	testenv.Eventually(t, 20*time.Second, logged(a2, "events: listening"), "A2 runs")
	ids = append(ids, e.publishBatch(records, 5, 20)...)
	testenv.Eventually(t, 30*time.Second, func() bool { return e.handledAll(ids) == len(ids) }, "third batch handled")
	if got := e.byProc("A2"); got != 0 {
		t.Fatalf("A2 handled %d events while B ran another partitioning", got)
	}
	for i, c := range e.counts(ids) {
		if c != 1 {
			t.Fatalf("event %s handled %d times", ids[i], c)
		}
	}
	e.checkOrder(records, true)
}

// holds checks cond every 50 ms for d and fails as soon as it is false:
// the proof that something does not happen while its cause lasts.
func holds(t *testing.T, d time.Duration, cond func() bool, format string, a ...any) {
	t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if !cond() {
			t.Fatalf("no longer true: "+format, a...)
		}
	}
}

// A listener name already used in the stream for another model or event
// is refused at Run (updating the consumers' filters in place would skip
// or dead-letter events), with a ConflictError.
func TestConflictingDefinitionIsRefused(t *testing.T) {
	e := newEnv(t)
	h := func(context.Context, events.Event) error { return nil }
	l := e.listeners()
	must(t, l.On("exporter", "res.partner", events.Write, h, events.WithPartitions(2)))
	stop := e.runFor(l)
	testenv.Eventually(t, 10*time.Second, func() bool {
		_, err := e.js.Consumer(context.Background(), e.names.EventsStream(), events.ConsumerName("exporter", 1, 2))
		return err == nil
	}, "consumers created")
	stop()

	for _, c := range []struct{ model, event string }{{"res.partner", ""}, {"res.users", events.Write}} {
		l2 := e.listeners()
		must(t, l2.On("exporter", c.model, c.event, h, events.WithPartitions(2)))
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := l2.Run(ctx)
		cancel()
		var ce *events.ConflictError
		if !errors.Is(err, events.ErrListenerConflict) || !errors.As(err, &ce) || ce.Consumer != events.ConsumerName("exporter", 0, 2) {
			t.Fatalf("%s/%s: Run = %v, want a ConflictError", c.model, c.event, err)
		}
	}
	// The original consumers are untouched.
	c, err := e.js.Consumer(context.Background(), e.names.EventsStream(), events.ConsumerName("exporter", 0, 2))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range c.CachedInfo().Config.FilterSubjects {
		if !strings.Contains(f, ".res:partner.write.") {
			t.Fatalf("filters changed: %v", c.CachedInfo().Config.FilterSubjects)
		}
	}
	if err := e.listeners().On(events.GuardName, "m", "", h); !errors.Is(err, events.ErrBadListener) {
		t.Fatalf("On(GuardName) = %v, want ErrBadListener", err)
	}
}

// Events on subjects that no listener filter can match (the model's dots
// not encoded, no bucket, an upper-case bucket) are dead-lettered by the
// subject guard with reason unknown_model, instead of waiting unseen in the
// stream; well-formed events are not, and listeners go on.
func TestGuardDeadLettersEventsNoListenerCanReceive(t *testing.T) {
	e := newEnv(t)
	got := newCounter()
	l := e.listeners()
	must(t, l.On("sink", "res.partner", "", got.handle, events.WithPartitions(8)))
	e.start(l)

	good, err := e.publisher().Message(events.Event{ID: wire.NewID(), Model: "res.partner", Name: events.Write, RecordID: "42", Time: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	bucket := good.Subject[strings.LastIndexByte(good.Subject, '.')+1:]
	bad := []string{
		e.names.Prefix + ".events.res.partner.write." + bucket,        // model not encoded
		e.names.Prefix + ".events.res:partner.write",                  // no bucket
		e.names.Prefix + ".events.res:partner.write." + "8A",          // upper-case bucket
		e.names.Prefix + ".events.res:partner.write." + bucket + ".x", // a token too many
		e.names.Prefix + ".events.res%2epartner.write." + bucket,      // not the canonical token
	}
	for _, s := range bad {
		m := nats.NewMsg(s)
		m.Data, m.Header = good.Data, nats.Header{"Nats-Msg-Id": []string{wire.NewID()}}
		if _, err := e.js.PublishMsg(context.Background(), m); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.js.PublishMsg(context.Background(), good); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() bool { return got.get("42") == 1 }, "good event handled")
	testenv.Eventually(t, 10*time.Second, func() bool { return len(e.deadLetters()) == len(bad) }, "%d dead letters", len(bad))
	for i, dl := range e.deadLetters() {
		if dl.Reason != wire.ReasonUnknownModel || dl.Subject != bad[i] || dl.StreamSeq != uint64(i+1) || string(dl.Data) != string(good.Data) {
			t.Fatalf("letter %d: %+v", i, dl)
		}
	}
	// The guard is done with the stream: nothing pending or unacknowledged.
	cons, err := e.js.Consumer(context.Background(), e.names.EventsStream(), events.GuardConsumer)
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, func() bool {
		info, err := cons.Info(context.Background())
		return err == nil && info.NumAckPending == 0 && info.NumPending == 0
	}, "guard drained")
}

// A process killed (SIGKILL) in the middle of events leaves them
// unacknowledged, for good since nobody consumes its consumers any more. A
// process configured with another partition count still takes the listener
// over (once the killed one's AckWait has passed) and handles them: only
// the events in flight at the kill may be handled twice, and each record's
// events stay in order.
func TestTakeoverAfterKilledProcess(t *testing.T) {
	e := newEnv(t)
	const records, partitions = 8, 4
	a := e.startProc("A", "-partitions", strconv.Itoa(partitions), "-work", "50ms", "-ackwait", "1s")
	ids := e.publishBatch(records, 10, 0)
	testenv.Eventually(t, 30*time.Second, func() bool { return e.byProc("A") >= 8 }, "A handles events")
	a.kill(t)
	if e.handledAll(ids) == len(ids) {
		t.Fatal("all events handled before the kill; the test proves nothing")
	}
	unacked := 0
	for i := 0; i < partitions; i++ {
		c, err := e.js.Consumer(context.Background(), e.names.EventsStream(), events.ConsumerName("shared", i, partitions))
		if err != nil {
			t.Fatal(err)
		}
		unacked += c.CachedInfo().NumAckPending
	}
	if unacked == 0 {
		t.Fatal("no event in flight at the kill; the test proves nothing")
	}
	e.startProc("B", "-partitions", "2", "-work", "1ms", "-ackwait", "1s")
	testenv.Eventually(t, 40*time.Second, func() bool { return e.handledAll(ids) == len(ids) }, "all events handled after the takeover")
	dup := 0
	for _, c := range e.counts(ids) {
		if c > 1 {
			dup++
		}
	}
	if dup > unacked {
		t.Fatalf("%d events handled twice; %d were in flight", dup, unacked)
	}
	e.checkOrder(records, false)
	t.Logf("%d in flight at the kill, %d handled twice, B handled %d", unacked, dup, e.byProc("B"))
}

// A consumer deleted while another partitioning of its listener is live
// (an operator removing retired consumers, docs/events.md, while a process
// of theirs was cut off) is not brought back as it was: that would make
// two live sets, each handling every event. The process stops and takes
// the listener back only by the protocol, retiring the other set first.
func TestDeletedConsumerNotRecreatedBesideALiveSet(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	log := newOrderLog()
	l := e.listeners(events.WithIntervals(50*time.Millisecond, 100*time.Millisecond))
	must(t, l.On("pruned", "res.partner", "", log.handler, events.WithPartitions(1)))
	e.runFor(l)
	ids := e.publishBatch(3, 1, 0)
	testenv.Eventually(t, 20*time.Second, func() bool { return log.handled() == len(ids) }, "events handled by the 1-partition set")

	// Another deployment's 2-partition set, live, newer than the running one.
	for i := 0; i < 2; i++ {
		var filters []string
		for b := i; b < wire.EventBuckets; b += 2 {
			filters = append(filters, e.names.EventFilter("res.partner", "", fmt.Sprintf("%02x", b)))
		}
		_, err := e.js.CreateConsumer(ctx, e.names.EventsStream(), jetstream.ConsumerConfig{
			Durable: events.ConsumerName("pruned", i, 2), FilterSubjects: filters,
			AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: 1, MaxDeliver: -1,
			Metadata: map[string]string{"connector.listener": "pruned", "connector.partitions": "2"},
		})
		must(t, err)
	}
	must(t, e.js.DeleteConsumer(ctx, e.names.EventsStream(), events.ConsumerName("pruned", 0, 1)))
	testenv.Eventually(t, 30*time.Second, func() bool {
		_, err := e.js.Consumer(ctx, e.names.EventsStream(), events.ConsumerName("pruned", 0, 1))
		return err == nil
	}, "the 1-partition consumer back")
	if md := e.metadata(events.ConsumerName("pruned", 0, 2)); md["connector.retired"] == "" {
		t.Fatalf("the deleted consumer came back while the 2-partition set was live: %v", md)
	}
	ids = append(ids, e.publishBatch(3, 2, 1)...)
	testenv.Eventually(t, 20*time.Second, func() bool { return log.handled() == len(ids) }, "later events handled")
	log.check(t, ids)
}
