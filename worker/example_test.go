package worker_test

import (
	"context"
	"fmt"
	"time"

	"github.com/connector-go/connector/dispatcher"
	"github.com/connector-go/connector/internal/devenv"
	"github.com/connector-go/connector/job"
	"github.com/connector-go/connector/worker"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

type Greet struct {
	Name string `msgpack:"name"`
}

func (Greet) JobName() string { return "example.greet" }

// A typed job, its handler, a dispatcher that enqueues it and a worker that
// runs it, on an embedded NATS server.
func Example() {
	srv, _ := devenv.StartNATS(devenv.NATSOptions{})
	defer srv.Stop()
	nc, _ := nats.Connect(srv.URL)
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	done := make(chan string)
	reg := worker.NewRegistry()
	worker.MustRegister(reg, func(ctx context.Context, j *job.Job[Greet]) (string, error) {
		done <- "hello, " + j.Args.Name
		return "greeted", nil
	})
	w, _ := worker.New(js, reg, worker.WithPrefix("example"))
	_ = w.Setup(ctx) // creates the streams and consumers (Run does it too)
	go func() { _ = w.Run(ctx) }()

	d, _ := dispatcher.New(js, dispatcher.WithPrefix("example"))
	_, _ = d.Enqueue(ctx, Greet{Name: "Ada"}, job.WithMaxRetries(3))
	select {
	case s := <-done:
		fmt.Println(s)
	case <-time.After(10 * time.Second):
		fmt.Println("timeout")
	}
	// Output: hello, Ada
}
