package worker_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/connector-go/connector/dispatcher"
	"github.com/connector-go/connector/internal/streams"
	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/internal/wire"
	"github.com/connector-go/connector/job"
	"github.com/connector-go/connector/worker"
	"github.com/connector-go/connector/worker/internal/testjobs"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
)

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// NATS goes away with jobs queued and comes back (same store): the worker
// pauses, reconnects and runs every job; none is lost.
func TestNATSOutagePausesThenRecovers(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	port, dir := freePort(t), t.TempDir()
	start := func() *server.Server {
		ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: port, JetStream: true, StoreDir: dir, NoLog: true, NoSigs: true})
		if err != nil {
			t.Fatal(err)
		}
		go ns.Start()
		if !ns.ReadyForConnections(10 * time.Second) {
			t.Fatal("nats not ready")
		}
		return ns
	}
	ns := start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	nc, err := nats.Connect(ns.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	if err := streams.Ensure(ctx, js, streams.Config{Names: wire.MustNames(prefix)}); err != nil {
		t.Fatal(err)
	}
	d, _ := dispatcher.New(js, dispatcher.WithPrefix(prefix), dispatcher.WithRedis(rdb))
	defer d.Close(ctx)
	reg := worker.NewRegistry()
	testjobs.RegisterProbe(reg, rdb, prefix)
	w, _ := worker.New(js, reg, worker.WithPrefix(prefix), worker.WithRedis(rdb),
		worker.WithLogger(zaptest.NewLogger(t, zaptest.Level(zap.ErrorLevel))))
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(wctx) }()
	defer func() { cancel(); <-done }()

	count := func() int { n, _ := rdb.LLen(ctx, prefix+":probe:o:done").Result(); return int(n) }
	for i := 0; i < 5; i++ {
		if _, err := d.Enqueue(ctx, testjobs.Probe{Key: "o", N: i}); err != nil {
			t.Fatal(err)
		}
	}
	testenv.Eventually(t, 10*time.Second, func() bool { return count() == 5 }, "first jobs")
	ns.Shutdown()
	ns.WaitForShutdown()
	ns = start()
	for i := 5; i < 10; i++ {
		ectx, c := context.WithTimeout(ctx, 10*time.Second)
		_, err := d.Enqueue(ectx, testjobs.Probe{Key: "o", N: i})
		c()
		if err != nil {
			t.Fatalf("enqueue after the restart: %v", err)
		}
	}
	testenv.Eventually(t, 30*time.Second, func() bool { return count() == 10 }, "jobs after the outage (%d)", count())
}

// Redis goes away: jobs of a limited channel (slots live in Redis) wait,
// then run when it is back. The worker does not die.
func TestRedisOutagePausesThenRecovers(t *testing.T) {
	redisSrv := newFlakyRedis(t)
	rdb := redisSrv.rdb
	_, _, js := testenv.JetStream(t)
	prefix := testenv.Prefix(t)
	ctx := context.Background()
	if err := streams.Ensure(ctx, js, streams.Config{Names: wire.MustNames(prefix)}); err != nil {
		t.Fatal(err)
	}
	d, _ := dispatcher.New(js, dispatcher.WithPrefix(prefix))
	reg := worker.NewRegistry()
	ran := make(chan int, 100)
	worker.MustRegister(reg, func(ctx context.Context, j *job.Job[testjobs.Probe]) (string, error) {
		ran <- j.Args.N
		return "", nil
	})
	w, _ := worker.New(js, reg, worker.WithPrefix(prefix), worker.WithRedis(rdb), worker.WithChannels("root.lim:2"),
		worker.WithLogger(zaptest.NewLogger(t, zaptest.Level(zap.ErrorLevel+1))))
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(wctx) }()
	defer func() { cancel(); <-done }()
	if _, err := d.Enqueue(ctx, testjobs.Probe{N: 1}, job.WithChannel("root.lim")); err != nil {
		t.Fatal(err)
	}
	if n := <-ran; n != 1 {
		t.Fatal(n)
	}
	redisSrv.kill()
	if _, err := d.Enqueue(ctx, testjobs.Probe{N: 2}, job.WithChannel("root.lim")); err != nil {
		t.Fatal(err)
	}
	select {
	case n := <-ran:
		t.Fatalf("job %d ran without its channel slot", n)
	case <-time.After(1500 * time.Millisecond): // proving a negative needs some time
	}
	redisSrv.restart()
	select {
	case n := <-ran:
		if n != 2 {
			t.Fatal(n)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("job did not run after Redis came back")
	}
}

