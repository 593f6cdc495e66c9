// Command connector runs connector workers and operates the jobs queue.
//
//	connector dev                       embedded NATS + Redis store, a worker and a demo producer
//	connector worker [flags]            run a worker against real NATS and Redis
//	connector streams provision         create or update the streams, then exit
//	connector jobs show ID              a job's state, attempts, error, timestamps
//	connector jobs dead [--limit N]     dead-lettered jobs with their errors
//	connector jobs requeue ID | --all   put dead jobs back, attempts reset
//	connector jobs cancel ID [ID...]    cancel jobs that have not started
//	connector jobs stats                jobs waiting and taken per queue; delayed, dead
//	connector events stats              per listener: partitions, lag, events held, dead
//	connector events dead               events a listener gave up on, with their errors
//	connector events replay SEQ | --all give dead events back to their listener only
//	connector events discard SEQ...     remove dead events for good
//	connector bench [--n 100000]        job runtime vs raw JetStream, one run
//
// Every flag has an environment variable (CONNECTOR_*); `connector worker
// -h` lists them.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/connector-go/connector/internal/app"
	"github.com/connector-go/connector/internal/telemetry"
)

func main() {
	// The first SIGINT or SIGTERM starts the graceful shutdown; a second
	// one ends the process at once (the signal's default action).
	ctx, stop := app.SignalContext()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv)
	stop()
	switch {
	case errors.Is(err, errNoCommand):
		os.Exit(2) // the usage is printed: a script that called it so is told
	case err != nil && !errors.Is(err, flag.ErrHelp):
		// Errors may quote URLs: never print a secret.
		fmt.Fprintln(os.Stderr, "connector:", telemetry.Redact(err.Error()))
		os.Exit(1)
	}
}

// errNoCommand: the command (or a jobs, events or streams command) is
// missing; the usage went to stderr, and the process exits with status 2
// (-h, help: status 0).
var errNoCommand = errors.New("no command")

const usage = `connector: a framework and worker runtime for connectors on NATS JetStream and Redis

usage:
  connector dev                        run everything embedded: NATS, a Redis store, a worker, demo jobs
  connector worker [flags]             run a worker (NATS and Redis from flags or CONNECTOR_* env)
  connector streams provision [flags]  create or update the JetStream streams
  connector jobs show ID [flags]       show a job record
  connector jobs dead [flags]          list dead-lettered jobs
  connector jobs requeue ID|--all      requeue dead jobs (attempts reset)
  connector jobs cancel ID [ID...]     cancel jobs that have not started
  connector jobs stats [flags]         jobs waiting and taken per queue; delayed and dead jobs
  connector events stats [flags]       per listener: lag, events held, dead events
  connector events dead [flags]        list events a listener gave up on
  connector events replay SEQ|--all    give dead events back to their listener
  connector events discard SEQ...      remove dead events for good
  connector bench [flags]              benchmark the job runtime against raw JetStream
  connector version

Run "connector <command> -h" for the flags of a command.
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errNoCommand
	}
	switch args[0] {
	case "dev":
		return cmdDev(ctx, args[1:], stdout, stderr, getenv)
	case "worker":
		return cmdWorker(ctx, args[1:], stderr, getenv)
	case "streams":
		return cmdStreams(ctx, args[1:], stdout, stderr, getenv)
	case "jobs":
		return cmdJobs(ctx, args[1:], stdout, stderr, getenv)
	case "events":
		return cmdEvents(ctx, args[1:], stdout, stderr, getenv)
	case "bench":
		return cmdBench(ctx, args[1:], stdout, stderr, getenv)
	case "version":
		fmt.Fprintln(stdout, "connector", version)
		return nil
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", args[0])
}

const version = "0.1.0-dev"
