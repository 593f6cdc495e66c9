package e2e_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/connector-go/connector/dispatcher"
	"github.com/connector-go/connector/internal/streams"
	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/internal/wire"
	"github.com/connector-go/connector/job"
	"github.com/connector-go/connector/worker"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// jobFailover is a job of TestJobsSurviveTheLossOfTheJobsStreamLeader:
// Hold makes its run wait for the test's gate.
type jobFailover struct {
	N    int  `msgpack:"n"`
	Hold bool `msgpack:"hold"`
}

func (jobFailover) JobName() string { return "e2e.failover" }

// runLog counts the runs of each job (by its N), safe for concurrent use.
type runLog struct {
	mu   sync.Mutex
	runs map[int]int
	last map[int]time.Time // the end of each job's last run
}

func (r *runLog) add(n int) {
	r.mu.Lock()
	r.runs[n]++
	r.last[n] = time.Now()
	r.mu.Unlock()
}

func (r *runLog) lastRun(n int) time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last[n]
}

// ran returns how many of the jobs in [from, to) ran at least once.
func (r *runLog) ran(from, to int) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := 0
	for n := from; n < to; n++ {
		if r.runs[n] > 0 {
			c++
		}
	}
	return c
}

func (r *runLog) count(n int) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.runs[n]
}

