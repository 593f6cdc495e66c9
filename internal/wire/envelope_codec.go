package wire

import (
	"fmt"
	"maps"
	"slices"

	"github.com/vmihailenco/msgpack/v5"
)

// The envelope is on the hot path of every job: it is encoded and decoded
// by hand rather than by reflection (appendEnvelope and decodeEnvelope, on
// byte slices; the msgpack.CustomEncoder/Decoder methods serve callers that
// go through a msgpack Encoder). Decoding stays strict: an unknown key is
// an error.

// appendEnvelope appends e's msgpack encoding to b.
func appendEnvelope(b []byte, e *Envelope) []byte {
	b = appendEnvelopeHead(b, e)
	if len(e.Args) == 0 {
		b = append(b, 0xc0)
	} else {
		b = append(b, e.Args...)
	}
	return appendEnvelopeTail(b, e)
}

// appendEnvelopeHead appends the map header and the keys before the args'
// value (the args key included).
func appendEnvelopeHead(b []byte, e *Envelope) []byte {
	n := 4 // v, id, name, args
	for _, set := range [...]bool{e.Attempt != 0, e.MaxRetries != nil, len(e.Retry) > 0, e.Channel != "",
		e.Priority != nil, e.TimeoutMS != 0, e.Description != "", e.Identity != "", e.EnqueuedAt != 0,
		e.ETA != 0, e.Template, e.Graph != "", len(e.Trace) >= 2} {
		if set {
			n++
		}
	}
	b = AppendMapLen(b, n)
	b = AppendInt(AppendString(b, "v"), int64(e.V))
	b = AppendString(AppendString(b, "id"), e.ID)
	b = AppendString(AppendString(b, "name"), e.Name)
	return AppendString(b, "args")
}

// appendEnvelopeTail appends the optional keys after the args.
func appendEnvelopeTail(b []byte, e *Envelope) []byte {
	if e.Attempt != 0 {
		b = AppendInt(AppendString(b, "attempt"), int64(e.Attempt))
	}
	if e.MaxRetries != nil {
		b = AppendInt(AppendString(b, "max_retries"), int64(*e.MaxRetries))
	}
	if len(e.Retry) > 0 {
		b = AppendMapLen(AppendString(b, "retry"), len(e.Retry))
		for _, k := range retryTries(e.Retry) {
			b = AppendInt(AppendInt(b, int64(k)), e.Retry[k])
		}
	}
	if e.Channel != "" {
		b = AppendString(AppendString(b, "channel"), e.Channel)
	}
	if e.Priority != nil {
		b = AppendInt(AppendString(b, "priority"), int64(*e.Priority))
	}
	if e.TimeoutMS != 0 {
		b = AppendInt(AppendString(b, "timeout_ms"), e.TimeoutMS)
	}
	if e.Description != "" {
		b = AppendString(AppendString(b, "desc"), e.Description)
	}
	if e.Identity != "" {
		b = AppendString(AppendString(b, "identity"), e.Identity)
	}
	if e.EnqueuedAt != 0 {
		b = AppendInt(AppendString(b, "enqueued_at"), e.EnqueuedAt)
	}
	if e.ETA != 0 {
		b = AppendInt(AppendString(b, "eta"), e.ETA)
	}
	if e.Graph != "" {
		b = AppendString(AppendString(b, "graph"), e.Graph)
	}
	if len(e.Trace) >= 2 {
		b = appendTrace(b, e.Trace)
	}
	if e.Template {
		b = AppendBool(AppendString(b, "tmpl"), true)
	}
	return b
}

// retryTries are the tries of a retry pattern in ascending order, the
// order they are encoded in: the same envelope always encodes to the same
// bytes (Schedule compares them with the registered schedule's).
func retryTries(r map[int]int64) []int { return slices.Sorted(maps.Keys(r)) }

