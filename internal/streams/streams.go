// Package streams provisions the JetStream streams of a deployment,
// idempotently (CreateOrUpdateStream), under one prefix.
package streams

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/connector-go/connector/internal/connect"
	"github.com/connector-go/connector/internal/wire"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Config sizes the streams. Zero values take the defaults.
type Config struct {
	Names wire.Names
	// Replicas per stream: 1 for dev, 3 in production clusters.
	Replicas int
	// Memory uses memory storage (tests, benchmarks); default file.
	Memory bool
	// DeadMaxAge bounds dead letters' age (0 keeps them forever).
	DeadMaxAge time.Duration
	// EventsMaxAge bounds stored events (default 7 days).
	EventsMaxAge time.Duration
	// Duplicates is the publish dedup window (default 2 minutes; at most
	// the max age of a stream that has one, as the server requires).
	Duplicates time.Duration
}

func (c Config) storage() jetstream.StorageType {
	if c.Memory {
		return jetstream.MemoryStorage
	}
	return jetstream.FileStorage
}

func (c Config) replicas() int {
	if c.Replicas <= 0 {
		return 1
	}
	return c.Replicas
}

// dup is the dedup window of a stream whose messages are kept maxAge (0:
// no limit): the server refuses a window longer than the max age, so a
// short retention shortens the window too.
func (c Config) dup(maxAge time.Duration) time.Duration {
	d := c.Duplicates
	if d <= 0 {
		d = 2 * time.Minute
	}
	if maxAge > 0 && d > maxAge {
		d = maxAge
	}
	return d
}

// Jobs is the work-queue stream: runnable jobs on <prefix>.jobs.<channel>
// and pending schedules (ETA, retry delays) on <prefix>.sched.<id>.
func Jobs(c Config) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:              c.Names.JobsStream(),
		Description:       "connector jobs (work queue) and their schedules",
		Subjects:          []string{c.Names.JobsWildcard(), c.Names.ScheduleWildcard()},
		Retention:         jetstream.WorkQueuePolicy,
		Storage:           c.storage(),
		Replicas:          c.replicas(),
		Duplicates:        c.dup(0),
		AllowMsgSchedules: true,
		Discard:           jetstream.DiscardOld,
	}
}

// Dead is the dead-letter stream: limits retention, nothing removed by acks.
func Dead(c Config) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        c.Names.DeadStream(),
		Description: "connector dead letters",
		Subjects:    []string{c.Names.DeadWildcard()},
		Retention:   jetstream.LimitsPolicy,
		Storage:     c.storage(),
		Replicas:    c.replicas(),
		Duplicates:  c.dup(c.DeadMaxAge),
		MaxAge:      c.DeadMaxAge,
		AllowDirect: true,
	}
}

// DefaultEventsMaxAge is how long events are kept by default.
const DefaultEventsMaxAge = 7 * 24 * time.Hour

// Events is the stream of domain events: limits retention so that every
// listener (a durable consumer each) reads every event.
func Events(c Config) jetstream.StreamConfig {
	age := c.EventsMaxAge
	if age <= 0 {
		age = DefaultEventsMaxAge
	}
	return jetstream.StreamConfig{
		Name:        c.Names.EventsStream(),
		Description: "connector domain events",
		Subjects:    []string{c.Names.EventsWildcard()},
		Retention:   jetstream.LimitsPolicy,
		Storage:     c.storage(),
		Replicas:    c.replicas(),
		Duplicates:  c.dup(age),
		MaxAge:      age,
	}
}

// Ensure creates or updates all streams.
func Ensure(ctx context.Context, js jetstream.JetStream, c Config) error {
	for _, st := range []struct {
		sc jetstream.StreamConfig
		// edits: the connector deletes or purges messages of the stream
		// (cancelled schedules, requeued or replayed dead letters).
		edits bool
	}{{Jobs(c), true}, {Dead(c), true}, {Events(c), false}} {
		sc := st.sc
		err := ensure(ctx, js, sc, st.edits)
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			// Another process (a fleet starting together, perhaps an older
			// version with other settings) created the stream between our
			// look-up and our create: provision it again, as the existing
			// stream it now is, rather than run on its settings unchecked.
			err = ensure(ctx, js, sc, st.edits)
		}
		if err != nil {
			if strings.Contains(strings.ToLower(err.Error()), "schedule") {
				return fmt.Errorf("streams: provision %s: %w (message schedules need nats-server >= 2.12)", sc.Name, err)
			}
			return fmt.Errorf("streams: provision %s: %w", sc.Name, err)
		}
	}
	return nil
}