// A 3-node JetStream cluster with R3 streams loses the server that leads
// the jobs stream while jobs run: every job still completes (at least
// once), only jobs not settled before the failover run twice, and jobs
// enqueued after it run once.
//
//   - jobs 0..99 run and are acknowledged (the stream is empty: the acks
//     are committed) before the failover: each runs exactly once;
//   - jobs 100..299 hold their run on a gate: every runner of the two
//     workers is inside one (16 running), the others wait in the workers'
//     queues or the stream. The stream's leader is shut down, then the
//     gate opens, so the running jobs end (and ack) while the stream, and
//     maybe their consumers, have no leader yet. Each runs at least once
//     (a lost ack is a redelivery after AckWait: duplicates are reported);
//   - jobs 300..349 are enqueued once a new leader is elected: each runs
//     exactly once.
func TestJobsSurviveTheLossOfTheJobsStreamLeader(t *testing.T) {
	const (
		settled  = 100 // jobs done before the failover
		held     = 200 // jobs in flight or queued at the failover
		after    = 50  // jobs enqueued after it
		conc     = 8   // runners per worker
		deadline = 60 * time.Second
	)
	begin := time.Now()
	rdb, prefix := testenv.Redis(t)
	names := wire.MustNames(prefix)

	// Three clustered servers, JetStream on each with its own store.
	var client, routes [3]int
	for i := range 3 {
		client[i], routes[i] = testenv.Port(t, testenv.FreeAddr(t)), testenv.Port(t, testenv.FreeAddr(t))
	}
	var srv [3]*testenv.NATSServer
	var urls []string
	for i := range 3 {
		srv[i] = testenv.StartNATS(t, func(o *server.Options) {
			o.ServerName = "n" + strconv.Itoa(i+1)
			o.Port = client[i]
			o.Cluster = server.ClusterOpts{Name: "c-" + prefix, Host: "127.0.0.1", Port: routes[i]}
			o.Routes = server.RoutesFromStr(fmt.Sprintf("nats://127.0.0.1:%d,nats://127.0.0.1:%d,nats://127.0.0.1:%d", routes[0], routes[1], routes[2]))
		})
		urls = append(urls, srv[i].URL)
	}
	testenv.Eventually(t, deadline, func() bool {
		for _, s := range srv {
			if s.Server.JetStreamIsLeader() {
				return true
			}
		}
		return false
	}, "a JetStream meta leader")

	// Every client knows all three servers and reconnects forever.
	connect := func(name string) jetstream.JetStream {
		t.Helper()
		nc, err := nats.Connect(strings.Join(urls, ","), nats.Name(name), nats.MaxReconnects(-1),
			nats.ReconnectWait(100*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		return js
	}
	admin := connect("admin")
	var lastErr error
	testenv.Eventually(t, deadline, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		lastErr = streams.Ensure(ctx, admin, streams.Config{Names: names, Replicas: 3})
		return lastErr == nil
	}, "R3 streams provisioned (last error: %v)", lazy(func() any { return lastErr }))
	info := func() (*jetstream.StreamInfo, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		s, err := admin.Stream(ctx, names.JobsStream())
		if err != nil {
			return nil, err
		}
		return s.Info(ctx)
	}
	if si, err := info(); err != nil {
		t.Fatal(err)
	} else if si.Config.Replicas != 3 {
		t.Fatalf("jobs stream with %d replicas, want 3", si.Config.Replicas)
	}

	// The handler counts runs per job; held jobs wait for the gate.
	runs := &runLog{runs: map[int]int{}, last: map[int]time.Time{}}
	gate := make(chan struct{})
	var holding atomic.Int64
	reg := worker.NewRegistry()
	worker.MustRegister(reg, func(ctx context.Context, j *job.Job[jobFailover]) (string, error) {
		if j.Args.Hold {
			holding.Add(1)
			defer holding.Add(-1)
			select {
			case <-gate:
			case <-ctx.Done():
				return "", ctx.Err()
			}
		}
		runs.add(j.Args.N)
		return "", nil
	})
	// Two workers, each on a connection of its own (two processes). A
	// short lease so that a lost ack is redelivered within the test; a
	// fixed prefetch so that both workers take held jobs.
	for i := range 2 {
		w, err := worker.New(connect("worker"+strconv.Itoa(i)), reg, worker.WithPrefix(prefix), worker.WithRedis(rdb),
			worker.WithLogger(quietLogger(t)), worker.WithStreamReplicas(3), worker.WithConcurrency(conc),
			worker.WithPrefetch(16), worker.WithAckWait(5*time.Second), worker.WithName("w"+strconv.Itoa(i)))
		if err != nil {
			t.Fatal(err)
		}
		runBackground(t, "worker", w.Run)
	}
	d, err := dispatcher.New(connect("producer"), dispatcher.WithPrefix(prefix), dispatcher.WithRedis(rdb))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close(context.Background()) })
	ids := map[int]string{}
	enqueueMany := func(from, to int, hold bool) {
		t.Helper()
		items := make([]dispatcher.Item, 0, to-from)
		for n := from; n < to; n++ {
			items = append(items, dispatcher.Item{Args: jobFailover{N: n, Hold: hold}})
		}
		ctx, cancel := context.WithTimeout(context.Background(), deadline)
		defer cancel()
		res, err := d.EnqueueMany(ctx, items)
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range res {
			if r.Err != nil {
				t.Fatalf("enqueue job %d: %v", from+i, r.Err)
			}
			ids[from+i] = r.ID
		}
	}
	// msgs is the number of jobs in the stream: not yet acknowledged.
	msgs := func() uint64 {
		si, err := info()
		if err != nil {
			return ^uint64(0)
		}
		return si.State.Msgs
	}

	// Phase 1: jobs that are done, and whose acks are committed (a
	// work-queue stream removes a job when its ack is applied), before
	// the failover.
	enqueueMany(0, settled, false)
	testenv.Eventually(t, deadline, func() bool { return runs.ran(0, settled) == settled && msgs() == 0 },
		"the first %d jobs done and acknowledged (%v ran, %v in the stream)", settled,
		lazy(func() any { return runs.ran(0, settled) }), lazy(func() any { return msgs() }))

	// Phase 2: every runner in a held job, the rest queued.
	enqueueMany(settled, settled+held, true)
	testenv.Eventually(t, deadline, func() bool { return holding.Load() == 2*conc },
		"%d held jobs running (have %v)", 2*conc, lazy(func() any { return holding.Load() }))
	si, err := info()
	if err != nil {
		t.Fatal(err)
	}
	old := si.Cluster.Leader
	var leader *testenv.NATSServer
	for _, s := range srv {
		if s.Opts.ServerName == old {
			leader = s
		}
	}
	if leader == nil {
		t.Fatalf("jobs stream leader %q is none of the servers", old)
	}
	// The consumers' leaders are elected apart: count those lost too.
	var consumersLost []string
	lctx, lcancel := context.WithTimeout(context.Background(), 5*time.Second)
	if stream, err := admin.Stream(lctx, names.JobsStream()); err == nil {
		for ci := range stream.ListConsumers(lctx).Info() {
			if ci.Cluster != nil && ci.Cluster.Leader == old {
				consumersLost = append(consumersLost, ci.Name)
			}
		}
	}
	lcancel()
	failover := time.Now()
	leader.Server.Shutdown()
	close(gate) // the running jobs end and ack while there is no leader yet
	leader.Server.WaitForShutdown()
	testenv.Eventually(t, deadline, func() bool {
		for _, s := range srv {
			if s != leader && s.Server.JetStreamIsStreamLeader(server.DEFAULT_GLOBAL_ACCOUNT, names.JobsStream()) {
				return true
			}
		}
		return false
	}, "a surviving server leading the jobs stream")
	elected := time.Since(failover)
	var now string
	testenv.Eventually(t, deadline, func() bool {
		si, err := info()
		if err == nil && si.Cluster != nil {
			now = si.Cluster.Leader
		}
		return err == nil && now != "" && now != old
	}, "clients see a new leader of the jobs stream (old %s, now %v)", old, lazy(func() any { return now }))

	// Phase 3: jobs enqueued after the failover. Each Enqueue is retried
	// until it is acknowledged, under an id of its own (a retried publish
	// that was stored after all is dropped as a duplicate).
	for n := settled + held; n < settled+held+after; n++ {
		id := "failover-" + prefix + "-" + strconv.Itoa(n)
		var err error
		testenv.Eventually(t, deadline, func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, err = d.Enqueue(ctx, jobFailover{N: n}, job.WithID(id))
			return err == nil
		}, "enqueue job %d after the failover (last error: %v)", n, lazy(func() any { return err }))
		ids[n] = id
	}

	total := settled + held + after
	testenv.Eventually(t, deadline, func() bool { return runs.ran(0, total) == total },
		"every job run (%v of %d; missing %v)", lazy(func() any { return runs.ran(0, total) }), total,
		lazy(func() any { return missing(runs, total) }))
	done := time.Since(failover)
	// Nothing left behind: every job acknowledged, every record done.
	testenv.Eventually(t, deadline, func() bool { return msgs() == 0 },
		"the jobs stream empty (%v left)", lazy(func() any { return msgs() }))
	for n := range total {
		testenv.WaitJob(t, d, ids[n], job.StateDone, deadline)
	}

	// The stream is empty: no job can be delivered again, the counts are final.
	dups, latest := 0, time.Duration(0)
	for n := range total {
		c := runs.count(n)
		switch {
		case c > 1 && (n < settled || n >= settled+held):
			t.Errorf("job %d ran %d times: it was not in flight at the failover", n, c)
		case c > 1:
			dups++
			latest = max(latest, runs.lastRun(n).Sub(failover))
		}
	}
	t.Logf("leader %s shut down with %d jobs running (consumer leaders lost with it: %v); new leader %s after %s; "+
		"all %d jobs done %s after the failover; %d of the %d jobs in flight or queued at it ran again (AckWait 5s; last run %s after it); "+
		"whole test %s",
		old, 2*conc, consumersLost, now, elected.Round(time.Millisecond), total, done.Round(time.Millisecond),
		dups, held, latest.Round(time.Millisecond), time.Since(begin).Round(time.Millisecond))
}

// missing lists up to 20 jobs of [0, total) that have not run.
func missing(r *runLog, total int) []int {
	var out []int
	for n := range total {
		if r.count(n) == 0 {
			out = append(out, n)
			if len(out) == 20 {
				break
			}
		}
	}
	return out
}

// lazy formats as f's result when printed: a figure read at the time a
// wait fails, not when it began.
type lazy func() any

func (l lazy) String() string { return fmt.Sprint(l()) }

// runBackground runs f until the test ends; the test fails if f returns
// an error or does not stop.
func runBackground(t *testing.T, what string, f func(context.Context) error) {
	t.Helper()
	(&env{t: t}).run(what, f)
}