// decodeEnvelope reads an envelope from data (whose depth the caller has
// checked). Args alias data.
func decodeEnvelope(data []byte, e *Envelope) error {
	r := NewReader(data)
	n := r.MapLen()
	if r.err != nil {
		return r.err
	}
	if n < 0 {
		return fmt.Errorf("envelope is nil, want a map")
	}
	for i := 0; i < n && r.err == nil; i++ {
		k := r.StringBytes()
		if r.err != nil {
			return fmt.Errorf("envelope key: %w", r.err)
		}
		switch string(k) {
		case "v":
			e.V = int(r.Int())
		case "id":
			e.ID = r.String()
		case "name":
			e.Name = r.String()
		case "args":
			e.Args = r.RawDepth(DefaultMaxDepth + 1)
		case "attempt":
			e.Attempt = int(r.Int())
		case "max_retries":
			v := int(r.Int())
			e.MaxRetries = &v
		case "retry":
			m := r.MapLen()
			if m > 64 {
				return fmt.Errorf("retry pattern has %d entries (at most 64)", m)
			}
			if m > 0 {
				e.Retry = make(map[int]int64, m)
				for j := 0; j < m && r.err == nil; j++ {
					try := int(r.Int())
					e.Retry[try] = r.Int()
				}
			}
		case "channel":
			e.Channel = r.String()
		case "priority":
			v := int(r.Int())
			e.Priority = &v
		case "timeout_ms":
			e.TimeoutMS = r.Int()
		case "desc":
			e.Description = r.String()
		case "identity":
			e.Identity = r.String()
		case "enqueued_at":
			e.EnqueuedAt = r.Int()
		case "eta":
			e.ETA = r.Int()
		case "tmpl":
			e.Template = r.Bool()
		case "graph":
			e.Graph = r.String()
		case "trace":
			t, err := readTrace(r)
			if err != nil {
				return fmt.Errorf("envelope key %q: %w", k, err)
			}
			e.Trace = t
		default:
			return fmt.Errorf("unknown envelope key %q", k)
		}
		if r.err != nil {
			return fmt.Errorf("envelope key %q: %w", k, r.err)
		}
	}
	if r.err != nil {
		return r.err
	}
	if !r.Done() {
		return fmt.Errorf("%d bytes after the envelope", len(data)-r.i)
	}
	return nil
}

var (
	_ msgpack.CustomEncoder = (*Envelope)(nil)
	_ msgpack.CustomDecoder = (*Envelope)(nil)
)

// EncodeMsgpack implements msgpack.CustomEncoder.
func (e *Envelope) EncodeMsgpack(enc *msgpack.Encoder) error {
	n := 4 // v, id, name, args
	opt := func(b bool) {
		if b {
			n++
		}
	}
	opt(e.Attempt != 0)
	opt(e.MaxRetries != nil)
	opt(len(e.Retry) > 0)
	opt(e.Channel != "")
	opt(e.Priority != nil)
	opt(e.TimeoutMS != 0)
	opt(e.Description != "")
	opt(e.Identity != "")
	opt(e.EnqueuedAt != 0)
	opt(e.ETA != 0)
	opt(e.Template)
	opt(e.Graph != "")
	opt(len(e.Trace) >= 2)
	w := &errWriter{enc: enc}
	w.mapLen(n)
	w.key("v").int(int64(e.V))
	w.key("id").str(e.ID)
	w.key("name").str(e.Name)
	w.key("args").raw(e.Args)
	if e.Attempt != 0 {
		w.key("attempt").int(int64(e.Attempt))
	}
	if e.MaxRetries != nil {
		w.key("max_retries").int(int64(*e.MaxRetries))
	}
	if len(e.Retry) > 0 {
		w.key("retry").mapLen(len(e.Retry))
		for _, k := range retryTries(e.Retry) {
			w.int(int64(k)).int(e.Retry[k])
		}
	}
	if e.Channel != "" {
		w.key("channel").str(e.Channel)
	}
	if e.Priority != nil {
		w.key("priority").int(int64(*e.Priority))
	}
	if e.TimeoutMS != 0 {
		w.key("timeout_ms").int(e.TimeoutMS)
	}
	if e.Description != "" {
		w.key("desc").str(e.Description)
	}
	if e.Identity != "" {
		w.key("identity").str(e.Identity)
	}
	if e.EnqueuedAt != 0 {
		w.key("enqueued_at").int(e.EnqueuedAt)
	}
	if e.ETA != 0 {
		w.key("eta").int(e.ETA)
	}
	if e.Graph != "" {
		w.key("graph").str(e.Graph)
	}
	if len(e.Trace) >= 2 {
		w.key("trace").mapLen(len(e.Trace) / 2)
		for i := 0; i+1 < len(e.Trace); i += 2 {
			w.str(e.Trace[i]).str(e.Trace[i+1])
		}
	}
	if e.Template {
		w.key("tmpl")
		if w.err == nil {
			w.err = enc.EncodeBool(true)
		}
	}
	return w.err
}

