package dispatcher_test

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/connector-go/connector/dispatcher"
	"github.com/connector-go/connector/internal/devenv"
	"github.com/connector-go/connector/job"
	"github.com/connector-go/connector/worker"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
)

type ImportProduct struct {
	ExternalID string `msgpack:"external_id"`
}

func (ImportProduct) JobName() string { return "shop.import_product" }

type Step struct {
	Name string `msgpack:"name"`
}

func (Step) JobName() string { return "example.step" }

// env is what the examples run on: an embedded NATS server and an
// embedded Redis-protocol store (in production: your NATS and Redis).
type env struct {
	js   jetstream.JetStream
	rdb  *redis.Client
	stop func()
}

func start() env {
	srv, err := devenv.StartNATS(devenv.NATSOptions{})
	if err != nil {
		panic(err)
	}
	nc, err := nats.Connect(srv.URL)
	if err != nil {
		panic(err)
	}
	js, _ := jetstream.New(nc)
	mr, err := devenv.StartRedis("")
	if err != nil {
		panic(err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	return env{js: js, rdb: rdb, stop: func() { _ = rdb.Close(); mr.Close(); nc.Close(); srv.Stop() }}
}

// provision creates the streams and consumers of prefix, as a worker does
// at start-up (or `connector streams provision`), without running it.
func provision(ctx context.Context, e env, prefix string) {
	w, err := worker.New(e.js, worker.NewRegistry(), worker.WithPrefix(prefix))
	if err != nil {
		panic(err)
	}
	if err := w.Setup(ctx); err != nil {
		panic(err)
	}
}

// statsWhen reads d.Stats until cond holds (JetStream's consumers count a
// job a moment after its enqueue returns), for 5 s at most.
func statsWhen(ctx context.Context, d *dispatcher.Dispatcher, cond func(dispatcher.Stats) bool) dispatcher.Stats {
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, err := d.Stats(ctx)
		if err == nil && cond(st) || time.Now().After(deadline) {
			return st
		}
		time.Sleep(5 * time.Millisecond) // polling a condition, with a deadline
	}
}

// waiting is the number of jobs waiting in all queues.
func waiting(st dispatcher.Stats) uint64 {
	var n uint64
	for _, q := range st.Queues {
		n += q.Waiting
	}
	return n
}

// Enqueue with options, then look at the job's record and at the queue.
// Nothing runs the job here: it waits for a worker.
func Example() {
	e := start()
	defer e.stop()
	ctx := context.Background()
	provision(ctx, e, "shop")

	d, _ := dispatcher.New(e.js, dispatcher.WithPrefix("shop"), dispatcher.WithRedis(e.rdb))
	defer func() { _ = d.Close(ctx) }()
	id, err := d.Enqueue(ctx, ImportProduct{ExternalID: "P-1"},
		job.WithDescription("import product P-1"),
		job.WithMaxRetries(5),
		job.WithPriority(1), // lower runs first; the default is 10
	)
	if err != nil {
		fmt.Println(err)
		return
	}
	rec, _ := d.Job(ctx, id)
	fmt.Println(rec.Name, rec.State, rec.Description)

	st := statsWhen(ctx, d, func(st dispatcher.Stats) bool { return waiting(st) == 1 }) // JetStream counts it a moment later
	for _, q := range st.Queues {
		if q.Waiting > 0 {
			fmt.Printf("%s, band %d: %d waiting\n", q.Channel, q.Band, q.Waiting)
		}
	}
	// Output:
	// shop.import_product enqueued import product P-1
	// root, band 0: 1 waiting
}

// A bulk enqueue publishes asynchronously: 10,000 jobs cost a handful of
// round trips, not 10,000.
func ExampleDispatcher_EnqueueMany() {
	e := start()
	defer e.stop()
	ctx := context.Background()
	provision(ctx, e, "bulk")

	d, _ := dispatcher.New(e.js, dispatcher.WithPrefix("bulk"))
	items := make([]dispatcher.Item, 10_000)
	for i := range items {
		items[i] = dispatcher.Item{Args: ImportProduct{ExternalID: fmt.Sprint("P-", i)}}
	}
	res, err := d.EnqueueMany(ctx, items)
	if err != nil {
		// err joins the items' errors; each Result says which failed
		fmt.Println(err)
	}
	fmt.Println(len(res), "enqueued, first error:", res[0].Err)
	st := statsWhen(ctx, d, func(st dispatcher.Stats) bool { return waiting(st) == 10_000 }) // JetStream counts them a moment later
	fmt.Println(waiting(st), "waiting")
	// Output:
	// 10000 enqueued, first error: <nil>
	// 10000 waiting
}

// An identity key makes enqueuing idempotent: while a job with the key
// waits to start, enqueuing another with the same key returns the first
// one's id (the seed's identity_key). When an enqueue cannot tell whether
// the job was stored (ErrOutcomeUnknown: its acknowledgement was lost),
// retry with the id it returned: the stream stores that id once.
func ExampleDispatcher_Enqueue_identityKey() {
	e := start()
	defer e.stop()
	ctx := context.Background()
	provision(ctx, e, "ident")

	d, _ := dispatcher.New(e.js, dispatcher.WithPrefix("ident"), dispatcher.WithRedis(e.rdb))
	defer func() { _ = d.Close(ctx) }()
	first, err := d.Enqueue(ctx, ImportProduct{ExternalID: "P-1"}, job.WithIdentityExact())
	if errors.Is(err, dispatcher.ErrOutcomeUnknown) {
		first, err = d.Enqueue(ctx, ImportProduct{ExternalID: "P-1"}, job.WithIdentityExact(), job.WithID(first))
	}
	if err != nil {
		fmt.Println(err)
		return
	}
	again, _ := d.Enqueue(ctx, ImportProduct{ExternalID: "P-1"}, job.WithIdentityExact())
	other, _ := d.Enqueue(ctx, ImportProduct{ExternalID: "P-2"}, job.WithIdentityExact())
	fmt.Println("same job:", first == again)
	fmt.Println("other args, other job:", first != other)
	// Output:
	// same job: true
	// other args, other job: true
}

// A job graph: the customer first, then both products at once, then the
// order once both products are done.
func ExampleDispatcher_EnqueueGraph() {
	e := start()
	defer e.stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	ran := make(chan string, 4)
	reg := worker.NewRegistry()
	worker.MustRegister(reg, func(ctx context.Context, j *job.Job[Step]) (string, error) {
		ran <- j.Args.Name
		return "", nil
	})
	w, _ := worker.New(e.js, reg, worker.WithPrefix("graph"), worker.WithRedis(e.rdb))
	_ = w.Setup(ctx)
	go func() { _ = w.Run(ctx) }()

	d, _ := dispatcher.New(e.js, dispatcher.WithPrefix("graph"), dispatcher.WithRedis(e.rdb))
	defer func() { _ = d.Close(ctx) }()
	g := dispatcher.Chain(
		dispatcher.Job(Step{Name: "customer 7"}),
		dispatcher.Group(dispatcher.Job(Step{Name: "product 1"}), dispatcher.Job(Step{Name: "product 2"})),
		dispatcher.Job(Step{Name: "order 42"}),
	)
	res, err := d.EnqueueGraph(ctx, g)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(len(res.Jobs), "jobs in the graph")

	var order []string
	for len(order) < 4 {
		select {
		case s := <-ran:
			order = append(order, s)
		case <-time.After(30 * time.Second):
			fmt.Println("timeout")
			return
		}
	}
	sort.Strings(order[1:3]) // the group's two jobs run in either order
	fmt.Println(strings.Join(order, " | "))
	// Output:
	// 4 jobs in the graph
	// customer 7 | product 1 | product 2 | order 42
}

// A job that fails for good lands in the dead-letter stream with its
// error; once the cause is fixed, Requeue runs it again, its attempts
// reset.
func ExampleDispatcher_Requeue() {
	e := start()
	defer e.stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	var fixed atomic.Bool
	done := make(chan string, 1)
	reg := worker.NewRegistry()
	worker.MustRegister(reg, func(ctx context.Context, j *job.Job[ImportProduct]) (string, error) {
		if !fixed.Load() {
			return "", errors.New("product P-9 has no price") // not retryable: dead at once
		}
		done <- "imported " + j.Args.ExternalID
		return "imported", nil
	})
	w, _ := worker.New(e.js, reg, worker.WithPrefix("dead"), worker.WithRedis(e.rdb))
	_ = w.Setup(ctx)
	go func() { _ = w.Run(ctx) }()

	d, _ := dispatcher.New(e.js, dispatcher.WithPrefix("dead"), dispatcher.WithRedis(e.rdb))
	defer func() { _ = d.Close(ctx) }()
	id, _ := d.Enqueue(ctx, ImportProduct{ExternalID: "P-9"})

	var dead []dispatcher.DeadLetter
	for deadline := time.Now().Add(30 * time.Second); len(dead) == 0 && time.Now().Before(deadline); {
		dead, _ = d.DeadLetters(ctx, 0)
		time.Sleep(10 * time.Millisecond) // polling a condition, with a deadline
	}
	if len(dead) == 0 {
		fmt.Println("timeout")
		return
	}
	fmt.Println("dead:", dead[0].Error, "after", dead[0].Attempts, "attempt(s)")

	fixed.Store(true)
	if err := d.Requeue(ctx, id); err != nil {
		fmt.Println(err)
		return
	}
	select {
	case s := <-done:
		fmt.Println(s)
	case <-time.After(30 * time.Second):
		fmt.Println("timeout")
	}
	// Output:
	// dead: product P-9 has no price after 1 attempt(s)
	// imported P-9
}
