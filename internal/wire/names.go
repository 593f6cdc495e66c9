// Package wire is the on-the-wire contract of connector: subjects, stream
// names, headers and the msgpack envelopes, as documented in
// docs/protocol.md. Producers in other languages follow the same rules.
package wire

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
)

// DefaultPrefix namespaces subjects, streams and Redis keys.
const DefaultPrefix = "connector"

// Header names. NATS headers are case-sensitive: write them exactly so.
const (
	HeaderMsgID   = "Nats-Msg-Id"
	HeaderJobID   = "Connector-Job-Id"
	HeaderJobName = "Connector-Job-Name"
	HeaderDeadWhy = "Connector-Dead-Reason"
	// HeaderReplayFor marks an event replayed from a dead letter: only
	// the listener it names handles it; the others acknowledge it unseen.
	HeaderReplayFor = "Connector-Replay-For"
	HeaderSchedule  = "Nats-Schedule"
	HeaderSchTarget = "Nats-Schedule-Target"
)

// Names derives every subject and stream name from a prefix.
type Names struct {
	Prefix string
	stream string
}

// ErrBadName: a prefix, channel or id is not usable in a subject.
var ErrBadName = errors.New("wire: invalid name")

// NewNames validates prefix: letters, digits, '_' and '-'.
func NewNames(prefix string) (Names, error) {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if !validToken(prefix) {
		return Names{}, fmt.Errorf("%w: prefix %q (letters, digits, '_' and '-' only)", ErrBadName, prefix)
	}
	return Names{Prefix: prefix, stream: strings.ToUpper(strings.ReplaceAll(prefix, "-", "_"))}, nil
}

// MustNames is NewNames for constants; it panics on a bad prefix.
func MustNames(prefix string) Names {
	n, err := NewNames(prefix)
	if err != nil {
		panic(err)
	}
	return n
}

// JobsStream is the work-queue stream holding runnable jobs and schedules.
func (n Names) JobsStream() string { return n.stream + "_JOBS" }

// DeadStream is the limits-retention dead-letter stream.
func (n Names) DeadStream() string { return n.stream + "_DLQ" }

// EventsStream is the limits-retention stream of domain events.
func (n Names) EventsStream() string { return n.stream + "_EVENTS" }

// JobsSubject is where a runnable job is published:
// <prefix>.jobs.<channel>.<band>, channel being dot-separated
// ("root.magento.orders") and band 0, 1 or 2 (from its priority).
func (n Names) JobsSubject(channel string, band int) string {
	return n.Prefix + ".jobs." + channel + "." + strconv.Itoa(band)
}

// JobsChannelFilter matches every band of one channel (not its children).
func (n Names) JobsChannelFilter(channel string) string { return n.Prefix + ".jobs." + channel + ".*" }

// JobsTreeFilter matches every band of one channel and of all channels
// below it (the consumer of a sequential channel).
func (n Names) JobsTreeFilter(channel string) string { return n.Prefix + ".jobs." + channel + ".>" }

// JobsConsumer names the durable consumer of one band of a channel
// ("jobs~root~magento~1"), or of all bands of a sequential channel (band -1:
// "jobs~root~magento~seq").
func (n Names) JobsConsumer(channel string, band int) string {
	b := "seq"
	if band >= 0 {
		b = strconv.Itoa(band)
	}
	return "jobs~" + strings.ReplaceAll(channel, ".", "~") + "~" + b
}

// ParseJobsConsumer reads channel and band from a name JobsConsumer made
// (band -1: a sequential channel's); ok is false for any other name.
func (n Names) ParseJobsConsumer(name string) (channel string, band int, ok bool) {
	rest, found := strings.CutPrefix(name, "jobs~")
	i := strings.LastIndexByte(rest, '~')
	if !found || i <= 0 {
		return "", 0, false
	}
	channel = strings.ReplaceAll(rest[:i], "~", ".")
	if rest[i+1:] == "seq" {
		return channel, -1, true
	}
	band, err := strconv.Atoi(rest[i+1:])
	if err != nil || band < 0 || band > 2 {
		return "", 0, false
	}
	return channel, band, true
}

// ParseJobsSubject splits a jobs subject into channel and band.
func (n Names) ParseJobsSubject(subject string) (channel string, band int, ok bool) {
	rest, found := strings.CutPrefix(subject, n.Prefix+".jobs.")
	if !found {
		return "", 0, false
	}
	i := strings.LastIndexByte(rest, '.')
	if i <= 0 {
		return "", 0, false
	}
	b, err := strconv.Atoi(rest[i+1:])
	if err != nil || b < 0 || b > 2 {
		return "", 0, false
	}
	return rest[:i], b, true
}

