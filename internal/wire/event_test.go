package wire

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

func validEvent() *EventBody {
	return &EventBody{
		ID: NewID(), Model: "res.partner", Event: "write", RecordID: "42",
		Fields: []string{"name"}, Origin: "shop-1", Time: 1700000000000,
		Data: map[string]any{"name": "Ada"},
	}
}

func TestEventRoundTrip(t *testing.T) {
	in := validEvent()
	b, err := EncodeEvent(in)
	if err != nil {
		t.Fatal(err)
	}
	out, err := DecodeEvent(b, 0)
	if err != nil {
		t.Fatal(err)
	}
	if out.ID != in.ID || out.Model != in.Model || out.Event != in.Event || out.RecordID != in.RecordID ||
		out.Origin != in.Origin || out.Time != in.Time || out.Fields[0] != "name" || out.Data["name"] != "Ada" || out.V != 1 {
		t.Fatalf("round trip: %+v", out)
	}
}

func TestDecodeEventIsStrict(t *testing.T) {
	encode := func(m map[string]any) []byte {
		b, err := msgpack.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	good := map[string]any{"v": 1, "id": "E1", "model": "res.partner", "event": "create", "record_id": "7", "time": 1}
	if _, err := DecodeEvent(encode(good), 0); err != nil {
		t.Fatalf("minimal event rejected: %v", err)
	}
	deep := any("x")
	for i := 0; i < 40; i++ {
		deep = map[string]any{"k": deep}
	}
	cases := map[string][]byte{
		"empty":          nil,
		"garbage":        []byte{0xc1, 0x00},
		"not a map":      encode(map[string]any{})[:0],
		"unknown key":    encode(with(good, "extra", 1)),
		"version 2":      encode(with(good, "v", 2)),
		"no id":          encode(with(good, "id", "")),
		"bad id":         encode(with(good, "id", "a.b")),
		"no model":       encode(with(good, "model", "")),
		"space in model": encode(with(good, "model", "res partner")),
		"bad event":      encode(with(good, "event", "cre.ate")),
		"no record":      encode(with(good, "record_id", "")),
		"negative time":  encode(with(good, "time", -1)),
		"too deep":       encode(with(good, "data", deep)),
		"trailing bytes": append(encode(good), 0x01),
		"too big":        encode(with(good, "data", map[string]any{"x": strings.Repeat("a", DefaultMaxEnvelope)})),
	}
	for name, b := range cases {
		if _, err := DecodeEvent(b, 0); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: err = %v, want ErrInvalid", name, err)
		}
	}
	if _, err := DecodeEvent(encode(good), 10); !errors.Is(err, ErrInvalid) {
		t.Errorf("size limit not applied: %v", err)
	}
}

func with(m map[string]any, k string, v any) map[string]any {
	out := map[string]any{}
	for kk, vv := range m {
		out[kk] = vv
	}
	out[k] = v
	return out
}

func TestEncodeEventChecks(t *testing.T) {
	e := validEvent()
	e.Event = "a.b"
	if _, err := EncodeEvent(e); !errors.Is(err, ErrInvalid) {
		t.Fatalf("err = %v", err)
	}
}

func TestModelTokenIsReversible(t *testing.T) {
	cases := map[string]string{
		"res.partner":       "res:partner",
		"product.template":  "product:template",
		"sale_order-line":   "sale_order-line",
		"a:b%c":             "a%3Ab%25c",
		"a*b>c":             "a%2Ab%3Ec",
		"caf\xc3\xa9.menu":  "caf%C3%A9:menu",
		"x.y.z":             "x:y:z",
		"ir.model.fields_1": "ir:model:fields_1",
	}
	for model, tok := range cases {
		if got := EncodeModel(model); got != tok {
			t.Errorf("EncodeModel(%q) = %q, want %q", model, got, tok)
		}
		back, err := DecodeModel(tok)
		if err != nil || back != model {
			t.Errorf("DecodeModel(%q) = %q, %v", tok, back, err)
		}
	}
	// Every byte that may appear in a model survives the round trip, and
	// tokens are always valid single subject tokens.
	var all bytes.Buffer
	for c := 0x21; c < 0x100; c++ {
		if c != 0x7f {
			all.WriteByte(byte(c))
		}
	}
	for len(all.Bytes()) > 0 {
		model := string(all.Next(100))
		tok := EncodeModel(model)
		if strings.ContainsAny(tok, ".*> \t") {
			t.Fatalf("token %q not subject-safe", tok)
		}
		if back, err := DecodeModel(tok); err != nil || back != model {
			t.Fatalf("model %q: %v", model, err)
		}
	}
	for _, bad := range []string{"", "a%3a", "a%4", "a%41", "a.b", "a b", "a%2"} {
		if _, err := DecodeModel(bad); !errors.Is(err, ErrBadName) {
			t.Errorf("DecodeModel(%q) err = %v", bad, err)
		}
	}
}

func TestEventSubjects(t *testing.T) {
	n := MustNames("acme")
	subj := n.EventSubject("res.partner", "write", "42")
	want := fmt.Sprintf("acme.events.res:partner.write.%02x", EventBucket("42"))
	if subj != want {
		t.Fatalf("subject %q, want %q", subj, want)
	}
	model, event, bucket, err := n.ParseEventSubject(subj)
	if err != nil || model != "res.partner" || event != "write" || bucket != EventBucket("42") {
		t.Fatalf("parse: %q %q %d %v", model, event, bucket, err)
	}
	for _, bad := range []string{"other.events.a.b.00", "acme.events.a.b", "acme.events.a.b.0G", "acme.events.a.b.0", "acme.events.a.b.FF", "acme.events.a%zz.b.00",
		"acme.events.a.b.-1", "acme.events.a.b.-f", "acme.events.a.b.+1", "acme.events.a.b. 1", "acme.events.a.b.100"} {
		if _, _, _, err := n.ParseEventSubject(bad); !errors.Is(err, ErrBadName) {
			t.Errorf("ParseEventSubject(%q) err = %v", bad, err)
		}
	}
	for tok, want := range map[string]int{"00": 0, "0a": 10, "7f": 127, "ff": 255} {
		if _, _, b, err := n.ParseEventSubject("acme.events.a.b." + tok); err != nil || b != want {
			t.Errorf("ParseEventSubject(bucket %s) = %d, %v; want %d", tok, b, err, want)
		}
	}
	if got := n.EventFilter("res.partner", "", ""); got != "acme.events.res:partner.*.*" {
		t.Fatalf("filter %q", got)
	}
	if got := n.DeadEventSubject("export", 12); got != "acme.dead.events.export.12" {
		t.Fatalf("dead subject %q", got)
	}
	if l, ok := n.ParseDeadEventSubject(n.DeadEventSubject("export", 12)); !ok || l != "export" {
		t.Fatalf("ParseDeadEventSubject: %q %v", l, ok)
	}
	for _, bad := range []string{"acme.dead.jobs.X", "acme.dead.events.export", "acme.dead.events..12", "acme.dead.events.export.12.1", "other.dead.events.export.12"} {
		if l, ok := n.ParseDeadEventSubject(bad); ok {
			t.Errorf("ParseDeadEventSubject(%q) = %q, true", bad, l)
		}
	}
	// The bucket is FNV-1a: pin two values so other languages can check
	// their implementation against these.
	if EventBucket("42") != 0x83 || EventBucket("") != 0xc5 {
		t.Fatalf("buckets: %#x %#x", EventBucket("42"), EventBucket(""))
	}
}
