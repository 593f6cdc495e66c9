package wire

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

// EnvelopeVersion is the only envelope version this code reads and writes.
const EnvelopeVersion = 1

// Limits on untrusted input.
const (
	// DefaultMaxEnvelope is the largest job or event message accepted.
	DefaultMaxEnvelope = 1 << 20
	// DefaultMaxDepth is the deepest nesting of arrays/maps accepted in
	// arguments or event bodies.
	DefaultMaxDepth = 32
)

// ErrInvalid marks every decoding failure; the message says why.
var ErrInvalid = errors.New("wire: invalid message")

// Envelope is the msgpack map carried by every job message (see
// docs/protocol.md). Keys are short lower-case strings; absent optional keys
// take the documented defaults.
type Envelope struct {
	V           int                `msgpack:"v"`
	ID          string             `msgpack:"id"`
	Name        string             `msgpack:"name"`
	Args        msgpack.RawMessage `msgpack:"args"`
	Attempt     int                `msgpack:"attempt,omitempty"`
	MaxRetries  *int               `msgpack:"max_retries,omitempty"`
	Retry       map[int]int64      `msgpack:"retry,omitempty"` // try -> delay in ms
	Channel     string             `msgpack:"channel,omitempty"`
	Priority    *int               `msgpack:"priority,omitempty"`
	TimeoutMS   int64              `msgpack:"timeout_ms,omitempty"`
	Description string             `msgpack:"desc,omitempty"`
	Identity    string             `msgpack:"identity,omitempty"`
	EnqueuedAt  int64              `msgpack:"enqueued_at,omitempty"` // unix ms
	ETA         int64              `msgpack:"eta,omitempty"`         // unix ms
	// Template marks the envelope of a periodic schedule: each firing is a
	// new job whose id is "<id>-t<tick, unix seconds>" (from the firing's
	// Nats-Schedule-Next header; "<id>-<stream sequence>" without it).
	// Its id is MaxTemplateID bytes at most, so that a firing's is valid.
	Template bool `msgpack:"tmpl,omitempty"`
	// Graph names the job graph the job belongs to (chain, group): when the
	// job is done, the worker releases the children whose parents are all done.
	Graph string `msgpack:"graph,omitempty"`
	// Trace is the enqueuer's trace context; the worker's CONSUMER span
	// continues it.
	Trace TraceContext `msgpack:"trace,omitempty"`
}

var encPool = sync.Pool{New: func() any {
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	enc.UseCompactInts(true)
	// Maps of string keys (to strings, booleans or any values) in key
	// order, not Go's random one. MarshalArgs orders every other map too.
	enc.SetSortMapKeys(true)
	return &encoder{buf: &buf, enc: enc}
}}

type encoder struct {
	buf *bytes.Buffer
	enc *msgpack.Encoder
}

// Marshal encodes v (an envelope, a dead letter) as msgpack. The returned
// slice is freshly allocated and owned by the caller. Maps with string keys
// and string, boolean or any values are written in key order; job
// arguments, whose encoding identity keys hash and schedules compare, go
// through MarshalArgs, which orders every map.
func Marshal(v any) ([]byte, error) {
	e := encPool.Get().(*encoder)
	e.buf.Reset()
	err := e.enc.Encode(v)
	var out []byte
	if err == nil {
		out = append([]byte(nil), e.buf.Bytes()...)
	}
	if e.buf.Cap() <= 64<<10 {
		encPool.Put(e)
	}
	return out, err
}

// EncodeEnvelope checks and encodes an envelope.
func EncodeEnvelope(e *Envelope) ([]byte, error) {
	e.V = EnvelopeVersion
	if err := e.check(); err != nil {
		return nil, err
	}
	return appendEnvelope(make([]byte, 0, 96+len(e.ID)+len(e.Name)+len(e.Args)+len(e.Channel)+len(e.Description)+len(e.Identity)+len(e.Graph)), e), nil
}

// EncodeEnvelopeArgs checks and encodes an envelope whose arguments are
// args (a job's typed arguments), encoded in place rather than encoded
// apart and copied in. e.Args is set to the arguments' bytes, a slice of
// the result. They are encoded as Marshal encodes them, not in
// MarshalArgs's canonical form (the enqueue of a job whose arguments
// nothing hashes or compares).
func EncodeEnvelopeArgs(e *Envelope, args any) ([]byte, error) {
	e.V = EnvelopeVersion
	enc := encPool.Get().(*encoder)
	defer func() {
		if enc.buf.Cap() <= 64<<10 {
			encPool.Put(enc)
		}
	}()
	enc.buf.Reset()
	var tmp [192]byte
	enc.buf.Write(appendEnvelopeHead(tmp[:0], e))
	start := enc.buf.Len()
	if err := enc.enc.Encode(args); err != nil {
		return nil, fmt.Errorf("%w: arguments: %v", ErrInvalid, err)
	}
	end := enc.buf.Len()
	enc.buf.Write(appendEnvelopeTail(tmp[:0], e))
	out := append(make([]byte, 0, enc.buf.Len()), enc.buf.Bytes()...)
	e.Args = out[start:end]
	if err := e.check(); err != nil {
		return nil, err
	}
	return out, nil
}

var decPool = sync.Pool{New: func() any {
	d := &decoder{dec: msgpack.NewDecoder(nil)}
	d.dec.DisallowUnknownFields(true)
	return d
}}

