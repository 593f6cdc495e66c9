package worker

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/connector-go/connector/internal/testenv"
	"github.com/nats-io/nats.go/jetstream"
)

// A pull request the server refuses for a limit of the consumer (409
// "Exceeded MaxWaiting", MaxRequestBatch, MaxRequestExpires...) ends
// with an error, so that the puller backs off and logs it. Before, it
// ended like an expired request: the puller asked again at once, for
// ever, in a tight loop against the server.
func TestPullRequestRefusedIsAnError(t *testing.T) {
	_, _, js := testenv.JetStream(t)
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}, Retention: jetstream.WorkQueuePolicy}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateConsumer(ctx, "S", jetstream.ConsumerConfig{Durable: "c", AckPolicy: jetstream.AckExplicitPolicy, MaxRequestBatch: 2}); err != nil {
		t.Fatal(err)
	}
	ps, err := newPullSub(js, "S", "c", 16)
	if err != nil {
		t.Fatal(err)
	}
	defer ps.close()
	reply, err := ps.request(5, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_, ended, err := ps.next(ctx, reply, time.Now().Add(5*time.Second), true)
	if !ended || err == nil || !strings.Contains(err.Error(), "409") {
		t.Fatalf("request over the consumer's MaxRequestBatch: ended %v, err %v; want an error naming the 409", ended, err)
	}
}
