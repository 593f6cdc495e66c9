package events

import (
	"context"
	"fmt"
	"sort"
	"strconv"

	"github.com/connector-go/connector/internal/deadletter"
)

// ListenerStats is where one listener (or the subject guard, GuardName)
// stands in the events stream, over the consumers of its live
// partitioning.
type ListenerStats struct {
	Listener   string `json:"listener"`
	Partitions int    `json:"partitions"`
	// Pending events are in the stream and not delivered to the listener
	// yet: its lag.
	Pending uint64 `json:"pending"`
	// Taken events are delivered and not acknowledged: being handled,
	// waiting for a retry, or held by a process that died (they come back
	// when its lease runs out).
	Taken int `json:"taken"`
	// Redelivered counts the taken events delivered more than once.
	Redelivered int `json:"redelivered"`
	// Pulls is the number of pull requests open on its consumers: 0 while
	// events are pending means no process runs the listener now.
	Pulls int `json:"pulls"`
	// Retired counts consumers of an earlier partitioning still in the
	// stream (they expire once nothing pulls from them).
	Retired int `json:"retired,omitempty"`
	// Dead is the number of its dead letters (DeadLetters lists them).
	Dead uint64 `json:"dead"`
}

// Stats is the state of the listeners, read from JetStream alone.
type Stats struct {
	Listeners []ListenerStats `json:"listeners"`
	// Dead is the number of dead events, every listener's (and those of
	// listeners whose consumers are gone).
	Dead uint64 `json:"dead"`
}

// Stats reads, per listener, its lag, the events it holds and its dead
// letters, from the consumers of the events stream (their metadata names
// the listener) and the dead-letter stream. It needs no Redis. The figures
// are JetStream's, a moment behind: an event published just now may not be
// pending yet.
func (p *Publisher) Stats(ctx context.Context) (Stats, error) {
	var st Stats
	byName, err := p.listenerConsumers(ctx)
	if err != nil {
		return st, err
	}
	for _, ls := range byName {
		if ls.Dead, err = deadletter.Count(ctx, p.js, p.names.DeadStream(), []string{p.deadFilter(ls.Listener)}); err != nil {
			return st, fmt.Errorf("events: stats: %w", err)
		}
		st.Listeners = append(st.Listeners, *ls)
	}
	sort.Slice(st.Listeners, func(i, j int) bool { return st.Listeners[i].Listener < st.Listeners[j].Listener })
	if st.Dead, err = deadletter.Count(ctx, p.js, p.names.DeadStream(), []string{p.deadFilter("")}); err != nil {
		return st, fmt.Errorf("events: stats: %w", err)
	}
	return st, nil
}

// Lag is, per listener (and the subject guard), the events it has not
// acknowledged yet over its live partitions: pending plus taken. One
// listing of the events stream's consumers: cheap enough for every
// metrics scrape (the worker's connector.listener.pending gauge).
func (p *Publisher) Lag(ctx context.Context) (map[string]int64, error) {
	byName, err := p.listenerConsumers(ctx)
	if err != nil {
		return nil, err
	}
	out := make(map[string]int64, len(byName))
	for name, ls := range byName {
		out[name] = int64(ls.Pending) + int64(ls.Taken)
	}
	return out, nil
}

// listenerConsumers adds up the figures of the events stream's consumers
// per listener (their metadata names it; the guard's is GuardConsumer).
func (p *Publisher) listenerConsumers(ctx context.Context) (map[string]*ListenerStats, error) {
	s, err := p.js.Stream(ctx, p.names.EventsStream())
	if err != nil {
		return nil, fmt.Errorf("events: stats: %w", err)
	}
	byName := map[string]*ListenerStats{}
	lister := s.ListConsumers(ctx)
	for info := range lister.Info() {
		name := info.Config.Metadata[metaListener]
		if info.Name == GuardConsumer {
			name = GuardName
		}
		if name == "" {
			continue // not a listener's
		}
		ls := byName[name]
		if ls == nil {
			ls = &ListenerStats{Listener: name}
			byName[name] = ls
		}
		if info.Config.Metadata[metaRetired] != "" {
			ls.Retired++
			continue
		}
		if n, err := strconv.Atoi(info.Config.Metadata[metaPartitions]); err == nil {
			ls.Partitions = n
		} else {
			ls.Partitions = 1 // the guard
		}
		ls.Pending += info.NumPending
		ls.Taken += info.NumAckPending
		ls.Redelivered += info.NumRedelivered
		ls.Pulls += info.NumWaiting
	}
	if err := lister.Err(); err != nil {
		return nil, fmt.Errorf("events: stats: %w", err)
	}
	return byName, nil
}
