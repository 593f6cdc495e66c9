package dispatcher_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/connector-go/connector/dispatcher"
	"github.com/connector-go/connector/internal/records"
	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/job"
	"github.com/connector-go/connector/worker"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
)

// Requeueing a dead firing of a periodic schedule requeues that job: the
// job of the letter (id "periodic-<name>-t<tick>") runs again under its own
// id, its record says so, and Cancel of it answers for it. The letter
// holds the message as fired, the schedule's template envelope (id
// "periodic-<name>", tmpl): republished as it is, it was a new firing
// named by its requeue's stream sequence, while the dead job's record
// stayed dead (and the template's id got a record of its own).
func TestRequeueDeadPeriodicFiring(t *testing.T) {
	e := newGenv(t)
	ctx := context.Background()
	var mu sync.Mutex
	fail := true
	var ran []string
	reg := worker.NewRegistry()
	worker.MustRegister(reg, func(ctx context.Context, j *job.Job[GraphStep]) (string, error) {
		mu.Lock()
		defer mu.Unlock()
		ran = append(ran, j.ID)
		if fail {
			return "", errors.New("broken handler")
		}
		return "ok", nil
	})
	w, err := worker.New(e.js, reg, worker.WithPrefix(e.prefix), worker.WithRedis(e.rdb),
		worker.WithLogger(zaptest.NewLogger(t, zaptest.Level(zap.ErrorLevel))))
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(wctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(60 * time.Second):
			t.Errorf("worker did not stop")
		}
	})
	if err := e.d.Schedule(ctx, "beat", "@every 1s", GraphStep{Name: "beat"}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 15*time.Second, func() bool {
		l, err := e.d.DeadLetters(ctx, 0)
		return err == nil && len(l) > 0
	}, "a firing dead-lettered")
	if err := e.d.Unschedule(ctx, "beat"); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	fail = false
	mu.Unlock()
	letters, err := e.d.DeadLetters(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	dead := letters[0].JobID
	e.waitState(dead, job.StateDead)
	if err := e.d.Requeue(ctx, dead); err != nil {
		t.Fatal(err)
	}
	rec := e.waitState(dead, job.StateDone)
	if rec.Result != "ok" {
		t.Fatalf("requeued job %s: %+v", dead, rec)
	}
	mu.Lock()
	defer mu.Unlock()
	n := 0
	for _, id := range ran {
		if id == dead {
			n++
		}
	}
	if n != 2 {
		t.Fatalf("job %s ran %d times, want 2 (runs %v)", dead, n, ran)
	}
}

// An identity key is held while its job is pending: a job whose ETA is
// further away than the key's lifetime (30 days) keeps its key until its
// ETA and then some, so that enqueueing the same key meanwhile answers
// that job, not a second one.
func TestIdentityKeyOutlivesAFarETA(t *testing.T) {
	e := newGenv(t)
	ctx := context.Background()
	eta := time.Now().Add(90 * 24 * time.Hour)
	id, err := e.d.Enqueue(ctx, GraphStep{Name: "far"}, job.WithIdentityKey("far-key"), job.WithETA(eta))
	if err != nil {
		t.Fatal(err)
	}
	ttl, err := e.rdb.PTTL(ctx, e.names.RedisKey("identity", "far-key")).Result()
	if err != nil {
		t.Fatal(err)
	}
	if left := time.Until(eta); ttl < left {
		t.Fatalf("identity key of job %s (ETA in %v) expires in %v, before the job is due", id, left.Round(time.Hour), ttl.Round(time.Hour))
	}
}

