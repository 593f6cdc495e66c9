package wire

import (
	"strings"
	"testing"
)

type benchArgs struct {
	Data []byte `msgpack:"d"`
}

func (benchArgs) JobName() string { return "bench.noop" }

func benchEnvelope(b *testing.B) []byte {
	env := &Envelope{ID: NewID(), Name: "bench.noop", Channel: "root", EnqueuedAt: 1796126595974}
	data, err := EncodeEnvelopeArgs(env, benchArgs{Data: []byte(strings.Repeat("x", 256))})
	if err != nil {
		b.Fatal(err)
	}
	return data
}

// The worker's per-job decoding: the envelope, then the typed arguments.
func BenchmarkDecodeEnvelope(b *testing.B) {
	data := benchEnvelope(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeEnvelope(data, 0); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkUnmarshalArgs(b *testing.B) {
	env, err := DecodeEnvelope(benchEnvelope(b), 0)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		var a benchArgs
		if err := Unmarshal(env.Args, &a); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCheckDepth(b *testing.B) {
	data := benchEnvelope(b)
	b.ReportAllocs()
	for b.Loop() {
		if err := CheckDepth(data, DefaultMaxDepth+2); err != nil {
			b.Fatal(err)
		}
	}
}

// The dispatcher's per-job encoding.
func BenchmarkEncodeEnvelopeArgs(b *testing.B) {
	args := benchArgs{Data: []byte(strings.Repeat("x", 256))}
	b.ReportAllocs()
	for b.Loop() {
		env := &Envelope{ID: "01M8RPQCTBQWVAP3H8CWT2CM8D", Name: "bench.noop", Channel: "root", EnqueuedAt: 1796126595974}
		if _, err := EncodeEnvelopeArgs(env, args); err != nil {
			b.Fatal(err)
		}
	}
}