type errWriter struct {
	enc *msgpack.Encoder
	err error
}

func (w *errWriter) mapLen(n int) *errWriter {
	if w.err == nil {
		w.err = w.enc.EncodeMapLen(n)
	}
	return w
}

func (w *errWriter) key(k string) *errWriter { return w.str(k) }

func (w *errWriter) str(s string) *errWriter {
	if w.err == nil {
		w.err = w.enc.EncodeString(s)
	}
	return w
}

func (w *errWriter) int(n int64) *errWriter {
	if w.err == nil {
		w.err = w.enc.EncodeInt(n)
	}
	return w
}

func (w *errWriter) raw(b msgpack.RawMessage) *errWriter {
	if w.err == nil {
		if len(b) == 0 {
			w.err = w.enc.EncodeNil()
		} else {
			w.err = b.EncodeMsgpack(w.enc)
		}
	}
	return w
}

// DecodeMsgpack implements msgpack.CustomDecoder.
func (e *Envelope) DecodeMsgpack(dec *msgpack.Decoder) error {
	n, err := dec.DecodeMapLen()
	if err != nil {
		return err
	}
	if n < 0 {
		return fmt.Errorf("envelope is nil, want a map")
	}
	*e = Envelope{}
	for i := 0; i < n; i++ {
		k, err := dec.DecodeString()
		if err != nil {
			return fmt.Errorf("envelope key: %w", err)
		}
		switch k {
		case "v":
			e.V, err = dec.DecodeInt()
		case "id":
			e.ID, err = dec.DecodeString()
		case "name":
			e.Name, err = dec.DecodeString()
		case "args":
			e.Args, err = dec.DecodeRaw()
		case "attempt":
			e.Attempt, err = dec.DecodeInt()
		case "max_retries":
			var v int
			if v, err = dec.DecodeInt(); err == nil {
				e.MaxRetries = &v
			}
		case "retry":
			var m int
			if m, err = dec.DecodeMapLen(); err == nil && m > 0 {
				if m > 64 {
					return fmt.Errorf("retry pattern has %d entries (at most 64)", m)
				}
				e.Retry = make(map[int]int64, m)
				for j := 0; j < m && err == nil; j++ {
					var try int
					var d int64
					if try, err = dec.DecodeInt(); err == nil {
						d, err = dec.DecodeInt64()
						e.Retry[try] = d
					}
				}
			}
		case "channel":
			e.Channel, err = dec.DecodeString()
		case "priority":
			var v int
			if v, err = dec.DecodeInt(); err == nil {
				e.Priority = &v
			}
		case "timeout_ms":
			e.TimeoutMS, err = dec.DecodeInt64()
		case "desc":
			e.Description, err = dec.DecodeString()
		case "identity":
			e.Identity, err = dec.DecodeString()
		case "enqueued_at":
			e.EnqueuedAt, err = dec.DecodeInt64()
		case "eta":
			e.ETA, err = dec.DecodeInt64()
		case "tmpl":
			e.Template, err = dec.DecodeBool()
		case "graph":
			e.Graph, err = dec.DecodeString()
		case "trace":
			var m int
			if m, err = dec.DecodeMapLen(); err == nil && m > 0 {
				if m > maxTraceFields {
					return fmt.Errorf("trace has %d fields (at most %d)", m, maxTraceFields)
				}
				e.Trace = make(TraceContext, 0, 2*m)
				for j := 0; j < m && err == nil; j++ {
					var k, v string
					if k, err = dec.DecodeString(); err == nil {
						if v, err = dec.DecodeString(); err == nil {
							err = checkTraceField(k, v)
						}
					}
					e.Trace = append(e.Trace, k, v)
				}
			}
		default:
			return fmt.Errorf("unknown envelope key %q", k)
		}
		if err != nil {
			return fmt.Errorf("envelope key %q: %w", k, err)
		}
	}
	return nil
}
