package events

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"time"

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
	// Standby counts consumers of another live partitioning that waits
	// for the one counted here (processes with another partition count,
	// started beside it): it is not consumed, and takes the listener over
	// where it stands, so its figures are not the listener's.
	Standby int `json:"standby,omitempty"`
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
//
// A listener may have two live partitionings at once (processes with
// different partition counts started together on a new listener each
// create their set): only one is consumed, the oldest (beatsAll), and the
// other takes over where it stands. Adding both would count every event
// of the stream again as lag; the figures are the set in charge's, the
// others' consumers are counted as Standby.
func (p *Publisher) listenerConsumers(ctx context.Context) (map[string]*ListenerStats, error) {
	s, err := p.js.Stream(ctx, p.names.EventsStream())
	if err != nil {
		return nil, fmt.Errorf("events: stats: %w", err)
	}
	type set struct {
		ListenerStats
		head time.Time // the creation of its partition 0 (else its oldest consumer)
		zero bool      // head is partition 0's
		cons int       // its consumers
	}
	sets := map[string]map[int]*set{}
	retired := map[string]int{}
	lister := s.ListConsumers(ctx)
	for info := range lister.Info() {
		name := info.Config.Metadata[metaListener]
		if info.Name == GuardConsumer {
			name = GuardName
		}
		if name == "" {
			continue // not a listener's
		}
		if sets[name] == nil {
			sets[name] = map[int]*set{}
		}
		if info.Config.Metadata[metaRetired] != "" {
			retired[name]++
			continue
		}
		n, err := strconv.Atoi(info.Config.Metadata[metaPartitions])
		if err != nil {
			n = 1 // the guard
		}
		ls := sets[name][n]
		if ls == nil {
			ls = &set{ListenerStats: ListenerStats{Listener: name, Partitions: n}, head: info.Created}
			sets[name][n] = ls
		}
		if info.Name == ConsumerName(name, 0, n) {
			ls.head, ls.zero = info.Created, true
		} else if !ls.zero && info.Created.Before(ls.head) {
			ls.head = info.Created
		}
		ls.cons++
		ls.Pending += info.NumPending
		ls.Taken += info.NumAckPending
		ls.Redelivered += info.NumRedelivered
		ls.Pulls += info.NumWaiting
	}
	if err := lister.Err(); err != nil {
		return nil, fmt.Errorf("events: stats: %w", err)
	}
	byName := make(map[string]*ListenerStats, len(sets))
	for name, byN := range sets {
		var lead *set
		standby := 0
		for _, ls := range byN {
			// The runners' rule (beatsAll).
			if lead == nil || leads(ls.head, ls.Partitions, lead.head, lead.Partitions) {
				if lead != nil {
					standby += lead.cons
				}
				lead = ls
			} else {
				standby += ls.cons
			}
		}
		out := &ListenerStats{Listener: name}
		if lead != nil {
			out = &lead.ListenerStats
		}
		out.Retired, out.Standby = retired[name], standby
		byName[name] = out
	}
	return byName, nil
}
