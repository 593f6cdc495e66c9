package main

import (
	"context"
	"testing"
	"time"

	"github.com/connector-go/connector/internal/testenv"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func TestEveryFires(t *testing.T) {
	_, _, js := testenv.JetStream(t)
	ctx := context.Background()
	s, _ := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}, Retention: jetstream.WorkQueuePolicy, AllowMsgSchedules: true})
	m := nats.NewMsg("s.sched.x")
	m.Header.Set("Nats-Schedule", "@every 1s")
	m.Header.Set("Nats-Schedule-Target", "s.jobs.x")
	m.Data = []byte("hi")
	if _, err := js.PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	c, _ := s.CreateConsumer(ctx, jetstream.ConsumerConfig{Durable: "c", FilterSubject: "s.jobs.>", AckPolicy: jetstream.AckExplicitPolicy})
	for time.Since(start) < 3500*time.Millisecond {
		b, _ := c.Fetch(10, jetstream.FetchMaxWait(500*time.Millisecond))
		for msg := range b.Messages() {
			md, _ := msg.Metadata()
			t.Logf("%s seq=%d next=%s ts=%s", time.Since(start), md.Sequence.Stream, msg.Headers().Get("Nats-Schedule-Next"), md.Timestamp.Format("15:04:05.000"))
			msg.Ack()
		}
	}
}
