package connect_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/vmihailenco/msgpack/v5"
	"go.uber.org/zap"

	"github.com/connector-go/connector/dispatcher"
	"github.com/connector-go/connector/events"
	"github.com/connector-go/connector/internal/app"
	"github.com/connector-go/connector/internal/connect"
	"github.com/connector-go/connector/internal/streams"
	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/internal/wire"
	"github.com/connector-go/connector/job"
	"github.com/connector-go/connector/worker"
)

type lpImport struct {
	ID string `msgpack:"id"`
}

func (lpImport) JobName() string { return "lp.import" }

type lpBroken struct{}

func (lpBroken) JobName() string { return "lp.broken" }

// TestLeastPrivilegeComponents runs the real dispatcher (as producer and as
// operator) and worker under the documented permissions: a job, a job with
// a delay (message schedule), a retry and a dead letter, then the operator
// requeues the dead letter and registers a periodic job, which the worker
// runs; events published by the producer are handled by listeners on the
// worker's connection, and a failing listener's dead letter is written.
// Bad input from the producer (unknown envelope version, nesting too deep,
// a job or an event over the size limit) is dead-lettered as malformed. No
// role may hit a permissions violation.
func TestLeastPrivilegeComponents(t *testing.T) {
	prefix := testenv.Prefix(t)
	n := wire.MustNames(prefix)
	const pw = "role-Pw-components"
	srv := testenv.StartNATS(t, func(o *server.Options) {
		o.Users = []*server.User{
			{Username: "producer", Password: pw, Permissions: ProducerPermissions(prefix, "_INBOX_producer")},
			{Username: "worker", Password: pw, Permissions: WorkerPermissions(prefix, "_INBOX_worker")},
			{Username: "operator", Password: pw, Permissions: OperatorPermissions(prefix, "_INBOX_operator")},
		}
	})
	// Redis: a private server with the documented ACL user for this prefix.
	raddr, rpw := startACLRedis(t, prefix)
	rdb, err := connect.ConnectRedis(context.Background(), connect.RedisConfig{
		URL: "redis://" + raddr + "/0", Username: "connector", Password: rpw,
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()

	op := connectRole(t, srv.URL, "operator", pw, "_INBOX_operator")
	if err := streams.Ensure(ctx, op.js, streams.Config{Names: n, Memory: true}); err != nil {
		t.Fatalf("operator provisions streams: %v", err)
	}
	prod := connectRole(t, srv.URL, "producer", pw, "_INBOX_producer")
	work := connectRole(t, srv.URL, "worker", pw, "_INBOX_worker")

	// Worker.
	var brokenRuns, flakyRuns, ticks atomic.Int32
	reg := worker.NewRegistry()
	worker.MustRegister(reg, func(ctx context.Context, j *job.Job[lpImport]) (string, error) {
		if j.Args.ID == "tick" {
			ticks.Add(1)
		}
		if j.Args.ID == "flaky" && flakyRuns.Add(1) == 1 {
			return "", job.RetryAfter(errors.New("backend busy"), 50*time.Millisecond)
		}
		return "ok " + j.Args.ID, nil
	})
	worker.MustRegister(reg, func(ctx context.Context, j *job.Job[lpBroken]) (string, error) {
		brokenRuns.Add(1)
		return "", errors.New("permanently broken")
	})
	// Size limits below the server's max_payload, so that the worker's and
	// the listeners' own checks are what refuses an oversized message.
	const maxSize = 64 << 10
	w, err := worker.New(work.js, reg, worker.WithPrefix(prefix), worker.WithRedis(rdb),
		worker.WithoutProvisioning(), worker.WithLogger(zap.NewNop()), worker.WithMaxEnvelope(maxSize),
		worker.WithChannels("root:4")) // every job takes a slot: the slot scripts run under the ACL
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Setup(ctx); err != nil {
		t.Fatalf("worker setup under worker permissions: %v", err)
	}
	wctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(wctx) }()
	defer func() {
		stop()
		<-done
	}()

	// Producer.
	d, err := dispatcher.New(prod.js, dispatcher.WithPrefix(prefix), dispatcher.WithRedis(rdb))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close(context.Background())
	now, err := d.Enqueue(ctx, lpImport{ID: "now"})
	if err != nil {
		t.Fatalf("producer enqueues: %v", err)
	}
	later, err := d.Enqueue(ctx, lpImport{ID: "later"}, job.WithDelay(200*time.Millisecond))
	if err != nil {
		t.Fatalf("producer enqueues with a delay: %v", err)
	}
	flaky, err := d.Enqueue(ctx, lpImport{ID: "flaky"})
	if err != nil {
		t.Fatal(err)
	}
	broken, err := d.Enqueue(ctx, lpBroken{}, job.WithMaxRetries(0))
	if err != nil {
		t.Fatal(err)
	}
	waitState := func(id string, want job.State) {
		t.Helper()
		testenv.WaitJob(t, d, id, want, 20*time.Second)
	}
	waitState(now, job.StateDone)
	waitState(later, job.StateDone)
	waitState(flaky, job.StateDone)
	waitState(broken, job.StateDead)

	// Operator: dead letters, requeue.
	opd, err := dispatcher.New(op.js, dispatcher.WithPrefix(prefix), dispatcher.WithRedis(rdb))
	if err != nil {
		t.Fatal(err)
	}
	defer opd.Close(context.Background())
	dead, err := opd.DeadLetters(ctx, 10)
	if err != nil || len(dead) != 1 {
		t.Fatalf("operator lists dead letters: %d, %v", len(dead), err)
	}
	// Operator: the queue's figures (`connector jobs stats`), and a cancel
	// (`connector jobs cancel`) of a delayed job.
	held, err := opd.Enqueue(ctx, lpImport{ID: "held"}, job.WithDelay(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if st, err := opd.Stats(ctx); err != nil || st.Dead != 1 || st.Delayed != 1 || len(st.Queues) == 0 {
		t.Fatalf("operator reads the stats: %+v, %v; want 1 dead, 1 delayed, the queues", st, err)
	}
	if err := opd.Cancel(ctx, held); err != nil {
		t.Fatalf("operator cancels a delayed job: %v", err)
	}
	if err := opd.Requeue(ctx, broken); err != nil {
		t.Fatalf("operator requeues: %v", err)
	}
	testenv.Eventually(t, 20*time.Second, func() bool { return brokenRuns.Load() >= 2 }, "requeued job runs again")

	// Operator: a periodic job (a message schedule the operator registers;
	// the worker and the producer may not, see TestLeastPrivilege). The
	// worker runs its ticks.
	if err := opd.Schedule(ctx, "lp-tick", "@every 1s", lpImport{ID: "tick"}); err != nil {
		t.Fatalf("operator registers a periodic job: %v", err)
	}
	testenv.Eventually(t, 20*time.Second, func() bool { return ticks.Load() >= 2 }, "two ticks of the periodic job run")

	// Bad input from a producer is dead-lettered with the reason, not run
	// or guessed at: an unknown envelope version, arguments nested too deep.
	deep := any(1)
	for i := 0; i < wire.DefaultMaxDepth+5; i++ {
		deep = []any{deep}
	}
	deepArgs, err := wire.Marshal(deep)
	if err != nil {
		t.Fatal(err)
	}
	bigArgs, err := wire.Marshal(map[string]any{"id": strings.Repeat("x", maxSize)})
	if err != nil {
		t.Fatal(err)
	}
	for want, env := range map[string]map[string]any{
		"unknown envelope version 2": {"v": 2, "id": "V2JOB", "name": "lp.import", "args": map[string]any{}},
		"nesting deeper than":        {"v": 1, "id": "DEEPJOB", "name": "lp.import", "args": msgpack.RawMessage(deepArgs)},
		"byte limit":                 {"v": 1, "id": "BIGJOB", "name": "lp.import", "args": msgpack.RawMessage(bigArgs)},
	} {
		data, err := msgpack.Marshal(env)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := prod.js.Publish(ctx, n.JobsSubject("root", 1), data); err != nil {
			t.Fatal(err)
		}
		var letter wire.DeadLetter
		testenv.Eventually(t, 20*time.Second, func() bool {
			s, err := op.js.Stream(ctx, n.DeadStream())
			if err != nil {
				return false
			}
			c, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{prefix + ".dead.malformed.>"}})
			if err != nil {
				return false
			}
			batch, err := c.FetchNoWait(100)
			if err != nil {
				return false
			}
			found := false
			for m := range batch.Messages() {
				var dl wire.DeadLetter
				if msgpack.Unmarshal(m.Data(), &dl) == nil && strings.Contains(dl.Error, want) {
					letter, found = dl, true
				}
			}
			return found
		}, "a malformed dead letter saying %q", want)
		t.Logf("dead letter: reason=%s error=%q", letter.Reason, letter.Error)
		if letter.Reason != wire.ReasonMalformed || !bytes.Equal(letter.Data, data) {
			t.Errorf("dead letter %q: reason %q, original kept: %v", want, letter.Reason, bytes.Equal(letter.Data, data))
		}
	}

	// Events: the producer publishes, a worker-side listener handles one,
	// another fails and dead-letters it.
	handled := make(chan events.Event, 4)
	l, err := events.NewListeners(work.js, events.WithRedis(rdb), events.WithPrefix(prefix), events.WithMaxEventSize(maxSize))
	if err != nil {
		t.Fatal(err)
	}
	publisher := func(js jetstream.JetStream) *events.Publisher {
		t.Helper()
		p, err := events.NewPublisher(js, events.WithPrefix(prefix))
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	if err := l.On("audit", "res.partner", "", func(ctx context.Context, ev events.Event) error {
		handled <- ev
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := l.On("failing", "res.partner", "", func(ctx context.Context, ev events.Event) error {
		return errors.New("listener broken")
	}, events.WithMaxDeliver(1)); err != nil {
		t.Fatal(err)
	}
	var sizedRuns atomic.Int32
	if err := l.On("sized", "lp.sized", "", func(ctx context.Context, ev events.Event) error {
		sizedRuns.Add(1)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	lctx, lstop := context.WithCancel(ctx)
	ldone := make(chan error, 1)
	go func() { ldone <- l.Run(lctx) }()
	defer func() {
		lstop()
		<-ldone
	}()
	pub := publisher(prod.js)
	if _, err := pub.Publish(ctx, events.Event{Model: "res.partner", Name: events.Write, RecordID: "7"}); err != nil {
		t.Fatalf("producer publishes an event: %v", err)
	}
	select {
	case ev := <-handled:
		if ev.RecordID != "7" {
			t.Fatalf("listener got %+v", ev)
		}
	case <-ctx.Done():
		t.Fatal("listener under worker permissions got no event")
	}
	testenv.Eventually(t, 20*time.Second, func() bool {
		s, err := op.js.Stream(ctx, n.DeadStream())
		if err != nil {
			return false
		}
		info, err := s.Info(ctx, jetstream.WithSubjectFilter(prefix+".dead.events.failing.>"))
		return err == nil && len(info.State.Subjects) == 1
	}, "the failing listener's dead letter in %s", n.DeadStream())

	// Worker: the backlog gauges it reports at each scrape list the
	// consumers of the jobs and events streams.
	if _, err := app.Backlog(work.js, n)(ctx); err != nil {
		t.Fatalf("worker reads the jobs backlog: %v", err)
	}
	if lag, err := publisher(work.js).Lag(ctx); err != nil || len(lag) == 0 {
		t.Fatalf("worker reads the listeners' lag: %v, %v", lag, err)
	}

	// Operator: the dead events (`connector events dead`), and a replay
	// (`connector events replay`), which the failing listener receives
	// (and dead-letters again: it still fails).
	opPub := publisher(op.js)
	deadEvents, err := opPub.DeadLetters(ctx, "", 0)
	if err != nil || len(deadEvents) != 1 || deadEvents[0].Listener != "failing" {
		t.Fatalf("operator lists dead events: %+v, %v", deadEvents, err)
	}
	if st, err := opPub.Stats(ctx); err != nil || st.Dead != 1 || len(st.Listeners) < 3 {
		t.Fatalf("operator reads the listeners' stats (`connector events stats`): %+v, %v", st, err)
	}
	if err := opPub.Replay(ctx, deadEvents[0].Seq); err != nil {
		t.Fatalf("operator replays a dead event: %v", err)
	}
	testenv.Eventually(t, 20*time.Second, func() bool {
		again, err := opPub.DeadLetters(ctx, "", 0)
		return err == nil && len(again) == 1 && again[0].Seq != deadEvents[0].Seq && again[0].Listener == "failing"
	}, "the replayed event dead again, under a new letter")

	// An event over the listeners' size limit is dead-lettered as
	// malformed, with the original bytes, and not handled.
	bigEvent := events.Event{Model: "lp.sized", Name: events.Write, RecordID: "9",
		Data: map[string]any{"blob": strings.Repeat("y", maxSize)}}
	if _, err := pub.Publish(ctx, bigEvent); err != nil {
		t.Fatalf("producer publishes an oversized event: %v", err)
	}
	var letter wire.DeadLetter
	testenv.Eventually(t, 20*time.Second, func() bool {
		s, err := op.js.Stream(ctx, n.DeadStream())
		if err != nil {
			return false
		}
		m, err := s.GetLastMsgForSubject(ctx, prefix+".dead.events.sized.>")
		return err == nil && msgpack.Unmarshal(m.Data, &letter) == nil
	}, "the oversized event's dead letter")
	if letter.Reason != wire.ReasonMalformed || !strings.Contains(letter.Error, "byte limit") || len(letter.Data) <= maxSize {
		t.Errorf("oversized event's letter: reason %q, error %q, %d bytes kept", letter.Reason, letter.Error, len(letter.Data))
	}
	if n := sizedRuns.Load(); n != 0 {
		t.Errorf("the oversized event was handled %d times", n)
	}

	for name, r := range map[string]role{"producer": prod, "worker": work, "operator": op} {
		for _, e := range r.logs.All() {
			if s, _ := e.ContextMap()["error"].(string); strings.Contains(s, "Permissions Violation") {
				t.Errorf("%s hit a permissions violation: %s", name, s)
			}
		}
	}
}

// A Redis user under an older least-privilege rule, without TIME, cannot
// run the channel slot scripts: a worker with a limited channel says so at
// its start, naming the missing right, rather than starting and never
// running a job of the channel. Without a limited channel it starts.
func TestWorkerStartNamesAMissingRedisRight(t *testing.T) {
	prefix := testenv.Prefix(t)
	raddr, rpw := startACLRedis(t, prefix, "+time")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	rdb, err := connect.ConnectRedis(ctx, connect.RedisConfig{URL: "redis://" + raddr + "/0", Username: "connector", Password: rpw}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	_, _, js := testenv.JetStream(t)
	reg := worker.NewRegistry()
	worker.MustRegister(reg, func(ctx context.Context, j *job.Job[lpImport]) (string, error) { return "", nil })
	for channels, want := range map[string]string{"root:4": "+time", "": ""} {
		w, err := worker.New(js, reg, worker.WithPrefix(prefix), worker.WithRedis(rdb),
			worker.WithLogger(zap.NewNop()), worker.WithChannels(channels))
		if err != nil {
			t.Fatal(err)
		}
		err = w.Setup(ctx)
		switch {
		case want == "" && err != nil:
			t.Errorf("channels %q: %v", channels, err)
		case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
			t.Errorf("channels %q: start error %v, want one naming %s", channels, err, want)
		}
	}
}
