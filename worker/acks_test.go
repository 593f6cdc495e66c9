package worker

import (
	"context"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/connector-go/connector/internal/streams"
	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/internal/wire"
	"github.com/connector-go/connector/job"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
)

// orderLog is an ackOrder whose sends are recorded, for the tests of its
// rules without a server.
type orderLog struct {
	*ackOrder
	mu   sync.Mutex
	sent []uint64
}

func newOrderLog(hold, sharedFor time.Duration) *orderLog {
	l := &orderLog{}
	l.ackOrder = newAckOrder(hold, sharedFor, func(x *pulled) {
		l.mu.Lock()
		l.sent = append(l.sent, x.meta.Sequence.Consumer)
		l.mu.Unlock()
	})
	return l
}

// job is a received job of consumer sequence seq, in the order.
func (l *orderLog) job(seq uint64) *pulled {
	x := &pulled{}
	x.meta.Sequence.Consumer, x.meta.Sequence.Stream = seq, seq
	l.add(x)
	return x
}

func (l *orderLog) got() []uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.sent)
}

func (l *orderLog) want(t *testing.T, want ...uint64) {
	t.Helper()
	if got := l.got(); !slices.Equal(got, want) {
		t.Fatalf("acks sent %v, want %v", got, want)
	}
}

func (l *orderLog) eventually(t *testing.T, want ...uint64) {
	t.Helper()
	testenv.Eventually(t, 5*time.Second, func() bool { return slices.Equal(l.got(), want) }, "acks sent %v, want %v", l.got(), want)
}

// Jobs settled in any order have their acks sent in delivery order, each
// as soon as every job before it has settled.
func TestAckOrderSendsInDeliveryOrder(t *testing.T) {
	l := newOrderLog(time.Hour, time.Hour)
	var jobs []*pulled
	for seq := uint64(1); seq <= 100; seq++ {
		jobs = append(jobs, l.job(seq))
	}
	perm := rand.Perm(99)
	for _, i := range perm {
		l.settled(jobs[i+1], true) // all but the first
	}
	l.want(t)
	l.settled(jobs[0], true)
	var all []uint64
	for seq := uint64(1); seq <= 100; seq++ {
		all = append(all, seq)
	}
	l.want(t, all...)
	if len(l.q) != 0 || l.settledIn != 0 {
		t.Fatalf("order keeps %d jobs (%d settled) once all are sent", len(l.q)-l.head, l.settledIn)
	}
}

// A nak (or any settle sent at once) counts as settled: the acks behind
// it go without it.
func TestAckOrderSettlesSentAtOnceCountAsSettled(t *testing.T) {
	l := newOrderLog(time.Hour, time.Hour)
	j1, j2, j3 := l.job(1), l.job(2), l.job(3)
	l.settled(j2, false)
	l.settled(j3, true)
	l.want(t)
	l.settled(j1, true)
	l.want(t, 1, 3)
}

// The other puller's delivery, received after a later one settled, takes
// its place: the later ack waits for it.
func TestAckOrderWaitsForALateDelivery(t *testing.T) {
	l := newOrderLog(time.Hour, time.Hour)
	j1, j3 := l.job(1), l.job(3)
	l.settled(j1, true)
	l.settled(j3, true)
	l.want(t, 1)
	j2 := l.job(2)
	l.settled(j2, true)
	l.want(t, 1, 2, 3)
}

// A job that does not settle (a slow one) holds the acks behind it for
// hold at most; its own ack then goes as it settles.
func TestAckOrderSkipsASlowJobAfterHold(t *testing.T) {
	l := newOrderLog(20*time.Millisecond, time.Hour)
	slow := l.job(1)
	var rest []*pulled
	for seq := uint64(2); seq <= 5; seq++ {
		rest = append(rest, l.job(seq))
	}
	for _, x := range rest {
		l.settled(x, true)
	}
	l.eventually(t, 2, 3, 4, 5)
	l.settled(slow, true)
	l.want(t, 2, 3, 4, 5, 1)
	// Several slow jobs in a row cost one wait, not one each.
	var slows []*pulled
	for seq := uint64(6); seq <= 8; seq++ {
		slows = append(slows, l.job(seq))
	}
	start := time.Now()
	l.settled(l.job(9), true)
	l.eventually(t, 2, 3, 4, 5, 1, 9)
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("an ack behind three slow jobs waited %v", took)
	}
	for _, x := range slows {
		l.settled(x, true)
	}
	l.want(t, 2, 3, 4, 5, 1, 9, 6, 7, 8)
}

// Behind a job that never settles, the order holds no more than the jobs
// of the last hold: what is sent leaves it.
func TestAckOrderMemoryIsBoundedBehindAStuckJob(t *testing.T) {
	l := newOrderLog(time.Millisecond, time.Hour)
	l.job(1) // never settles
	for seq := uint64(2); seq <= 5000; seq++ {
		l.settled(l.job(seq), true)
	}
	testenv.Eventually(t, 5*time.Second, func() bool {
		l.ackOrder.mu.Lock()
		defer l.ackOrder.mu.Unlock()
		return len(l.q)-l.head == 0
	}, "order still keeps %d jobs", len(l.q)-l.head)
	if got := l.got(); len(got) != 4999 {
		t.Fatalf("%d acks sent, want 4999", len(got))
	}
}

