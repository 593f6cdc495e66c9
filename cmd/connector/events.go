package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"

	"github.com/connector-go/connector/events"
	"github.com/connector-go/connector/internal/app"
	"github.com/connector-go/connector/internal/wire"
)

const eventsUsage = `usage:
  connector events stats [--json]             per listener: partitions, lag, events held, dead
  connector events dead [--listener L] [--limit N] [--json]
                                              events a listener gave up on, with their errors
  connector events replay SEQ [SEQ...] | --all [--listener L]
                                              give dead events back to the listener that
                                              gave up on them (and to it only)
  connector events discard SEQ [SEQ...]       remove dead events for good (not handled again)

SEQ is the letter's sequence in the dead-letter stream (the SEQ column of
"events dead"). Connection flags as for "connector worker" (-h after a
command lists them). None of these commands needs Redis.
`

func cmdEvents(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, eventsUsage)
		return errNoCommand
	}
	if args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, eventsUsage)
		return flag.ErrHelp
	}
	sub := args[0]
	if sub != "stats" && sub != "dead" && sub != "replay" && sub != "discard" {
		fmt.Fprint(stderr, eventsUsage)
		return fmt.Errorf("unknown events command %q", sub)
	}
	fs := newFlags("events "+sub, stderr)
	var cfg app.Config
	cfg.Bind(fs, getenv)
	all := fs.Bool("all", false, "replay: every dead event that can be replayed")
	listener := fs.String("listener", "", "dead, replay --all: this listener's dead events only")
	limit := fs.Int("limit", 100, "dead: at most this many (0: all)")
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := parseInterspersed(fs, args[1:])
	if err != nil {
		return err
	}
	if err := flagsApply(fs, "events", sub, map[string][]string{
		"all": {"replay"}, "listener": {"dead", "replay"}, "limit": {"dead"}, "json": {"stats", "dead"},
	}); err != nil {
		return err
	}
	if sub == "replay" && *all && len(pos) > 0 {
		// Never every dead event for an operator who named some.
		return fmt.Errorf("usage: connector events replay SEQ [SEQ...] | --all [--listener L] (sequences or --all, not both)")
	}
	if (sub == "replay" || sub == "discard") && !*all && *listener != "" {
		// --listener filters --all: it is no check of a letter's listener.
		return fmt.Errorf("usage: connector events %s SEQ [SEQ...] (--listener only with replay --all)", sub)
	}
	if sub == "discard" && *all {
		return fmt.Errorf("usage: connector events discard SEQ [SEQ...] (no --all: discarding is for good)")
	}
	// Usage errors before any connection: nothing is done when one
	// sequence is none (a typo never half-runs a discard).
	if (sub == "stats" || sub == "dead") && len(pos) > 0 {
		return fmt.Errorf("%s: unexpected argument %q", fs.Name(), pos[0])
	}
	if (sub == "replay" || sub == "discard") && !*all && len(pos) == 0 {
		return fmt.Errorf("usage: connector events %s SEQ [SEQ...]", sub)
	}
	seqs := make([]uint64, len(pos))
	for i, p := range pos {
		seq, err := strconv.ParseUint(p, 10, 64)
		if err != nil || seq == 0 {
			return fmt.Errorf("usage: connector events %s SEQ [SEQ...]: %q: not a dead-letter sequence; nothing done", sub, p)
		}
		seqs[i] = seq
	}
	if err := cfg.Check(); err != nil {
		return err
	}
	log, err := operatorLogger(fs, &cfg, getenv, stderr)
	if err != nil {
		return err
	}
	conns, err := app.OpenNATS(ctx, &cfg, log)
	if err != nil {
		return err
	}
	defer conns.Close()
	pub, err := events.NewPublisher(conns.JS, events.WithPrefix(cfg.Prefix))
	if err != nil {
		return err
	}

	if sub == "stats" {
		st, err := pub.Stats(ctx)
		if err != nil {
			return err
		}
		if *asJSON {
			if st.Listeners == nil {
				st.Listeners = []events.ListenerStats{} // [], not null, for scripts
			}
			return json.NewEncoder(stdout).Encode(st)
		}
		tw := tabwriter.NewWriter(stdout, 0, 2, 2, ' ', 0)
		fmt.Fprintln(tw, "LISTENER\tPARTITIONS\tPENDING\tTAKEN\tREDELIVERED\tPULLS\tDEAD")
		for _, l := range st.Listeners {
			parts := strconv.Itoa(l.Partitions)
			if l.Retired > 0 {
				parts += fmt.Sprintf(" (+%d retired)", l.Retired)
			}
			if l.Standby > 0 {
				parts += fmt.Sprintf(" (+%d standby)", l.Standby)
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%d\n", l.Listener, parts, l.Pending, l.Taken, l.Redelivered, l.Pulls, l.Dead)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "dead events: %d\n", st.Dead)
		return nil
	}
	if sub == "dead" {
		letters, err := pub.DeadLetters(ctx, *listener, *limit)
		if err != nil {
			return err
		}
		return writeLetters(stdout, *asJSON, letters, "no dead events", "LISTENER\tSUBJECT",
			func(l *events.DeadLetter) (*wire.DeadLetter, string) {
				return &l.DeadLetter, fmt.Sprintf("%d\t%s\t%s", l.Seq, l.Listener, l.DeadLetter.Subject)
			})
	}

	if *all && sub == "replay" {
		before, err := pub.DeadLetters(ctx, *listener, 0)
		if err != nil {
			return err
		}
		n, err := pub.ReplayAll(ctx, *listener)
		fmt.Fprintf(stdout, "replayed %d event(s)\n", n)
		if left := len(before) - n; left > 0 && err == nil {
			// ReplayAll leaves those no listener can handle as they are.
			fmt.Fprintf(stdout, "%d dead event(s) left: they cannot be replayed as they are (\"connector events dead\" shows their reasons; fix the publisher, then discard them)\n", left)
		}
		return err
	}
	act, done := pub.Replay, "replayed"
	if sub == "discard" {
		act, done = pub.Discard, "discarded"
	}
	var errs []error
	for _, seq := range seqs {
		if err := act(ctx, seq); err != nil {
			if sub == "discard" && errors.Is(err, events.ErrNotReplayable) {
				err = fmt.Errorf("discard %d: %w: nothing discarded (a job's dead letter: connector jobs requeue or connector jobs cancel)", seq, err)
			}
			errs = append(errs, err)
			continue
		}
		fmt.Fprintf(stdout, "%s %d\n", done, seq)
	}
	return errors.Join(errs...)
}
