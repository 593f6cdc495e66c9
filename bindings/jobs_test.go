package bindings_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/connector-go/connector/bindings"
	"github.com/connector-go/connector/dispatcher"
	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/job"
	"github.com/connector-go/connector/worker"
)

// These tests run the package's errors through a real worker (embedded
// NATS JetStream, real Redis): what the job runtime does with them is the
// point of their types.

type importRecord struct {
	ExternalID string `msgpack:"external_id"`
}

func (importRecord) JobName() string { return "bindings_test.import_record" }

// runWorker starts a worker for reg on a fresh JetStream server and returns
// a dispatcher that enqueues to it. The worker's own Redis (records) is rdb.
func runWorker(t *testing.T, rdb *redis.Client, prefix string, reg *worker.Registry) *dispatcher.Dispatcher {
	t.Helper()
	_, _, js := testenv.JetStream(t)
	ctx := context.Background()
	w, err := worker.New(js, reg, worker.WithPrefix(prefix), worker.WithRedis(rdb),
		worker.WithLogger(zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))))
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Setup(ctx); err != nil { // provisions the streams
		t.Fatal(err)
	}
	d, err := dispatcher.New(js, dispatcher.WithPrefix(prefix), dispatcher.WithRedis(rdb))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close(context.Background()) })
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(runCtx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("worker.Run: %v", err)
			}
		case <-time.After(60 * time.Second):
			t.Errorf("worker did not stop")
		}
	})
	return d
}

// notDead fails the test at once when the job has been dead-lettered, so
// that a wrong error type fails fast instead of at a timeout.
func notDead(t *testing.T, d *dispatcher.Dispatcher, id string) {
	t.Helper()
	if r, err := d.Job(context.Background(), id); err == nil && r.State == job.StateDead {
		t.Fatalf("job %s was dead-lettered: %s", id, r.Error)
	}
}

func waitDone(t *testing.T, d *dispatcher.Dispatcher, id string, timeout time.Duration) job.Record {
	t.Helper()
	var rec job.Record
	testenv.Eventually(t, timeout, func() bool {
		r, err := d.Job(context.Background(), id)
		rec = r
		if err == nil && r.State == job.StateDead {
			t.Fatalf("job %s was dead-lettered: %s", id, r.Error)
		}
		return err == nil && r.State == job.StateDone
	}, "job %s done (last record %+v)", id, &rec)
	return rec
}

// A job that finds its record locked elsewhere runs again later, and those
// runs do not count as attempts: with max retries 1, a counted retry would
// kill the job at its first run. Once the lock is released, the job
// completes as attempt 1.
func TestJobFindingLockHeldElsewhereRetriesUncounted(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	ctx := context.Background()
	store := bindings.New(rdb, prefix, bindings.WithLockRetryDelay(50*time.Millisecond))

	var runs, lockedRuns atomic.Int32
	succeeded := make(chan int, 1)
	reg := worker.NewRegistry()
	worker.MustRegister(reg, func(ctx context.Context, j *job.Job[importRecord]) (string, error) {
		runs.Add(1)
		release, err := store.Acquire(ctx, "shop/product/"+j.Args.ExternalID, 10*time.Second)
		if err != nil {
			if errors.Is(err, bindings.ErrLocked) {
				lockedRuns.Add(1)
			}
			return "", err // as a handler should: the error says what to do
		}
		defer func() { _ = release(context.WithoutCancel(ctx)) }()
		succeeded <- j.Attempt
		return "imported", nil
	})
	d := runWorker(t, rdb, prefix, reg)

	// Another worker holds the record.
	other, err := store.Lock(ctx, "shop/product/E1", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	id, err := d.Enqueue(ctx, importRecord{ExternalID: "E1"}, job.WithMaxRetries(1))
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 20*time.Second, func() bool { notDead(t, d, id); return lockedRuns.Load() >= 4 },
		"the job to find the lock held 4 times (runs so far: %d)", runs.Load())
	if err := other.Release(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case attempt := <-succeeded:
		if attempt != 1 {
			t.Fatalf("the job succeeded as attempt %d; runs that found the lock held were counted", attempt)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("the job did not succeed after the lock was released (runs %d)", runs.Load())
	}
	rec := waitDone(t, d, id, 10*time.Second)
	if rec.Result != "imported" {
		t.Fatalf("record: %+v", rec)
	}
	t.Logf("%d runs found the lock held, then attempt 1 succeeded", lockedRuns.Load())
}

// A Redis outage while a job binds a record: the job gets a retryable
// error (a counted retry), runs again when Redis is back, and the binding
// is there in the end: nothing lost, no panic. The worker's own Redis stays
// up; only the connection the bindings use is cut.
func TestJobDuringRedisOutageRetriesAndBinds(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	ctx := context.Background()
	proxy := startProxy(t, testRedisAddr(t))
	flaky := redis.NewClient(&redis.Options{Addr: proxy.Addr(), MaxRetries: -1,
		DialTimeout: 500 * time.Millisecond, ReadTimeout: 500 * time.Millisecond, WriteTimeout: 500 * time.Millisecond})
	t.Cleanup(func() { _ = flaky.Close() })
	products := bindings.New(flaky, prefix).Binder("shop", "product")

	var outageErrs atomic.Int32
	reg := worker.NewRegistry()
	worker.MustRegister(reg, func(ctx context.Context, j *job.Job[importRecord]) (string, error) {
		err := products.Bind(ctx, j.Args.ExternalID, "P-"+j.Args.ExternalID, time.Now())
		if err != nil {
			if !errors.Is(err, bindings.ErrUnavailable) {
				t.Errorf("Bind during the outage: %v; want ErrUnavailable", err)
			}
			outageErrs.Add(1)
			return "", err
		}
		return "bound", nil
	})
	d := runWorker(t, rdb, prefix, reg)

	proxy.set(proxyDown)
	id, err := d.Enqueue(ctx, importRecord{ExternalID: "E1"},
		job.WithMaxRetries(20), job.WithRetryPattern(job.RetryPattern{1: 100 * time.Millisecond}))
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 20*time.Second, func() bool { notDead(t, d, id); return outageErrs.Load() >= 2 },
		"the job to meet the outage twice")
	proxy.set(proxyUp)
	rec := waitDone(t, d, id, 20*time.Second)
	if rec.Result != "bound" || rec.Attempts < 3 {
		t.Fatalf("record %+v; want done after at least 2 failed attempts", rec)
	}
	loc, found, err := bindings.New(rdb, prefix).Binder("shop", "product").ToInternal(ctx, "E1")
	if err != nil || !found || loc != "P-E1" {
		t.Fatalf("after recovery: %q %v %v", loc, found, err)
	}
}
