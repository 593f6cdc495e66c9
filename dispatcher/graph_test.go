package dispatcher_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/connector-go/connector/dispatcher"
	"github.com/connector-go/connector/internal/graphs"
	"github.com/connector-go/connector/internal/records"
	"github.com/connector-go/connector/internal/streams"
	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/internal/wire"
	"github.com/connector-go/connector/job"
	"github.com/connector-go/connector/worker"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
)

type GraphStep struct {
	Name string `msgpack:"name"`
}

func (GraphStep) JobName() string { return "test.graph_step" }

// genv is one isolated deployment: NATS server, streams, Redis keys.
type genv struct {
	t      *testing.T
	js     jetstream.JetStream
	rdb    *redis.Client
	prefix string
	names  wire.Names
	d      *dispatcher.Dispatcher

	mu  sync.Mutex
	ran map[string]int // step name -> runs
}

func newGenv(t *testing.T) *genv {
	t.Helper()
	_, _, js := testenv.JetStream(t)
	rdb, prefix := testenv.Redis(t)
	names := wire.MustNames(prefix)
	if err := streams.Ensure(context.Background(), js, streams.Config{Names: names}); err != nil {
		t.Fatal(err)
	}
	d, err := dispatcher.New(js, dispatcher.WithPrefix(prefix), dispatcher.WithRedis(rdb))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close(context.Background()) })
	return &genv{t: t, js: js, rdb: rdb, prefix: prefix, names: names, d: d, ran: map[string]int{}}
}

func (e *genv) runs(name string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.ran[name]
}

// start runs a worker whose GraphStep handler counts its runs.
func (e *genv) start() {
	e.t.Helper()
	reg := worker.NewRegistry()
	worker.MustRegister(reg, func(ctx context.Context, j *job.Job[GraphStep]) (string, error) {
		e.mu.Lock()
		e.ran[j.Args.Name]++
		e.mu.Unlock()
		return "ran", nil
	})
	w, err := worker.New(e.js, reg, worker.WithPrefix(e.prefix), worker.WithRedis(e.rdb),
		worker.WithLogger(zaptest.NewLogger(e.t, zaptest.Level(zap.WarnLevel))))
	if err != nil {
		e.t.Fatal(err)
	}
	if err := w.Setup(context.Background()); err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	e.t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(60 * time.Second):
			e.t.Errorf("worker did not stop")
		}
	})
}

func (e *genv) waitState(id string, want job.State) job.Record {
	e.t.Helper()
	return testenv.WaitJob(e.t, e.d, id, want, 15*time.Second)
}

// A graph without edges (a group of roots) keeps nothing in Redis for
// ever: when its jobs are done, its hash is absent or expires.
func TestGraphWithoutEdgesLeavesNoKeyForever(t *testing.T) {
	e := newGenv(t)
	e.start()
	ctx := context.Background()
	res, err := e.d.EnqueueGraph(ctx, dispatcher.Group(dispatcher.Job(GraphStep{Name: "a"}), dispatcher.Job(GraphStep{Name: "b"})))
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range res.Jobs {
		e.waitState(id, job.StateDone)
	}
	key := graphs.Key(e.names, res.ID)
	ttl, err := e.rdb.PTTL(ctx, key).Result()
	if err != nil {
		t.Fatal(err)
	}
	// -2: no key; -1: a key without expiry, kept for ever.
	if ttl == -1 {
		t.Fatalf("graph %s: hash %s has no expiry (fields %v)", res.ID, key, e.rdb.HGetAll(ctx, key).Val())
	}
}