// JobsWildcard matches every jobs subject.
func (n Names) JobsWildcard() string { return n.Prefix + ".jobs.>" }

// ScheduleSubject holds the single pending schedule of a job (ETA, retry delay).
func (n Names) ScheduleSubject(jobID string) string { return n.Prefix + ".sched." + jobID }

// PeriodicSubject holds a named periodic schedule.
func (n Names) PeriodicSubject(name string) string { return n.Prefix + ".sched.periodic." + name }

// ScheduleWildcard matches every schedule subject.
func (n Names) ScheduleWildcard() string { return n.Prefix + ".sched.>" }

// DeadJobSubject is where a dead job's letter is kept.
func (n Names) DeadJobSubject(jobID string) string { return n.Prefix + ".dead.jobs." + jobID }

// DeadJobsWildcard matches dead job letters.
func (n Names) DeadJobsWildcard() string { return n.Prefix + ".dead.jobs.>" }

// DeadMalformedSubject keeps letters of messages that are not envelopes,
// keyed by the stream sequence they had.
func (n Names) DeadMalformedSubject(seq uint64) string {
	return fmt.Sprintf("%s.dead.malformed.%d", n.Prefix, seq)
}

// DeadBodySubject keeps the original message of a letter too large to hold
// it (DeadLetter.BodySeq), keyed by the job id, or "seq-<stream sequence>"
// for a message that is not an envelope. Not a letter: listings of letters
// do not read it.
func (n Names) DeadBodySubject(key string) string { return n.Prefix + ".dead.bodies." + key }

// DeadWildcard matches every dead letter.
func (n Names) DeadWildcard() string { return n.Prefix + ".dead.>" }

// EventsWildcard matches every event subject.
func (n Names) EventsWildcard() string { return n.Prefix + ".events.>" }

// CancelsKey is the Redis sorted set of cancelled job ids (score: unix ms
// of the cancel): workers drop a job found there instead of starting it.
func (n Names) CancelsKey() string { return n.RedisKey("cancels") }

// RedisKey namespaces a Redis key: <prefix>:<parts joined by ':'>.
func (n Names) RedisKey(parts ...string) string {
	return n.Prefix + ":" + strings.Join(parts, ":")
}

// ValidChannel checks a channel name: dot-separated tokens of letters,
// digits, '_' and '-', starting with "root".
func ValidChannel(ch string) error {
	if ch == "" {
		return fmt.Errorf("%w: empty channel", ErrBadName)
	}
	for rest := ch; ; {
		tok, more, found := strings.Cut(rest, ".")
		if !validToken(tok) {
			return fmt.Errorf("%w: channel %q", ErrBadName, ch)
		}
		if !found {
			break
		}
		rest = more
	}
	if ch != "root" && !strings.HasPrefix(ch, "root.") {
		return fmt.Errorf("%w: channel %q must be root or below root", ErrBadName, ch)
	}
	return nil
}

// MaxTemplateID bounds the id of a periodic schedule's envelope: each
// firing's id is the schedule's id followed by "-t<unix seconds>", or
// "-<stream sequence>" when the firing has no Nats-Schedule-Next header,
// up to 21 more bytes, and must still be a valid job id (128 bytes).
const MaxTemplateID = 128 - len("-18446744073709551615")

// ValidID checks a job id: one subject token of letters, digits, '_' and '-'.
func ValidID(id string) error {
	if len(id) == 0 || len(id) > 128 || !validToken(id) {
		return fmt.Errorf("%w: job id %q (1-128 letters, digits, '_' or '-')", ErrBadName, id)
	}
	return nil
}

func validToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

const crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

var (
	idMu   sync.Mutex
	idLast uint64
	idRand [10]byte
)

// NewID returns a 26-character ULID-style id: 48 bits of milliseconds then
// 80 random bits, in Crockford base32, sortable by creation time and
// monotonic within one process.
func NewID() string {
	idMu.Lock()
	ms := uint64(time.Now().UnixMilli())
	if ms <= idLast {
		ms = idLast
		// Increment the random part to stay monotonic within the millisecond.
		for i := len(idRand) - 1; i >= 0; i-- {
			idRand[i]++
			if idRand[i] != 0 {
				break
			}
		}
	} else {
		idLast = ms
		_, _ = rand.Read(idRand[:])
	}
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], ms<<16)
	copy(b[6:], idRand[:])
	idMu.Unlock()
	// 128 bits -> 26 base32 chars (first char uses 3 bits).
	var out [26]byte
	hi := binary.BigEndian.Uint64(b[:8])
	lo := binary.BigEndian.Uint64(b[8:])
	for i := 25; i >= 0; i-- {
		out[i] = crockford[lo&31]
		lo = lo>>5 | (hi&31)<<59
		hi >>= 5
	}
	return string(out[:])
}