// A gap in the consumer sequence (a delivery to another process) is
// waited for hold at most; then, another process sharing the consumer,
// acks go at once for sharedFor, and in order again after it.
func TestAckOrderGivesUpOnAGapAndSharesForAWhile(t *testing.T) {
	l := newOrderLog(20*time.Millisecond, 300*time.Millisecond)
	l.settled(l.job(1), true)
	l.want(t, 1)
	l.settled(l.job(3), true) // 2 went elsewhere
	l.want(t, 1)
	l.eventually(t, 1, 3)
	j5, j6 := l.job(5), l.job(6)
	l.settled(j6, true) // shared: at once, though 5 has not settled
	l.want(t, 1, 3, 6)
	l.settled(j5, true)
	l.want(t, 1, 3, 6, 5)
	testenv.Eventually(t, 5*time.Second, func() bool {
		l.ackOrder.mu.Lock()
		defer l.ackOrder.mu.Unlock()
		return time.Now().After(l.sharedUntil)
	}, "still shared")
	j7, j8 := l.job(7), l.job(8)
	l.settled(j8, true)
	l.want(t, 1, 3, 6, 5) // in order again
	l.settled(j7, true)
	l.want(t, 1, 3, 6, 5, 7, 8)
}

// close sends what is held, in order; later settles go at once, and a job
// received later is not ordered.
func TestAckOrderCloseSendsWhatIsHeld(t *testing.T) {
	l := newOrderLog(time.Hour, time.Hour)
	j1, j2, j3 := l.job(1), l.job(2), l.job(3)
	l.settled(j3, true)
	l.settled(j2, true)
	l.want(t)
	l.close()
	l.want(t, 2, 3)
	l.settled(j1, true)
	l.want(t, 2, 3, 1)
	if j4 := l.job(4); j4.order != nil {
		t.Fatal("a job received after close is ordered")
	}
}

// ackEnv runs a worker whose acks the test sees: a subscription on a
// connection of its own gets every ack sent to the jobs stream.
type ackEnv struct {
	t     *testing.T
	srv   *testenv.NATSServer
	js    jetstream.JetStream
	names wire.Names
	reg   *Registry
	opts  []Option

	runs atomic.Int64 // handlers ended

	mu   sync.Mutex
	acks []uint64 // stream sequences, as the acks arrived
}

// sleepJob's handler sleeps D, or until released (its channel in
// ackEnv.block) or its context ends.
type sleepJob struct {
	N int           `msgpack:"n"`
	D time.Duration `msgpack:"d"`
}

func (sleepJob) JobName() string { return "test.sleep" }