// While Redis is down, admission waits (no job starts, even in an
// unlimited channel) and the jobs a worker received keep their leases (docs/architecture.md: every received message is under
// heartbeat at once), however many arrive meanwhile: none is delivered
// again, and once Redis is back each runs once.
func TestRedisOutageKeepsTheLeasesOfArrivingJobs(t *testing.T) {
	redisSrv := newFlakyRedis(t)
	rdb := redisSrv.rdb
	_, _, js := testenv.JetStream(t)
	prefix := testenv.Prefix(t)
	names := wire.MustNames(prefix)
	ctx := context.Background()
	if err := streams.Ensure(ctx, js, streams.Config{Names: names}); err != nil {
		t.Fatal(err)
	}
	d, _ := dispatcher.New(js, dispatcher.WithPrefix(prefix))
	reg := worker.NewRegistry()
	var mu sync.Mutex
	runs := map[int]int{}
	worker.MustRegister(reg, func(ctx context.Context, j *job.Job[testjobs.Probe]) (string, error) {
		mu.Lock()
		runs[j.Args.N]++
		mu.Unlock()
		return "", nil
	})
	ran := func() (n, twice int) {
		mu.Lock()
		defer mu.Unlock()
		for _, r := range runs {
			n++
			if r > 1 {
				twice++
			}
		}
		return n, twice
	}
	w, _ := worker.New(js, reg, worker.WithPrefix(prefix), worker.WithRedis(rdb), worker.WithAckWait(time.Second),
		worker.WithPrefetch(200), worker.WithLogger(zaptest.NewLogger(t, zaptest.Level(zap.ErrorLevel+1))))
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(wctx) }()
	defer func() { cancel(); <-done }()
	if _, err := d.Enqueue(ctx, testjobs.Probe{N: 0}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() bool { n, _ := ran(); return n == 1 }, "first job ran")

	redisSrv.kill()
	// Jobs arrive one by one: each is a group of its own for admission.
	const jobs = 60
	for i := 1; i <= jobs; i++ {
		if _, err := d.Enqueue(ctx, testjobs.Probe{N: i}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond) // spaced arrivals, not a wait on a condition
	}
	// The outage lasts three leases: a job received and not under
	// heartbeat meanwhile is delivered again.
	time.Sleep(3 * time.Second) // the outage's length, not a wait on a condition
	// Admission waits for Redis (no cancel check, no start): none of the
	// jobs that arrived during the outage ran, though the channel is
	// unlimited.
	if n, _ := ran(); n != 1 {
		t.Fatalf("%d jobs ran while Redis was down: admission did not wait for the cancel check", n-1)
	}
	redisSrv.restart()
	testenv.Eventually(t, 20*time.Second, func() bool { n, _ := ran(); return n == jobs+1 }, "every job ran after the outage")
	cons, err := js.Consumer(ctx, names.JobsStream(), names.JobsConsumer("root", 1))
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() bool {
		info, err := cons.Info(ctx)
		return err == nil && info.NumAckPending == 0 && info.NumPending == 0
	}, "every job settled")
	if _, twice := ran(); twice > 0 {
		t.Errorf("%d jobs ran twice: their leases ran out in the worker while Redis was down", twice)
	}
}

// flakyRedis is a privateRedis a test kills and starts again, with a
// client that gives up fast while it is down.
type flakyRedis struct {
	start func() *exec.Cmd
	srv   *exec.Cmd
	rdb   *redis.Client
}

func newFlakyRedis(t *testing.T) *flakyRedis {
	start, addr := privateRedis(t)
	f := &flakyRedis{start: start, srv: start()}
	f.rdb = redis.NewClient(&redis.Options{Addr: addr, MaxRetries: 1,
		DialTimeout: 200 * time.Millisecond, ReadTimeout: 500 * time.Millisecond})
	t.Cleanup(func() {
		_ = f.rdb.Close()
		f.kill()
	})
	return f
}

// kill stops the server at once; restart starts it again, on its address.
func (f *flakyRedis) kill() {
	_ = f.srv.Process.Kill()
	_, _ = f.srv.Process.Wait()
}

func (f *flakyRedis) restart() { f.srv = f.start() }

// privateRedis is a redis-server of the test's own, on a free port, for a
// test to kill and start again (skipped without one, failed in CI): start
// starts it and waits until it answers; addr is where.
func privateRedis(t *testing.T) (start func() *exec.Cmd, addr string) {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CONNECTOR_TEST_REQUIRE_REDIS") == "1" {
			t.Fatal("redis-server not installed")
		}
		t.Skip("redis-server not installed")
	}
	port := freePort(t)
	addr = fmt.Sprintf("127.0.0.1:%d", port)
	return func() *exec.Cmd {
		cmd := exec.Command(bin, "--port", fmt.Sprint(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		c := redis.NewClient(&redis.Options{Addr: addr})
		defer c.Close()
		testenv.Eventually(t, 10*time.Second, func() bool { return c.Ping(context.Background()).Err() == nil }, "redis up")
		return cmd
	}, addr
}