// ensure creates or updates one stream.
func ensure(ctx context.Context, js jetstream.JetStream, sc jetstream.StreamConfig, edits bool) error {
	// Every worker provisions at start: skip the update when nothing
	// changed, so that a fleet starting together does not update a
	// stream while others create consumers on it.
	if cur, err := js.Stream(ctx, sc.Name); err == nil {
		cc := cur.CachedInfo().Config
		if err := immutable(cc, sc, edits); err != nil {
			return err
		}
		if same(cc, sc) {
			return nil
		}
		// An update replaces the whole config: keep what an operator
		// set beyond what is provisioned here (limits, placement,
		// compression, metadata, ...).
		sc = overlay(cc, sc)
	}
	_, err := js.CreateOrUpdateStream(ctx, sc)
	return err
}

// immutable refuses a live stream with a setting that breaks the
// connector and that the server cannot change back on a live stream (error
// 10052, which names neither the stream nor the way out): its storage or
// work-queue retention, a sealed stream, and on a stream whose messages
// the connector deletes or purges (edits), deny delete or deny purge.
// Provisioning never deletes a stream: the operator recreates it.
func immutable(cur, want jetstream.StreamConfig, edits bool) error {
	const todo = "the server cannot change it on a live stream: recreate the stream (drain or move its messages to a new stream, delete it, provision again)"
	if cur.Storage != want.Storage {
		return fmt.Errorf("stream %s has storage %s, provisioning needs %s; %s", want.Name, cur.Storage, want.Storage, todo)
	}
	if cur.Retention != want.Retention && (cur.Retention == jetstream.WorkQueuePolicy || want.Retention == jetstream.WorkQueuePolicy) {
		return fmt.Errorf("stream %s has retention %s, provisioning needs %s; %s", want.Name, cur.Retention, want.Retention, todo)
	}
	for _, f := range []struct {
		set  bool
		name string
	}{{cur.Sealed, "sealed"}, {edits && cur.DenyDelete, "deny delete"}, {edits && cur.DenyPurge, "deny purge"}} {
		if f.set {
			return fmt.Errorf("stream %s is set %s, which the connector cannot run with; %s", want.Name, f.name, todo)
		}
	}
	return nil
}

// overlay is the stream config cur with what provisioning sets (the
// fields same compares) taken from want.
func overlay(cur, want jetstream.StreamConfig) jetstream.StreamConfig {
	cur.Subjects, cur.Retention, cur.Storage, cur.Replicas = want.Subjects, want.Retention, want.Storage, want.Replicas
	cur.Duplicates, cur.AllowMsgSchedules, cur.MaxAge = want.Duplicates, want.AllowMsgSchedules, want.MaxAge
	cur.Description, cur.AllowDirect, cur.Discard = want.Description, want.AllowDirect, want.Discard
	// Publishes are acknowledged (jspub, the dispatcher's dead letters):
	// an operator's NoAck would fail every bulk enqueue after its stall.
	cur.NoAck = want.NoAck
	return cur
}

// same reports whether the stream already has what we would set.
func same(cur, want jetstream.StreamConfig) bool {
	if len(cur.Subjects) != len(want.Subjects) {
		return false
	}
	for i := range cur.Subjects {
		if cur.Subjects[i] != want.Subjects[i] {
			return false
		}
	}
	return cur.Retention == want.Retention && cur.Storage == want.Storage &&
		max(cur.Replicas, 1) == max(want.Replicas, 1) && cur.Duplicates == want.Duplicates &&
		cur.AllowMsgSchedules == want.AllowMsgSchedules && cur.MaxAge == want.MaxAge &&
		cur.Description == want.Description && cur.AllowDirect == want.AllowDirect && cur.Discard == want.Discard &&
		cur.NoAck == want.NoAck
}

// Check verifies the streams exist (for workers without the right to
// create them).
func Check(ctx context.Context, js jetstream.JetStream, n wire.Names) error {
	for _, name := range []string{n.JobsStream(), n.DeadStream(), n.EventsStream()} {
		if _, err := js.Stream(ctx, name); err != nil {
			return fmt.Errorf("streams: %s: %w", name, err)
		}
	}
	return nil
}

// nats-server's errors of a cluster still forming: "JetStream system
// temporarily unavailable" (JSClusterNotAvailErr: no meta leader yet) and
// "no suitable peers for placement" (JSClusterNoPeersErrF: fewer JetStream
// servers up than the streams' replicas).
const (
	jsClusterNotAvailable jetstream.ErrorCode = 10008
	jsClusterNoPeers      jetstream.ErrorCode = 10005
)

// Unavailable reports whether err, from Ensure, Check or a consumer's
// creation, may go away by itself at start: a stream not provisioned yet
// (an operator's job provisions it beside a worker that may not), JetStream
// not answering yet (no responders, a timeout, a cluster electing its
// leader or waiting for its peers), or a connection error that
// connect.Transient accepts.
func Unavailable(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && (apiErr.ErrorCode == jsClusterNotAvailable || apiErr.ErrorCode == jsClusterNoPeers) {
		return true
	}
	return errors.Is(err, jetstream.ErrStreamNotFound) || errors.Is(err, nats.ErrNoResponders) || connect.Transient(err)
}