func newAckEnv(t *testing.T, block map[int]chan struct{}, opts ...Option) *ackEnv {
	srv, nc, js := testenv.JetStream(t)
	rdb, prefix := testenv.Redis(t)
	e := &ackEnv{t: t, srv: srv, js: js, names: wire.MustNames(prefix), reg: NewRegistry()}
	if err := streams.Ensure(context.Background(), js, streams.Config{Names: e.names}); err != nil {
		t.Fatal(err)
	}
	MustRegister(e.reg, func(ctx context.Context, j *job.Job[sleepJob]) (string, error) {
		if b := block[j.Args.N]; b != nil {
			select {
			case <-b:
			case <-ctx.Done():
				return "", ctx.Err()
			}
		}
		time.Sleep(j.Args.D)
		e.runs.Add(1)
		return "", nil
	})
	e.opts = append([]Option{WithPrefix(prefix), WithRedis(rdb), WithLogger(zaptest.NewLogger(t, zaptest.Level(zap.ErrorLevel)))}, opts...)
	sub, err := nc.Subscribe("$JS.ACK."+e.names.JobsStream()+".>", func(m *nats.Msg) {
		if string(m.Data) != ackBody {
			return
		}
		var md jetstream.MsgMetadata
		if err := parseAckSubject(m.Subject, "", "", &md); err != nil {
			t.Errorf("ack subject %q: %v", m.Subject, err)
			return
		}
		e.mu.Lock()
		e.acks = append(e.acks, md.Sequence.Stream)
		e.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return e
}

// publish enqueues sleepJobs on root's normal band; it returns their
// stream sequences.
func (e *ackEnv) publish(jobs ...sleepJob) []uint64 {
	e.t.Helper()
	var seqs []uint64
	for _, j := range jobs {
		args, err := wire.Marshal(j)
		if err != nil {
			e.t.Fatal(err)
		}
		data, err := wire.EncodeEnvelope(&wire.Envelope{ID: wire.NewID(), Name: j.JobName(), Args: args, Channel: job.DefaultChannel})
		if err != nil {
			e.t.Fatal(err)
		}
		ack, err := e.js.Publish(context.Background(), e.names.JobsSubject(job.DefaultChannel, 1), data)
		if err != nil {
			e.t.Fatal(err)
		}
		seqs = append(seqs, ack.Sequence)
	}
	return seqs
}

// run starts a worker on a connection of its own; stop ends it and
// returns once Run has.
func (e *ackEnv) run(opts ...Option) (stop func()) {
	_, stop = runOwn(e.t, e.srv, e.reg, append(slices.Clone(e.opts), opts...)...)
	return stop
}

// runOwn runs a worker on a connection of its own until stop (idempotent),
// or the end of the test.
func runOwn(t *testing.T, srv *testenv.NATSServer, reg *Registry, opts ...Option) (_ *Worker, stop func()) {
	t.Helper()
	wjs, err := jetstream.New(srv.Connect(t))
	if err != nil {
		t.Fatal(err)
	}
	w, err := New(wjs, reg, opts...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("worker: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return w, stop
}

func (e *ackEnv) seen() []uint64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.acks)
}

// acked waits until the acks of seqs have all arrived.
func (e *ackEnv) acked(timeout time.Duration, seqs ...uint64) {
	e.t.Helper()
	testenv.Eventually(e.t, timeout, func() bool {
		seen := e.seen()
		for _, s := range seqs {
			if !slices.Contains(seen, s) {
				return false
			}
		}
		return true
	}, "acks seen %v, want all of %v", e.seen(), seqs)
}

// A worker alone on its consumer acks in stream order however its runners
// finish, so the server deletes each message at the start of its block:
// no block is rewritten (docs/benchmarks.md). The jobs sleep at random and
// 16 run at once, so they end in no set order.
func TestAcksReachTheServerInDeliveryOrder(t *testing.T) {
	e := newAckEnv(t, nil, WithConcurrency(16), Option(func(c *config) { c.ackHold = time.Minute }))
	var jobs []sleepJob
	for i := range 300 {
		jobs = append(jobs, sleepJob{N: i, D: time.Duration(rand.IntN(3000)) * time.Microsecond})
	}
	seqs := e.publish(jobs...)
	e.run()
	e.acked(30*time.Second, seqs...)
	if got := e.seen(); !slices.IsSorted(got) {
		t.Fatalf("acks out of stream order: %v", got)
	}
}

// A job still running holds the acks of the jobs after it for the hold
// only: they reach the server while it runs.
func TestASlowJobDoesNotHoldBackTheAcksAfterIt(t *testing.T) {
	block := map[int]chan struct{}{0: make(chan struct{})}
	e := newAckEnv(t, block, Option(func(c *config) { c.ackHold = 100 * time.Millisecond }))
	seqs := e.publish(sleepJob{N: 0})
	var rest []sleepJob
	for i := 1; i <= 20; i++ {
		rest = append(rest, sleepJob{N: i})
	}
	seqs = append(seqs, e.publish(rest...)...)
	e.run()
	e.acked(20*time.Second, seqs[1:]...)
	close(block[0])
	e.acked(20*time.Second, seqs[0])
}

// Acks held when the worker stops are sent before Run returns, so the
// jobs that ran do not run again. Here they wait behind a gap: the test
// takes one delivery of the consumer, as another process would.
func TestHeldAcksAreSentAsTheWorkerStops(t *testing.T) {
	e := newAckEnv(t, nil, Option(func(c *config) { c.ackHold = time.Hour }))
	first := e.publish(sleepJob{N: 0})
	stop := e.run()
	e.acked(20*time.Second, first...)
	ctx := context.Background()
	cons, err := e.js.Consumer(ctx, e.names.JobsStream(), e.names.JobsConsumer(job.DefaultChannel, 1))
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(20*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.js.Conn().Flush(); err != nil { // the request is in before the jobs
		t.Fatal(err)
	}
	var jobs []sleepJob
	for i := 1; i <= 20; i++ {
		jobs = append(jobs, sleepJob{N: i})
	}
	seqs := e.publish(jobs...)
	var taken uint64
	for m := range batch.Messages() {
		md, err := m.Metadata()
		if err != nil {
			t.Fatal(err)
		}
		taken = md.Sequence.Stream
	}
	if taken == 0 || taken == seqs[len(seqs)-1] {
		t.Fatalf("the test's delivery is %d of %v: no gap before the worker's", taken, seqs)
	}
	theirs := slices.DeleteFunc(slices.Clone(seqs), func(s uint64) bool { return s == taken })
	testenv.Eventually(t, 20*time.Second, func() bool { return e.runs.Load() == int64(1+len(theirs)) }, "%d jobs ran, want %d", e.runs.Load(), 1+len(theirs))
	for _, s := range theirs {
		if s > taken && slices.Contains(e.seen(), s) {
			t.Fatalf("the ack of %d, after the gap at %d, went before the hold", s, taken)
		}
	}
	stop()
	e.acked(10*time.Second, theirs...)
	info, err := e.js.Stream(ctx, e.names.JobsStream())
	if err != nil {
		t.Fatal(err)
	}
	if n := info.CachedInfo().State.Msgs; n != 1 {
		t.Fatalf("jobs stream holds %d messages after the stop, want 1 (the test's)", n)
	}
}
