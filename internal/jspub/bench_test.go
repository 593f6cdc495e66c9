package jspub

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/connector-go/connector/internal/testenv"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// BenchmarkBulkPublish compares, on one embedded server in one run, a batch
// of 10,000 256-byte messages published with a Batch and with
// jetstream.PublishMsgAsync (each message's acknowledgement read, as a
// bulk enqueue must): the baseline is the second.
//
//	go test -run '^$' -bench BulkPublish -count 3 ./internal/jspub
func BenchmarkBulkPublish(b *testing.B) {
	_, nc, js := testenv.JetStream(b)
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "B", Subjects: []string{"b.>"}, Retention: jetstream.LimitsPolicy, MaxMsgs: 100_000}); err != nil {
		b.Fatal(err)
	}
	data := []byte(strings.Repeat("x", 256))
	const n = 10_000
	b.Run("jspub", func(b *testing.B) {
		p := New(nc, 0, 0)
		defer p.Close()
		for b.Loop() {
			batch, err := p.NewBatch(n)
			if err != nil {
				b.Fatal(err)
			}
			for i := 0; i < n; i++ {
				if err := batch.Publish(ctx, i, &nats.Msg{Subject: "b.x", Data: data}); err != nil {
					b.Fatal(err)
				}
			}
			for _, a := range batch.Wait(ctx) {
				if a.Err != nil {
					b.Fatal(a.Err)
				}
			}
		}
		b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "msgs/s")
	})
	b.Run("jetstream-async", func(b *testing.B) {
		futures := make([]jetstream.PubAckFuture, 0, n)
		for b.Loop() {
			futures = futures[:0]
			for i := 0; i < n; i++ {
				f, err := js.PublishMsgAsync(&nats.Msg{Subject: "b.x", Data: data}, jetstream.WithStallWait(time.Minute))
				if err != nil {
					b.Fatal(err)
				}
				futures = append(futures, f)
			}
			for _, f := range futures {
				select {
				case <-f.Ok():
				case err := <-f.Err():
					b.Fatal(err)
				}
			}
		}
		b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "msgs/s")
	})
}
