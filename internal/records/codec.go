package records

import (
	"fmt"

	"github.com/connector-go/connector/internal/wire"
)

// Records are written for every job: the blob is encoded and decoded by
// hand, a msgpack map with the short keys below (unknown keys, written by
// a newer version, are skipped).

// appendTo appends b's encoding to dst.
func (b *blob) appendTo(dst []byte) []byte {
	n := 0
	count := func(set bool) {
		if set {
			n++
		}
	}
	strs := [...]struct{ k, v string }{
		{"st", b.State}, {"n", b.Name}, {"ch", b.Channel}, {"d", b.Desc}, {"r", b.Result}, {"e", b.Error},
		{"et", b.ErrorType}, {"sk", b.Stack}, {"w", b.Worker}, {"i", b.Identity}, {"g", b.Graph},
	}
	// "ua" comes first: the script that writes a caller-chosen id's key
	// reads the update time of the side the key holds there (keyScript).
	nums := [...]struct {
		k string
		v int64
	}{
		{"ua", b.UpdatedAt}, {"a", int64(b.Attempts)}, {"eq", b.EnqueuedAt}, {"eta", b.ETA}, {"sa", b.StartedAt}, {"ea", b.EndedAt},
	}
	for _, s := range strs {
		count(s.v != "")
	}
	for _, x := range nums {
		count(x.v != 0)
	}
	count(b.Priority != nil)
	count(b.MaxRetries != nil)
	count(b.Seq != 0)
	dst = wire.AppendMapLen(dst, n)
	if b.UpdatedAt != 0 {
		dst = wire.AppendInt(wire.AppendString(dst, "ua"), b.UpdatedAt)
	}
	for _, s := range strs {
		if s.v != "" {
			dst = wire.AppendString(wire.AppendString(dst, s.k), s.v)
		}
	}
	for _, x := range nums[1:] {
		if x.v != 0 {
			dst = wire.AppendInt(wire.AppendString(dst, x.k), x.v)
		}
	}
	if b.Priority != nil {
		dst = wire.AppendInt(wire.AppendString(dst, "p"), int64(*b.Priority))
	}
	if b.MaxRetries != nil {
		dst = wire.AppendInt(wire.AppendString(dst, "mr"), int64(*b.MaxRetries))
	}
	if b.Seq != 0 {
		dst = wire.AppendUint(wire.AppendString(dst, "sq"), b.Seq)
	}
	return dst
}

// decode reads a blob written by appendTo (or by any msgpack encoder).
func (b *blob) decode(data []byte) error {
	r := wire.NewReader(data)
	n := r.MapLen()
	*b = blob{}
	for i := 0; i < n && r.Err() == nil; i++ {
		k := string(r.StringBytes())
		intp := func() *int {
			v := int(r.Int())
			return &v
		}
		switch k {
		case "st":
			b.State = r.String()
		case "n":
			b.Name = r.String()
		case "ch":
			b.Channel = r.String()
		case "p":
			b.Priority = intp()
		case "a":
			b.Attempts = int(r.Int())
		case "mr":
			b.MaxRetries = intp()
		case "d":
			b.Desc = r.String()
		case "r":
			b.Result = r.String()
		case "e":
			b.Error = r.String()
		case "et":
			b.ErrorType = r.String()
		case "sk":
			b.Stack = r.String()
		case "w":
			b.Worker = r.String()
		case "i":
			b.Identity = r.String()
		case "g":
			b.Graph = r.String()
		case "eq":
			b.EnqueuedAt = r.Int()
		case "eta":
			b.ETA = r.Int()
		case "sa":
			b.StartedAt = r.Int()
		case "ea":
			b.EndedAt = r.Int()
		case "ua":
			b.UpdatedAt = r.Int()
		case "sq":
			b.Seq = uint64(r.Int())
		default:
			r.Skip() // written by a newer version: ignore
		}
	}
	if err := r.Err(); err != nil {
		return fmt.Errorf("records: %w", err)
	}
	return nil
}