// Cancelling a pending graph job just as its last parent releases it (the
// worker has published it, its record does not say so yet: records are
// written in batches) either reports it taken or keeps it from running.
func TestCancelPendingChildAsItIsReleased(t *testing.T) {
	e := newGenv(t)
	ctx := context.Background()
	res, err := e.d.EnqueueGraph(ctx, dispatcher.Chain(dispatcher.Job(GraphStep{Name: "parent"}), dispatcher.Job(GraphStep{Name: "child"})))
	if err != nil {
		t.Fatal(err)
	}
	parent, child := res.Jobs[0], res.Jobs[1]
	// The parent is done: a worker releases the child as
	// worker.releaseChildren does; its record is still on its way.
	kids, err := graphs.Done(ctx, e.rdb, e.names, res.ID, parent)
	if err != nil || len(kids) != 1 || kids[0].ID != child {
		t.Fatalf("release: %v %+v", err, kids)
	}
	m := nats.NewMsg(kids[0].Subject)
	for h, v := range kids[0].Header {
		m.Header[h] = v
	}
	m.Data = kids[0].Data
	if _, err := e.js.PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}
	cerr := e.d.Cancel(ctx, child)
	if cerr != nil && !errors.Is(cerr, job.ErrStarted) {
		t.Fatal(cerr)
	}
	e.start()
	// A job enqueued after: once it ran, the child had every chance to.
	marker, err := e.d.Enqueue(ctx, GraphStep{Name: "marker"})
	if err != nil {
		t.Fatal(err)
	}
	e.waitState(marker, job.StateDone)
	testenv.Eventually(t, 10*time.Second, func() bool { return e.runs("parent") == 1 }, "the parent runs")
	if cerr == nil && e.runs("child") != 0 {
		t.Fatalf("Cancel(child) = nil, yet the child ran %d times", e.runs("child"))
	}
}

// Cancelling a released graph job that waits for its ETA cancels it: its
// record's sequence is that of its schedule, not of a queued message, and
// whatever the consumer of its band delivered since says nothing of it.
func TestCancelReleasedChildWithETA(t *testing.T) {
	e := newGenv(t)
	e.start()
	ctx := context.Background()
	res, err := e.d.EnqueueGraph(ctx, dispatcher.Chain(dispatcher.Job(GraphStep{Name: "parent"}),
		dispatcher.Job(GraphStep{Name: "later"}, job.WithDelay(time.Hour))))
	if err != nil {
		t.Fatal(err)
	}
	later := res.Jobs[1]
	e.waitState(res.Jobs[0], job.StateDone)
	testenv.Eventually(t, 10*time.Second, func() bool {
		r, err := e.d.Job(ctx, later)
		return err == nil && r.State != job.StatePending
	}, "the child released")
	// Its releasing worker records it as the dispatcher records a delayed
	// job: waiting, until its ETA.
	if r, err := e.d.Job(ctx, later); err != nil || r.State != job.StateWaiting || time.Until(r.ETA) < 50*time.Minute {
		t.Fatalf("released child with a delay: %v, state %s, ETA %v", err, r.State, r.ETA)
	}
	// Another job of the same channel and band runs after it was released.
	other, err := e.d.Enqueue(ctx, GraphStep{Name: "other"})
	if err != nil {
		t.Fatal(err)
	}
	e.waitState(other, job.StateDone)
	if err := e.d.Cancel(ctx, later); err != nil {
		t.Fatalf("Cancel of a job waiting for its ETA: %v", err)
	}
	if rec, _ := e.d.Job(ctx, later); rec.State != job.StateCancelled {
		t.Fatalf("cancelled job is %s", rec.State)
	}
}

