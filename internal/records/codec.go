package records

import (
	"fmt"

	"github.com/vmihailenco/msgpack/v5"
)

// Records are written for every job: the blob is encoded by hand rather
// than by reflection. Keys match the struct tags of blob.

// EncodeMsgpack implements msgpack.CustomEncoder.
func (b *blob) EncodeMsgpack(enc *msgpack.Encoder) error {
	type kv struct {
		k string
		s string
		i int64
		u uint64
		p *int
		t byte // 's' string, 'i' int, 'u' uint, 'p' *int
	}
	var arr [20]kv
	n := 0
	str := func(k, v string) {
		if v != "" {
			arr[n] = kv{k: k, s: v, t: 's'}
			n++
		}
	}
	num := func(k string, v int64) {
		if v != 0 {
			arr[n] = kv{k: k, i: v, t: 'i'}
			n++
		}
	}
	str("st", b.State)
	str("n", b.Name)
	str("ch", b.Channel)
	if b.Priority != nil {
		arr[n] = kv{k: "p", p: b.Priority, t: 'p'}
		n++
	}
	num("a", int64(b.Attempts))
	if b.MaxRetries != nil {
		arr[n] = kv{k: "mr", p: b.MaxRetries, t: 'p'}
		n++
	}
	str("d", b.Desc)
	str("r", b.Result)
	str("e", b.Error)
	str("et", b.ErrorType)
	str("sk", b.Stack)
	str("w", b.Worker)
	str("i", b.Identity)
	str("g", b.Graph)
	num("eq", b.EnqueuedAt)
	num("eta", b.ETA)
	num("sa", b.StartedAt)
	num("ea", b.EndedAt)
	num("ua", b.UpdatedAt)
	if b.Seq != 0 {
		arr[n] = kv{k: "sq", u: b.Seq, t: 'u'}
		n++
	}
	if err := enc.EncodeMapLen(n); err != nil {
		return err
	}
	for _, e := range arr[:n] {
		if err := enc.EncodeString(e.k); err != nil {
			return err
		}
		var err error
		switch e.t {
		case 's':
			err = enc.EncodeString(e.s)
		case 'i':
			err = enc.EncodeInt(e.i)
		case 'u':
			err = enc.EncodeUint(e.u)
		case 'p':
			err = enc.EncodeInt(int64(*e.p))
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// DecodeMsgpack implements msgpack.CustomDecoder.
func (b *blob) DecodeMsgpack(dec *msgpack.Decoder) error {
	n, err := dec.DecodeMapLen()
	if err != nil {
		return err
	}
	*b = blob{}
	for i := 0; i < n; i++ {
		k, err := dec.DecodeString()
		if err != nil {
			return err
		}
		intp := func() (*int, error) {
			v, err := dec.DecodeInt()
			return &v, err
		}
		var i64 int64
		switch k {
		case "st":
			b.State, err = dec.DecodeString()
		case "n":
			b.Name, err = dec.DecodeString()
		case "ch":
			b.Channel, err = dec.DecodeString()
		case "p":
			b.Priority, err = intp()
		case "a":
			b.Attempts, err = dec.DecodeInt()
		case "mr":
			b.MaxRetries, err = intp()
		case "d":
			b.Desc, err = dec.DecodeString()
		case "r":
			b.Result, err = dec.DecodeString()
		case "e":
			b.Error, err = dec.DecodeString()
		case "et":
			b.ErrorType, err = dec.DecodeString()
		case "sk":
			b.Stack, err = dec.DecodeString()
		case "w":
			b.Worker, err = dec.DecodeString()
		case "i":
			b.Identity, err = dec.DecodeString()
		case "g":
			b.Graph, err = dec.DecodeString()
		case "eq":
			i64, err = dec.DecodeInt64()
			b.EnqueuedAt = i64
		case "eta":
			i64, err = dec.DecodeInt64()
			b.ETA = i64
		case "sa":
			i64, err = dec.DecodeInt64()
			b.StartedAt = i64
		case "ea":
			i64, err = dec.DecodeInt64()
			b.EndedAt = i64
		case "ua":
			i64, err = dec.DecodeInt64()
			b.UpdatedAt = i64
		case "sq":
			b.Seq, err = dec.DecodeUint64()
		default:
			err = dec.Skip() // written by a newer version: ignore
		}
		if err != nil {
			return fmt.Errorf("record key %q: %w", k, err)
		}
	}
	return nil
}
