package events

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/connector-go/connector/internal/deadletter"
	"github.com/connector-go/connector/internal/wire"
	"github.com/nats-io/nats.go/jetstream"
)

// ErrNotReplayable: a dead letter whose event no listener could handle as
// it is (malformed, or on a subject no listener matches: the subject
// guard's letters). Fix the publisher and publish the event again.
var ErrNotReplayable = errors.New("events: dead letter cannot be replayed")

// notEventLetter: the dead letter at seq is a job's (jobs and events
// share the dead-letter stream), neither replayed nor discarded here. It
// is an ErrNotReplayable, whose wording would speak of a replay to the
// operator of a discard.
type notEventLetter struct {
	seq     uint64
	subject string
}

func (e *notEventLetter) Error() string {
	return fmt.Sprintf("events: dead letter %d is not an event's (%s)", e.seq, e.subject)
}

func (e *notEventLetter) Is(target error) bool { return target == ErrNotReplayable }

// ErrNoListener: the listener of a dead letter has no consumer in the
// events stream (renamed, or not deployed yet): a replay would reach
// nobody, so the letter stays.
var ErrNoListener = errors.New("events: the listener has no consumer in the events stream")

// DeadLetter is one dead event: a listener gave up on it, or it could not
// be read.
type DeadLetter struct {
	// Seq is the letter's sequence in the dead-letter stream, Subject its
	// subject there (<prefix>.dead.events.<listener>.<seq>); the embedded
	// letter's Subject is the event's own.
	Seq      uint64 `json:"seq"`
	Subject  string `json:"dead_subject"`
	Listener string `json:"listener"`
	wire.DeadLetter
}

// DeadLetters lists up to limit dead events (0: all) of listener (""
// for every listener's), oldest first.
func (p *Publisher) DeadLetters(ctx context.Context, listener string, limit int) ([]DeadLetter, error) {
	if err := validListener(listener); err != nil {
		return nil, err
	}
	entries, err := deadletter.List(ctx, p.js, p.names.DeadStream(), []string{p.deadFilter(listener)}, limit)
	if err != nil {
		return nil, fmt.Errorf("events: %w", err)
	}
	out := make([]DeadLetter, len(entries))
	for i, e := range entries {
		listener, _ := p.names.ParseDeadEventSubject(e.Subject)
		out[i] = DeadLetter{Seq: e.Seq, Subject: e.Subject, Listener: listener, DeadLetter: e.Letter}
	}
	return out, nil
}

// Replay gives the dead event at dead-letter stream sequence seq back to
// the listener that gave up on it, and to that listener only: the event
// is published again on its subject, with its body and headers, marked
// with the Connector-Replay-For header; the other listeners of the
// subject acknowledge it without running their handlers. It counts its
// deliveries from 1 again. Once the stream has it, the letter is removed.
// A letter written without the event (too large to go in it) has it
// read from the events stream, where it must still be (ErrNotReplayable
// when it is gone, or the stream was recreated since).
//
// The replay is a new message of the events stream: the record's events
// published since come before it, and subscribers outside the framework
// see the event again (same event id). Replaying the same letter twice
// within the dedup window publishes it once.
func (p *Publisher) Replay(ctx context.Context, seq uint64) error {
	s, raw, listener, err := p.letter(ctx, seq)
	if err != nil {
		return err
	}
	var dl wire.DeadLetter
	if err := wire.Unmarshal(raw.Data, &dl); err != nil {
		return fmt.Errorf("%w: dead letter %d does not decode: %w", ErrNotReplayable, seq, err)
	}
	listeners, err := p.listenerConsumers(ctx)
	if err != nil {
		return fmt.Errorf("events: replay dead letter %d: %w", seq, err)
	}
	return p.replay(ctx, s, seq, listener, &dl, listeners)
}

// replay is Replay of the letter dl of listener at seq in the dead-letter
// stream s, given the listeners that have consumers.
func (p *Publisher) replay(ctx context.Context, s jetstream.Stream, seq uint64, listener string, dl *wire.DeadLetter, listeners map[string]*ListenerStats) error {
	if listener == GuardName || dl.Reason == wire.ReasonMalformed || dl.Reason == wire.ReasonUnknownModel {
		return fmt.Errorf("%w: dead letter %d: reason %s (listener %s): no listener can handle the event as it is; fix the publisher",
			ErrNotReplayable, seq, dl.Reason, listener)
	}
	if dl.Subject == "" || !strings.HasPrefix(dl.Subject, p.names.Prefix+".events.") {
		return fmt.Errorf("%w: dead letter %d: subject %q", ErrNotReplayable, seq, dl.Subject)
	}
	// Only the named listener handles a replay: it must be there.
	if listeners[listener] == nil {
		return fmt.Errorf("%w: dead letter %d: listener %s", ErrNoListener, seq, listener)
	}
	if len(dl.Data) == 0 {
		// Written without the event, too large to go in its letter: the
		// event is read from the events stream.
		ev, err := p.storedEvent(ctx, seq, dl)
		if err != nil {
			return err
		}
		dl = ev
	}
	msg := deadletter.Republish(dl.Subject, dl)
	msg.Header.Set(wire.HeaderReplayFor, listener)
	// The letter's sequence and time of death: the sequences of a
	// recreated dead-letter stream start again at 1, and a replay of its
	// letter must not be dropped as a duplicate of the old one's.
	msg.Header.Set(wire.HeaderMsgID, "replay-"+listener+"-"+strconv.FormatUint(seq, 10)+"-"+strconv.FormatInt(dl.DiedAt, 10))
	if _, err := p.js.PublishMsg(ctx, msg); err != nil {
		return fmt.Errorf("events: replay dead letter %d: %w", seq, err)
	}
	// The event is safely back; now remove its letter. A failure here
	// leaves a letter whose replay is deduplicated within the window.
	if err := s.DeleteMsg(ctx, seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return fmt.Errorf("events: replayed dead letter %d but could not remove it: %w", seq, err)
	}
	return nil
}