// A job waiting for its ETA whose record is gone (written before records
// were kept past their ETA, or lost by Redis): Cancel still cancels it
// (its schedule goes, its identity key is freed), rather than answer
// job.ErrNotFound and let it run at its ETA.
func TestCancelFarETAJobWhoseRecordExpired(t *testing.T) {
	e := newGenv(t)
	ctx := context.Background()
	id, err := e.d.Enqueue(ctx, GraphStep{Name: "far"}, job.WithETA(time.Now().Add(20*24*time.Hour)),
		job.WithIdentityKey("far-cancel"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.d.Job(ctx, id); err != nil { // (flushed)
		t.Fatal(err)
	}
	// Its record is lost.
	keys, err := e.rdb.Keys(ctx, e.prefix+":jlog:*").Result()
	if err != nil || len(keys) == 0 {
		t.Fatalf("record logs: %v %v", keys, err)
	}
	if err := e.rdb.Del(ctx, keys...).Err(); err != nil {
		t.Fatal(err)
	}
	if err := e.d.Cancel(ctx, id); err != nil {
		t.Fatalf("Cancel of a job waiting for its ETA, record expired: %v", err)
	}
	s, err := e.js.Stream(ctx, e.names.JobsStream())
	if err != nil {
		t.Fatal(err)
	}
	if m, err := s.GetLastMsgForSubject(ctx, e.names.ScheduleSubject(id)); err == nil {
		t.Fatalf("the cancelled job's schedule is still there (seq %d): it runs at its ETA", m.Sequence)
	}
	if rec, err := e.d.Job(ctx, id); err != nil || rec.State != job.StateCancelled {
		t.Fatalf("record after Cancel: %v %+v", err, rec)
	}
	other, err := e.d.Enqueue(ctx, GraphStep{Name: "again"}, job.WithIdentityKey("far-cancel"))
	if err != nil || other == id {
		t.Fatalf("enqueue with the cancelled job's identity key: %s, %v", other, err)
	}
}

// A graph's waiting children are recorded (pending) before any of its
// roots can run: a root that runs and releases its child at once must
// not have the child's "enqueued" record (and its stream sequence)
// overwritten by the dispatcher's late "pending" one, which made Cancel
// take the queued child for a pending one and Job report it pending.
func TestGraphChildRecordNotTakenBackToPending(t *testing.T) {
	e := newGenv(t)
	e.start() // runs GraphStep only: the Bulk children stay queued
	ctx := context.Background()
	var children []string
	for range 40 {
		res, err := e.d.EnqueueGraph(ctx, dispatcher.Chain(dispatcher.Job(GraphStep{Name: "root"}), dispatcher.Job(Bulk{N: 1})))
		if err != nil {
			t.Fatal(err)
		}
		children = append(children, res.Jobs[1])
	}
	testenv.Eventually(t, 20*time.Second, func() bool { return e.runs("root") == 40 }, "the roots run")
	// Each child's record names its message once it is released (as the
	// releasing worker records it), whatever it is then.
	for _, id := range children {
		testenv.Eventually(t, 10*time.Second, func() bool {
			r, err := e.d.Job(ctx, id)
			return err == nil && r.Seq > 0 && r.State != job.StatePending
		}, "child %s recorded released (not pending, with its message's sequence)", id)
	}
}

// twoLetters puts two dead letters of one job in the dead-letter stream,
// as a worker leaves them when it dead-letters a job whose Term then
// fails and whose redelivery dies again ("a duplicate letter may follow"),
// or as a requeue leaves one it could not delete.
func (e *genv) twoLetters() string { return e.lettersOf(7, 2) }

// jobsQueued counts the messages on the jobs subjects.
func (e *genv) jobsQueued() uint64 {
	e.t.Helper()
	s, err := e.js.Stream(context.Background(), e.names.JobsStream())
	if err != nil {
		e.t.Fatal(err)
	}
	info, err := s.Info(context.Background(), jetstream.WithSubjectFilter(e.names.JobsWildcard()))
	if err != nil {
		e.t.Fatal(err)
	}
	n := uint64(0)
	for _, c := range info.State.Subjects {
		n += c
	}
	return n
}

// RequeueAll puts a job with two dead letters back once, not twice (two
// runs of one job), and leaves no letter of it behind to be requeued
// again later.
func TestRequeueAllOncePerJob(t *testing.T) {
	e := newGenv(t)
	ctx := context.Background()
	id := e.twoLetters()
	other := e.deadLetter(3)
	n, err := e.d.RequeueAll(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if q := e.jobsQueued(); q != 2 || n != 2 {
		t.Fatalf("RequeueAll of jobs %s (two letters) and %s: requeued %d, %d messages queued, want 2", id, other, n, q)
	}
	if l, err := e.d.DeadLetters(ctx, 0); err != nil || len(l) != 0 {
		t.Fatalf("letters left: %v %+v", err, l)
	}
}

// Cancel of a dead job removes every letter of it: one left behind was
// listed still, and RequeueAll ran the cancelled job again.
func TestCancelDeadJobRemovesEveryLetter(t *testing.T) {
	e := newGenv(t)
	ctx := context.Background()
	id := e.twoLetters()
	rs := records.New(e.rdb, e.names, 0, nil)
	rs.Record(&records.Update{ID: id, Queued: job.StateEnqueued, Name: Bulk{}.JobName(), Channel: job.DefaultChannel})
	rs.Record(&records.Update{ID: id, State: job.StateDead, Name: Bulk{}.JobName(), Channel: job.DefaultChannel, Error: "boom"})
	if err := rs.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := e.d.Cancel(ctx, id); err != nil {
		t.Fatal(err)
	}
	if l, err := e.d.DeadLetters(ctx, 0); err != nil || len(l) != 0 {
		t.Fatalf("letters of the cancelled job left: %v %+v", err, l)
	}
	if n, err := e.d.RequeueAll(ctx); err != nil || n != 0 || e.jobsQueued() != 0 {
		t.Fatalf("RequeueAll after Cancel of the dead job: %d, %v", n, err)
	}
}

// Requeue of a job with two dead letters requeues it once and leaves no
// older letter of it behind (RequeueAll would requeue that one: the job
// ran again).
func TestRequeueRemovesOlderLetters(t *testing.T) {
	e := newGenv(t)
	ctx := context.Background()
	id := e.twoLetters()
	if err := e.d.Requeue(ctx, id); err != nil {
		t.Fatal(err)
	}
	if l, err := e.d.DeadLetters(ctx, 0); err != nil || len(l) != 0 {
		t.Fatalf("letters left after Requeue(%s): %v %+v", id, err, l)
	}
	if n, err := e.d.RequeueAll(ctx); err != nil || n != 0 || e.jobsQueued() != 1 {
		t.Fatalf("RequeueAll after Requeue: %d, %v; %d queued", n, err, e.jobsQueued())
	}
}

// Re-registering a periodic schedule with a spec the server refuses
// fails and leaves the registered schedule in place: it was purged
// before the new one was refused, so the periodic job never fired again.
func TestScheduleRefusedKeepsTheRegisteredOne(t *testing.T) {
	e := newGenv(t)
	ctx := context.Background()
	if err := e.d.Schedule(ctx, "nightly", "@every 1h", Bulk{N: 1}); err != nil {
		t.Fatal(err)
	}
	before := e.registered("nightly")
	if err := e.d.Schedule(ctx, "nightly", "@every 10ms", Bulk{N: 2}); err == nil {
		t.Fatal("Schedule with a spec under a second succeeded")
	}
	cur := e.registered("nightly")
	if cur == nil || cur.Sequence != before.Sequence {
		t.Fatalf("the registered schedule (seq %d) after a refused replacement: %v", before.Sequence, cur)
	}
	// A valid replacement replaces it, once.
	if err := e.d.Schedule(ctx, "nightly", "@every 2h", Bulk{N: 2}); err != nil {
		t.Fatal(err)
	}
	if cur = e.registered("nightly"); cur == nil || cur.Header.Get("Nats-Schedule") != "@every 2h" {
		t.Fatalf("replaced schedule: %+v", cur)
	}
	s, err := e.js.Stream(ctx, e.names.JobsStream())
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(e.names.PeriodicSubject("nightly")))
	if err != nil || info.State.Subjects[e.names.PeriodicSubject("nightly")] != 1 {
		t.Fatalf("messages on the schedule subject: %v %v", err, info.State.Subjects)
	}
}

// A schedule replaced by Schedule fires as registered the second time,
// and the first one no longer.
func TestScheduleReplacedFiresTheNewOneOnly(t *testing.T) {
	e := newGenv(t)
	e.start()
	ctx := context.Background()
	if err := e.d.Schedule(ctx, "tick", "@every 1s", GraphStep{Name: "old"}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() bool { return e.runs("old") > 0 }, "the first schedule fires")
	if err := e.d.Schedule(ctx, "tick", "@every 1s", GraphStep{Name: "new"}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() bool { return e.runs("new") > 0 }, "the replacement fires")
	old := e.runs("old")
	testenv.Eventually(t, 10*time.Second, func() bool { return e.runs("new") >= 3 }, "the replacement fires again")
	if got := e.runs("old"); got != old {
		t.Fatalf("the replaced schedule fired on: %d runs, then %d", old, got)
	}
	if err := e.d.Unschedule(ctx, "tick"); err != nil {
		t.Fatal(err)
	}
}
