package wire

import (
	"fmt"

	"github.com/vmihailenco/msgpack/v5"
)

// The envelope is on the hot path of every job: it is encoded and decoded
// by hand rather than by reflection. Decoding stays strict: an unknown key
// is an error.

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
		for k, v := range e.Retry {
			w.int(int64(k)).int(v)
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
		default:
			return fmt.Errorf("unknown envelope key %q", k)
		}
		if err != nil {
			return fmt.Errorf("envelope key %q: %w", k, err)
		}
	}
	return nil
}
