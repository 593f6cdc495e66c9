// Package deadletter reads the dead-letter stream: the letters of dead
// jobs (dispatcher) and of events a listener gave up on (events) share it,
// under different subjects.
package deadletter

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/connector-go/connector/internal/wire"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Entry is one letter of the stream.
type Entry struct {
	// Seq is the letter's sequence in the dead-letter stream, Subject its
	// subject there.
	Seq     uint64
	Subject string
	Letter  wire.DeadLetter
}

// List reads up to limit letters (0: all) of stream on filters, oldest
// first, through an ordered consumer (nothing durable is left behind). A
// letter that does not decode is listed with reason "unreadable"; one whose
// message kept apart is gone, without its message.
func List(ctx context.Context, js jetstream.JetStream, stream string, filters []string, limit int) ([]Entry, error) {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return nil, fmt.Errorf("dead letters: stream %s: %w", stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("dead letters: %w", err)
	}
	if info.State.Msgs == 0 {
		return nil, nil
	}
	// Gone 30 s after the listing, not the library's 5 minutes: a
	// dashboard polling the dead letters leaves no pile of consumers. A
	// consumer that cannot be made again (the ordered consumer's reset,
	// after a gap) ends the listing with an error after a few tries, where
	// the library would retry forever.
	c, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: filters,
		InactiveThreshold: 30 * time.Second, MaxResetAttempts: 3})
	if err != nil {
		return nil, fmt.Errorf("dead letters: %w", err)
	}
	// One consumer for the whole listing, pulling in batches (bounded in
	// bytes: a letter may hold a message of up to 1 MiB): an ordered
	// consumer's Next or Fetch makes its consumer anew on every call.
	it, err := c.Messages(jetstream.PullMaxBytes(listBuffer))
	if err != nil {
		return nil, fmt.Errorf("dead letters: %w", err)
	}
	defer it.Stop()
	// A listing reads the letters there when it began (up to last): with
	// jobs dying all the while, reading on until none is pending would go
	// on for as long as they die.
	last := info.State.LastSeq
	var out []Entry
	for {
		if limit > 0 && len(out) >= limit {
			return out, nil
		}
		m, err := next(ctx, it)
		if errors.Is(err, errNoMore) {
			return out, nil
		}
		if err != nil {
			return out, fmt.Errorf("dead letters: %w", err)
		}
		meta, _ := m.Metadata()
		e := Entry{Subject: m.Subject()}
		if meta != nil {
			e.Seq = meta.Sequence.Stream
			if e.Seq > last {
				return out, nil // came after the listing began
			}
		}
		if err := wire.Unmarshal(m.Data(), &e.Letter); err != nil {
			e.Letter.Reason, e.Letter.Error = "unreadable", err.Error()
		} else if err := Body(ctx, s, &e.Letter); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
			// (a message gone, by the stream's limits, which discard it just
			// before its letter: the letter lists without it)
			return out, err
		}
		out = append(out, e)
		if meta != nil && (meta.NumPending == 0 || e.Seq >= last) {
			return out, nil
		}
	}
}

// listBuffer bounds the bytes of letters a listing pulls ahead.
const listBuffer = 8 << 20

// errNoMore: no letter came within the wait (none left on the filters).
var errNoMore = errors.New("no more letters")

// next waits for the next letter 2 s at most (the filters may match
// nothing more), or until ctx ends.
func next(ctx context.Context, it jetstream.MessagesContext) (jetstream.Msg, error) {
	wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	m, err := it.Next(jetstream.NextContext(wctx))
	if err != nil && ctx.Err() == nil && (errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout)) {
		return nil, errNoMore
	}
	return m, err
}

// Body fills in the original message of a letter that keeps it apart
// (wire.DeadLetter.BodySeq: a message too large to copy into its letter),
// read from the dead-letter stream s. A letter that holds its message is
// left as it is.
func Body(ctx context.Context, s jetstream.Stream, dl *wire.DeadLetter) error {
	if dl.BodySeq == 0 || dl.Data != nil {
		return nil
	}
	m, err := s.GetMsg(ctx, dl.BodySeq)
	if err != nil {
		return fmt.Errorf("dead letters: the message of the letter of %s (at %d): %w", dl.Subject, dl.BodySeq, err)
	}
	// The message is stored without NATS's own headers: those there are
	// the ones a direct get adds (Nats-Stream, Nats-Sequence, ...).
	dl.Data, dl.Headers = m.Data, nil
	for k, v := range m.Header {
		if wire.NATSHeader(k) {
			continue
		}
		if dl.Headers == nil {
			dl.Headers = map[string][]string{}
		}
		dl.Headers[k] = v
	}
	return nil
}

// Count is the number of letters of stream on filters, counted by the
// server through a short-lived filtered consumer (no letter is read).
func Count(ctx context.Context, js jetstream.JetStream, stream string, filters []string) (uint64, error) {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return 0, fmt.Errorf("dead letters: %w", err)
	}
	c, err := s.CreateConsumer(ctx, jetstream.ConsumerConfig{
		FilterSubjects:    filters,
		AckPolicy:         jetstream.AckNonePolicy,
		MemoryStorage:     true,
		InactiveThreshold: 30 * time.Second, // gone by itself if the delete below fails
	})
	if err != nil {
		return 0, fmt.Errorf("dead letters: %w", err)
	}
	n := c.CachedInfo().NumPending
	_ = s.DeleteConsumer(context.WithoutCancel(ctx), c.CachedInfo().Name)
	return n, nil
}

// Republish is the message that puts a letter's original back on subject:
// its data and its headers, but NATS's own (Nats-*: the old message id,
// schedule headers), which the caller sets anew.
func Republish(subject string, dl *wire.DeadLetter) *nats.Msg {
	msg := nats.NewMsg(subject)
	for k, v := range dl.Headers {
		if wire.NATSHeader(k) {
			continue
		}
		msg.Header[k] = v
	}
	msg.Data = dl.Data
	return msg
}