// DecodeEnvelope decodes and validates a job envelope strictly: unknown
// versions and unknown keys are rejected, sizes and nesting are bounded.
// The returned envelope's Args alias data.
func DecodeEnvelope(data []byte, maxSize int) (*Envelope, error) {
	e := new(Envelope)
	if err := DecodeEnvelopeInto(data, maxSize, e); err != nil {
		return nil, err
	}
	return e, nil
}

// DecodeEnvelopeInto is DecodeEnvelope into e (a worker keeps it in the
// job's own state, one allocation less per job).
func DecodeEnvelopeInto(data []byte, maxSize int, e *Envelope) error {
	*e = Envelope{}
	if maxSize <= 0 {
		maxSize = DefaultMaxEnvelope
	}
	if len(data) > maxSize {
		return fmt.Errorf("%w: %d bytes exceeds the %d-byte limit", ErrInvalid, len(data), maxSize)
	}
	if len(data) == 0 {
		return fmt.Errorf("%w: empty message", ErrInvalid)
	}
	// The envelope's own fields are flat and unknown keys are refused, so
	// only args can nest: decodeEnvelope bounds them as it reads past them
	// (at most DefaultMaxDepth levels below the envelope's map).
	if err := decodeEnvelope(data, e); err != nil {
		return fmt.Errorf("%w: not a msgpack envelope: %v", ErrInvalid, err)
	}
	if e.V != EnvelopeVersion {
		return fmt.Errorf("%w: unknown envelope version %d (this worker reads %d)", ErrInvalid, e.V, EnvelopeVersion)
	}
	return e.check()
}

func (e *Envelope) check() error {
	if err := ValidID(e.ID); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if e.Template && len(e.ID) > MaxTemplateID {
		return fmt.Errorf("%w: periodic schedule id %q longer than %d bytes (its firings' ids add up to %d)",
			ErrInvalid, e.ID, MaxTemplateID, 128-MaxTemplateID)
	}
	if e.Name == "" || len(e.Name) > 256 {
		return fmt.Errorf("%w: job name missing or longer than 256 bytes", ErrInvalid)
	}
	if len(e.Args) == 0 {
		return fmt.Errorf("%w: args missing (use an empty map)", ErrInvalid)
	}
	if e.Channel != "" {
		if err := ValidChannel(e.Channel); err != nil {
			return fmt.Errorf("%w: %v", ErrInvalid, err)
		}
	}
	if e.Attempt < 0 || (e.MaxRetries != nil && *e.MaxRetries < 0) || e.TimeoutMS < 0 {
		return fmt.Errorf("%w: negative attempt, max_retries or timeout", ErrInvalid)
	}
	for k, v := range e.Retry {
		if k < 1 || v < 0 {
			return fmt.Errorf("%w: retry pattern entries must be try>=1 -> delay>=0", ErrInvalid)
		}
	}
	return nil
}

// Unmarshal decodes msgpack data into v strictly (unknown struct fields are
// an error) after checking the nesting depth.
func Unmarshal(data []byte, v any) error {
	if err := CheckDepth(data, DefaultMaxDepth); err != nil {
		return err
	}
	return UnmarshalChecked(data, v)
}

// UnmarshalChecked is Unmarshal for data whose nesting is already bounded:
// the arguments of an envelope DecodeEnvelope accepted.
func UnmarshalChecked(data []byte, v any) error {
	d := decPool.Get().(*decoder)
	d.r.Reset(data)
	d.dec.Reset(&d.r)
	d.dec.DisallowUnknownFields(true)
	err := d.dec.Decode(v)
	d.r.Reset(nil)
	decPool.Put(d)
	return err
}

// decoder is a pooled msgpack decoder with the reader it reads from.
type decoder struct {
	dec *msgpack.Decoder
	r   bytes.Reader
}

// Millis converts a time to unix milliseconds (0 for the zero time).
func Millis(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

// TimeoutMillis is a job timeout in whole milliseconds, as the envelope
// keeps it: rounded up, so that a timeout under 1 ms still bounds the run
// (0, "no timeout", only for d <= 0).
func TimeoutMillis(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64((d + time.Millisecond - 1) / time.Millisecond)
}

// FromMillis converts unix milliseconds to a time (zero for 0).
func FromMillis(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}

// CheckHeaders refuses a job's extra headers that are the dispatcher's own
// (Nats-Msg-Id, Nats-Schedule*): a caller's would replace the job's dedup
// id or its ETA.
func CheckHeaders(headers map[string]string) error {
	for k, v := range headers {
		if k == HeaderMsgID || strings.HasPrefix(k, HeaderSchedule) {
			return fmt.Errorf("header %s is the dispatcher's (job.WithID, job.WithETA, job.WithDelay): %w", k, ErrInvalid)
		}
		// One NATS header line each: a line break in a value would add
		// headers of its own (the dispatcher's Nats-Msg-Id, a schedule)
		// or break the header block.
		if k == "" {
			return fmt.Errorf("empty header name: %w", ErrInvalid)
		}
		for i := 0; i < len(k); i++ {
			if c := k[i]; c <= ' ' || c >= 0x7f || c == ':' {
				return fmt.Errorf("header name %q: printable ASCII without ':' or spaces: %w", k, ErrInvalid)
			}
		}
		if strings.ContainsAny(v, "\r\n") {
			return fmt.Errorf("header %s: value with a line break: %w", k, ErrInvalid)
		}
	}
	return nil
}

// NATSHeader reports whether header k is one of NATS's own (Nats-*: a
// message id, schedule headers, what a direct get adds), which a copy of a
// message does not carry over.
func NATSHeader(k string) bool { return strings.HasPrefix(k, "Nats-") }