// Cancelling a released graph job of another band than the default one
// asks the consumer of its own band whether it was taken: its record (as
// the releasing worker writes it) has no priority.
func TestCancelReleasedChildOfAnotherBand(t *testing.T) {
	e := newGenv(t)
	ctx := context.Background()
	w, err := worker.New(e.js, worker.NewRegistry(), worker.WithPrefix(e.prefix), worker.WithRedis(e.rdb))
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Setup(ctx); err != nil { // the consumers, no worker running
		t.Fatal(err)
	}
	res, err := e.d.EnqueueGraph(ctx, dispatcher.Chain(dispatcher.Job(GraphStep{Name: "parent"}),
		dispatcher.Job(GraphStep{Name: "urgent"}, job.WithPriority(0))))
	if err != nil {
		t.Fatal(err)
	}
	parent, child := res.Jobs[0], res.Jobs[1]
	if rec, err := e.d.Job(ctx, child); err != nil || rec.State != job.StatePending { // (flushes its record)
		t.Fatalf("child: %v %+v", err, rec)
	}
	// The parent is done: its worker releases the child and records it, as
	// worker.releaseChildren does.
	kids, err := graphs.Done(ctx, e.rdb, e.names, res.ID, parent)
	if err != nil || len(kids) != 1 {
		t.Fatalf("release: %v %+v", err, kids)
	}
	m := nats.NewMsg(kids[0].Subject)
	for h, v := range kids[0].Header {
		m.Header[h] = v
	}
	m.Data = kids[0].Data
	ack, err := e.js.PublishMsg(ctx, m)
	if err != nil {
		t.Fatal(err)
	}
	rs := records.New(e.rdb, e.names, 0, nil)
	rs.Record(&records.Update{ID: child, Queued: job.StateEnqueued, Seq: ack.Sequence, Graph: res.ID,
		Name: GraphStep{}.JobName(), Channel: job.DefaultChannel})
	if err := rs.Close(ctx); err != nil {
		t.Fatal(err)
	}
	// A job of the default band, enqueued after it, is taken (with the
	// parent's message, before it).
	if _, err := e.d.Enqueue(ctx, GraphStep{Name: "other"}); err != nil {
		t.Fatal(err)
	}
	cons, err := e.js.Consumer(ctx, e.names.JobsStream(), e.names.JobsConsumer(job.DefaultChannel, 1))
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := cons.Fetch(2, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	got := 0
	for msg := range msgs.Messages() {
		got++
		_ = msg.DoubleAck(ctx)
	}
	if got != 2 {
		t.Fatalf("fetched %d (%v)", got, msgs.Error())
	}
	// The child, in band 0, was taken by nobody.
	if err := e.d.Cancel(ctx, child); err != nil {
		t.Fatalf("Cancel of a queued job no worker took: %v", err)
	}
	s, err := e.js.Stream(ctx, e.names.JobsStream())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetMsg(ctx, ack.Sequence); !errors.Is(err, jetstream.ErrMsgNotFound) {
		t.Fatalf("the cancelled job's message: %v", err)
	}
	if rec, _ := e.d.Job(ctx, child); rec.State != job.StateCancelled {
		t.Fatalf("cancelled job is %s", rec.State)
	}
}

// An empty part of a chain (a group or chain built from a list that
// happened to be empty) is no step: the part after it waits for the last
// part before it that holds a job, not released at once with the first.
func TestChainThroughEmptyGroupKeepsOrder(t *testing.T) {
	e := newGenv(t)
	ctx := context.Background()
	step := func(name string) dispatcher.Node { return dispatcher.Job(GraphStep{Name: name}) }
	for name, g := range map[string]dispatcher.Node{
		"empty group in the middle": dispatcher.Chain(step("first"), dispatcher.Group(), step("last")),
		"empty chain in the middle": dispatcher.Chain(step("first"), dispatcher.Chain(), step("last")),
		"chain ending in an empty group": dispatcher.Chain(step("first"),
			dispatcher.Chain(step("mid"), dispatcher.Group()), step("last")),
		"chain starting with an empty group": dispatcher.Chain(step("first"),
			dispatcher.Chain(dispatcher.Group(), step("mid")), step("last")),
		"group of empty parts in the middle": dispatcher.Chain(step("first"),
			dispatcher.Group(dispatcher.Chain(), dispatcher.Group(dispatcher.Group())), step("last")),
	} {
		res, err := e.d.EnqueueGraph(ctx, g)
		if err != nil {
			t.Fatal(err)
		}
		// Only the first job starts at once; each other waits.
		for i, id := range res.Jobs {
			rec, err := e.d.Job(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			want := job.StatePending
			if i == 0 {
				want = job.StateEnqueued
			}
			if rec.State != want {
				t.Errorf("%s: job %d of %d is %s at once, want %s", name, i+1, len(res.Jobs), rec.State, want)
			}
		}
	}
}
