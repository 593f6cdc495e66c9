package wire

import (
	"fmt"
	"strings"
)

// EventVersion is the only event body version this code reads and writes.
const EventVersion = 1

// EventBuckets is the number of record buckets of the event subjects: the
// last subject token is the record's bucket, two lower-case hex digits.
const EventBuckets = 256

// Dead-letter reasons specific to events (see also ReasonMalformed,
// ReasonError, ReasonPanic).
const (
	// ReasonUnknownModel: the subject's model token does not decode, or the
	// body names another model or event than the subject.
	ReasonUnknownModel = "unknown_model"
)

// Limits on event fields.
const (
	maxModelLen  = 128
	maxEventLen  = 64
	maxRecordLen = 256
)

// EventBody is the msgpack map carried by every domain event (see
// docs/events.md). Keys are short lower-case strings.
type EventBody struct {
	V        int            `msgpack:"v"`
	ID       string         `msgpack:"id"`
	Model    string         `msgpack:"model"`
	Event    string         `msgpack:"event"`
	RecordID string         `msgpack:"record_id"`
	Fields   []string       `msgpack:"fields,omitempty"`
	Origin   string         `msgpack:"origin,omitempty"`
	Time     int64          `msgpack:"time"` // unix ms
	Data     map[string]any `msgpack:"data,omitempty"`
}

// EncodeEvent checks and encodes an event body (setting V).
func EncodeEvent(e *EventBody) ([]byte, error) {
	e.V = EventVersion
	if err := e.check(); err != nil {
		return nil, err
	}
	b, err := Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if len(b) > DefaultMaxEnvelope {
		return nil, fmt.Errorf("%w: event of %d bytes exceeds the %d-byte limit", ErrInvalid, len(b), DefaultMaxEnvelope)
	}
	if err := CheckDepth(b, DefaultMaxDepth+2); err != nil {
		return nil, err
	}
	return b, nil
}

// DecodeEvent decodes and validates an event body strictly: unknown versions
// and unknown keys are rejected, size (maxSize, default DefaultMaxEnvelope)
// and nesting are bounded.
func DecodeEvent(data []byte, maxSize int) (*EventBody, error) {
	if maxSize <= 0 {
		maxSize = DefaultMaxEnvelope
	}
	if len(data) > maxSize {
		return nil, fmt.Errorf("%w: %d bytes exceeds the %d-byte limit", ErrInvalid, len(data), maxSize)
	}
	if len(data) == 0 {
		return nil, fmt.Errorf("%w: empty message", ErrInvalid)
	}
	// The body map plus data's map leave DefaultMaxDepth levels to values.
	if err := CheckDepth(data, DefaultMaxDepth+2); err != nil {
		return nil, err
	}
	e := new(EventBody)
	if err := UnmarshalChecked(data, e); err != nil {
		return nil, fmt.Errorf("%w: not a msgpack event: %v", ErrInvalid, err)
	}
	if e.V != EventVersion {
		return nil, fmt.Errorf("%w: unknown event version %d (this code reads %d)", ErrInvalid, e.V, EventVersion)
	}
	if err := e.check(); err != nil {
		return nil, err
	}
	return e, nil
}

func (e *EventBody) check() error {
	if err := ValidID(e.ID); err != nil {
		return fmt.Errorf("%w: event %v", ErrInvalid, err)
	}
	if err := ValidModel(e.Model); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if err := ValidEventName(e.Event); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if e.RecordID == "" || len(e.RecordID) > maxRecordLen {
		return fmt.Errorf("%w: record_id missing or longer than %d bytes", ErrInvalid, maxRecordLen)
	}
	if e.Time < 0 {
		return fmt.Errorf("%w: negative time", ErrInvalid)
	}
	return nil
}

// ValidModel checks a model name: 1-128 bytes, no control characters or
// spaces. Dots are allowed ("res.partner"); EncodeModel makes it a token.
func ValidModel(model string) error {
	if model == "" || len(model) > maxModelLen {
		return fmt.Errorf("%w: model %q (1-%d bytes)", ErrBadName, model, maxModelLen)
	}
	for i := 0; i < len(model); i++ {
		if c := model[i]; c <= ' ' || c == 0x7f {
			return fmt.Errorf("%w: model %q has a space or control character", ErrBadName, model)
		}
	}
	return nil
}

// ValidEventName checks an event name: one token of letters, digits, '_'
// and '-', at most 64 bytes ("create", "write", "unlink").
func ValidEventName(event string) error {
	if len(event) > maxEventLen || !validToken(event) {
		return fmt.Errorf("%w: event name %q (1-%d letters, digits, '_' or '-')", ErrBadName, event, maxEventLen)
	}
	return nil
}

// EncodeModel turns a model name into one subject token, reversibly:
// letters, digits, '_' and '-' stay as they are, '.' becomes ':', and every
// other byte becomes '%' followed by two upper-case hex digits
// ("res.partner" -> "res:partner", "a:b" -> "a%3Ab").
func EncodeModel(model string) string {
	var b strings.Builder
	b.Grow(len(model))
	for i := 0; i < len(model); i++ {
		c := model[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '-':
			b.WriteByte(c)
		case c == '.':
			b.WriteByte(':')
		default:
			const hex = "0123456789ABCDEF"
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&15])
		}
	}
	return b.String()
}