// storedEvent is the letter dl (at seq in the dead-letter stream) with the
// event's body and headers as the events stream holds them at StreamSeq.
// An event gone from the stream (MaxAge), or a message there that is not
// the letter's event (another subject, or another time: the stream was
// recreated since), is ErrNotReplayable.
func (p *Publisher) storedEvent(ctx context.Context, seq uint64, dl *wire.DeadLetter) (*wire.DeadLetter, error) {
	if dl.StreamSeq == 0 {
		return nil, fmt.Errorf("%w: dead letter %d has neither the event nor its stream sequence", ErrNotReplayable, seq)
	}
	s, err := p.js.Stream(ctx, p.names.EventsStream())
	if err != nil {
		return nil, fmt.Errorf("events: replay dead letter %d: %w", seq, err)
	}
	raw, err := s.GetMsg(ctx, dl.StreamSeq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, fmt.Errorf("%w: dead letter %d: its event (events stream sequence %d) is gone from the stream", ErrNotReplayable, seq, dl.StreamSeq)
	}
	if err != nil {
		return nil, fmt.Errorf("events: replay dead letter %d: %w", seq, err)
	}
	if raw.Subject != dl.Subject || (dl.EnqueuedAt != 0 && raw.Time.UnixMilli() != dl.EnqueuedAt) {
		return nil, fmt.Errorf("%w: dead letter %d: events stream sequence %d is another event (%s) than the letter's (%s): the stream was recreated",
			ErrNotReplayable, seq, dl.StreamSeq, raw.Subject, dl.Subject)
	}
	ev := *dl
	ev.Headers, ev.Data = raw.Header, raw.Data
	return &ev, nil
}

// Discard removes the dead event at dead-letter stream sequence seq for
// good: no listener handles it again (the event itself stays in the
// events stream until its MaxAge). The error wraps
// jetstream.ErrMsgNotFound when there is no such letter.
func (p *Publisher) Discard(ctx context.Context, seq uint64) error {
	s, _, _, err := p.letter(ctx, seq)
	if err != nil {
		return err
	}
	if err := s.DeleteMsg(ctx, seq); err != nil {
		return fmt.Errorf("events: discard dead letter %d: %w", seq, err)
	}
	return nil
}

// letter reads the dead event's letter at seq, with the dead-letter
// stream and the listener it names. A letter that is not an event's is
// ErrNotReplayable; a missing one wraps jetstream.ErrMsgNotFound.
func (p *Publisher) letter(ctx context.Context, seq uint64) (jetstream.Stream, *jetstream.RawStreamMsg, string, error) {
	s, err := p.js.Stream(ctx, p.names.DeadStream())
	if err != nil {
		return nil, nil, "", fmt.Errorf("events: dead letter %d: %w", seq, err)
	}
	raw, err := s.GetMsg(ctx, seq)
	if err != nil {
		return nil, nil, "", fmt.Errorf("events: dead letter %d: %w", seq, err)
	}
	listener, ok := p.names.ParseDeadEventSubject(raw.Subject)
	if !ok {
		return nil, nil, "", &notEventLetter{seq: seq, subject: raw.Subject}
	}
	return s, raw, listener, nil
}

// validListener accepts "" (every listener), a listener's name and the
// subject guard's.
func validListener(name string) error {
	if name == "" || name == GuardName {
		return nil
	}
	return checkName(name)
}

// checkName checks a listener's name: 1-64 letters, digits, '_' or '-'.
func checkName(name string) error {
	if err := wire.ValidID(name); err != nil || len(name) > 64 {
		return badName(name)
	}
	return nil
}

func badName(name string) error {
	return fmt.Errorf("%w: name %q (1-64 letters, digits, '_' or '-')", ErrBadListener, name)
}

// ReplayAll replays every dead event of listener ("" for every
// listener's) that can be (Replay); it returns how many it replayed and
// the first error met (it keeps going). Letters that cannot be replayed
// (ErrNotReplayable) are left where they are, and are not errors.
func (p *Publisher) ReplayAll(ctx context.Context, listener string) (int, error) {
	letters, err := p.DeadLetters(ctx, listener, 0)
	if err != nil {
		return 0, err
	}
	if len(letters) == 0 {
		return 0, nil
	}
	s, err := p.js.Stream(ctx, p.names.DeadStream())
	if err != nil {
		return 0, fmt.Errorf("events: replay: %w", err)
	}
	listeners, err := p.listenerConsumers(ctx)
	if err != nil {
		return 0, fmt.Errorf("events: replay: %w", err)
	}
	n := 0
	var first error
	for _, l := range letters {
		err := p.replay(ctx, s, l.Seq, l.Listener, &l.DeadLetter, listeners)
		switch {
		case err == nil:
			n++
		case errors.Is(err, ErrNotReplayable):
		case first == nil:
			first = err
		}
	}
	return n, first
}

// deadFilter is the subject filter of listener's dead events (""
// for every listener's).
func (p *Publisher) deadFilter(listener string) string {
	if listener == "" {
		return p.names.DeadEventsWildcard()
	}
	return p.names.DeadEventsOf(listener)
}