// DecodeModel reverses EncodeModel. It rejects tokens EncodeModel never
// produces (lower-case hex, stray bytes), so the encoding is a bijection.
func DecodeModel(token string) (string, error) {
	var b strings.Builder
	b.Grow(len(token))
	for i := 0; i < len(token); i++ {
		c := token[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '-':
			b.WriteByte(c)
		case c == ':':
			b.WriteByte('.')
		case c == '%':
			if i+2 >= len(token) {
				return "", fmt.Errorf("%w: model token %q: truncated escape", ErrBadName, token)
			}
			hi, ok1 := unhex(token[i+1])
			lo, ok2 := unhex(token[i+2])
			v := hi<<4 | lo
			if !ok1 || !ok2 || EncodeModel(string([]byte{v})) != token[i:i+3] {
				return "", fmt.Errorf("%w: model token %q: bad escape", ErrBadName, token)
			}
			b.WriteByte(v)
			i += 2
		default:
			return "", fmt.Errorf("%w: model token %q: byte 0x%02x", ErrBadName, token, c)
		}
	}
	m := b.String()
	if err := ValidModel(m); err != nil {
		return "", err
	}
	return m, nil
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// EventBucket is the bucket of a record: the low 8 bits of the 32-bit
// FNV-1a hash of the record id's bytes.
func EventBucket(recordID string) int {
	h := uint32(2166136261)
	for i := 0; i < len(recordID); i++ {
		h ^= uint32(recordID[i])
		h *= 16777619
	}
	return int(h & (EventBuckets - 1))
}

// EventSubject is where an event of a record is published:
// <prefix>.events.<EncodeModel(model)>.<event>.<bucket>, bucket being
// EventBucket(recordID) as two lower-case hex digits.
func (n Names) EventSubject(model, event, recordID string) string {
	return fmt.Sprintf("%s.events.%s.%s.%02x", n.Prefix, EncodeModel(model), event, EventBucket(recordID))
}

// EventFilter is the subject filter of the events of model named event
// ("" or "*" for every event of the model) in bucket ("" or "*" for all
// buckets, else two hex digits).
func (n Names) EventFilter(model, event, bucket string) string {
	if event == "" {
		event = "*"
	}
	if bucket == "" {
		bucket = "*"
	}
	return n.Prefix + ".events." + EncodeModel(model) + "." + event + "." + bucket
}

// ParseEventSubject splits an event subject into model, event name and
// bucket.
func (n Names) ParseEventSubject(subject string) (model, event string, bucket int, err error) {
	rest, ok := strings.CutPrefix(subject, n.Prefix+".events.")
	if !ok {
		return "", "", 0, fmt.Errorf("%w: %q is not an event subject of %q", ErrBadName, subject, n.Prefix)
	}
	parts := strings.Split(rest, ".")
	if len(parts) != 3 {
		return "", "", 0, fmt.Errorf("%w: event subject %q: want <model>.<event>.<bucket>", ErrBadName, subject)
	}
	model, err = DecodeModel(parts[0])
	if err != nil {
		return "", "", 0, err
	}
	if err := ValidEventName(parts[1]); err != nil {
		return "", "", 0, err
	}
	// Two lower-case hex digits (a scan with %02x read "-1" as bucket -1,
	// which no listener's filter names).
	tok := parts[2]
	if len(tok) != 2 || hexDigit(tok[0]) < 0 || hexDigit(tok[1]) < 0 {
		return "", "", 0, fmt.Errorf("%w: event subject %q: bucket must be two lower-case hex digits", ErrBadName, subject)
	}
	return model, parts[1], hexDigit(tok[0])<<4 | hexDigit(tok[1]), nil
}

// hexDigit is the value of c as a lower-case hex digit, -1 if it is none.
func hexDigit(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10
	}
	return -1
}

// DeadEventSubject is where listener's letter of the event at stream
// sequence seq is kept.
func (n Names) DeadEventSubject(listener string, seq uint64) string {
	return fmt.Sprintf("%s.dead.events.%s.%d", n.Prefix, listener, seq)
}

// ParseDeadEventSubject returns the listener of a dead event's letter
// subject (DeadEventSubject), or false.
func (n Names) ParseDeadEventSubject(subject string) (listener string, ok bool) {
	rest, ok := strings.CutPrefix(subject, n.Prefix+".dead.events.")
	if !ok {
		return "", false
	}
	listener, seq, ok := strings.Cut(rest, ".")
	if !ok || listener == "" || seq == "" || strings.Contains(seq, ".") {
		return "", false
	}
	return listener, true
}

// DeadEventsOf matches the dead letters of one listener.
func (n Names) DeadEventsOf(listener string) string {
	return n.Prefix + ".dead.events." + listener + ".*"
}

// DeadEventsWildcard matches the dead letters of every listener.
func (n Names) DeadEventsWildcard() string { return n.Prefix + ".dead.events.>" }
