package worker

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/connector-go/connector/internal/testenv"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func TestParseAckSubject(t *testing.T) {
	var md jetstream.MsgMetadata
	if err := parseAckSubject("$JS.ACK.S.c.3.17.9.1796126595974185477.42", "S", "c", &md); err != nil {
		t.Fatal(err)
	}
	if md.NumDelivered != 3 || md.Sequence.Stream != 17 || md.Sequence.Consumer != 9 || md.NumPending != 42 ||
		md.Timestamp.UnixNano() != 1796126595974185477 || md.Stream != "S" || md.Consumer != "c" || md.Domain != "" {
		t.Fatalf("v1 form: %+v", md)
	}
	if err := parseAckSubject("$JS.ACK.hub.ACCHASH.S.c.1.2.3.4.5.rnd", "S", "c", &md); err != nil {
		t.Fatal(err)
	}
	if md.NumDelivered != 1 || md.Sequence.Stream != 2 || md.Sequence.Consumer != 3 || md.NumPending != 5 || md.Domain != "hub" {
		t.Fatalf("v2 form: %+v", md)
	}
	for _, bad := range []string{"", "_INBOX.x", "$JS.ACK.S.c.1.2.3", "$JS.ACK.S.c.x.2.3.4.5", "$JS.ACK.a.b.S.c.1.2.3.4"} {
		if err := parseAckSubject(bad, "S", "c", &md); !errors.Is(err, jetstream.ErrNotJSMessage) {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

// A pull subscription receives what it asks for, acks them, learns when its
// request has expired (and ignores an earlier request's end), and reports a
// deleted consumer as errConsumerGone.
func TestPullSubRequests(t *testing.T) {
	_, nc, js := testenv.JetStream(t)
	ctx := context.Background()
	workQueue(t, js, 0)
	for i := 0; i < 3; i++ {
		if _, err := js.Publish(ctx, "s.x", []byte{byte('a' + i)}); err != nil {
			t.Fatal(err)
		}
	}
	ps, err := newPullSub(js, "S", "c", 16)
	if err != nil {
		t.Fatal(err)
	}
	defer ps.close()

	// An earlier request's end (a 408 on its own reply subject) does not
	// end the current one.
	old, _ := ps.request(1, time.Hour)
	reply, err := ps.request(5, 300*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.PublishMsg(&nats.Msg{Subject: old, Header: nats.Header{"Status": []string{"408"}}}); err != nil {
		t.Fatal(err)
	}
	var got []byte
	deadline := time.Now().Add(5 * time.Second)
	start := time.Now()
	for {
		m, ended, err := ps.next(ctx, reply, deadline, true)
		if err != nil {
			t.Fatal(err)
		}
		if m != nil {
			x := new(pulled)
			ps.wrap(m, x)
			md, err := x.Metadata()
			if err != nil || md.Stream != "S" || md.NumDelivered != 1 {
				t.Fatalf("metadata %+v %v", md, err)
			}
			if err := x.Ack(); err != nil {
				t.Fatal(err)
			}
			if err := x.Ack(); !errors.Is(err, jetstream.ErrMsgAlreadyAckd) {
				t.Fatalf("second ack: %v", err)
			}
			got = append(got, m.Data...)
		}
		if ended {
			break
		}
	}
	// The old request (batch 1) took one message; the new one the rest,
	// and it ended at its own expiry, not at the forged end of the old one.
	if len(got) != 3 || time.Since(start) < 250*time.Millisecond {
		t.Fatalf("got %q in %s", got, time.Since(start))
	}
	testenv.Eventually(t, 5*time.Second, func() bool {
		info, err := js.Stream(ctx, "S")
		return err == nil && info.CachedInfo().State.Msgs == 0
	}, "acked messages still in the work queue")

	if err := js.DeleteConsumer(ctx, "S", "c"); err != nil {
		t.Fatal(err)
	}
	reply, _ = ps.request(1, 5*time.Second)
	_, ended, err := ps.next(ctx, reply, time.Now().Add(5*time.Second), true)
	if !ended || !errors.Is(err, errConsumerGone) {
		t.Fatalf("deleted consumer: ended %v, %v", ended, err)
	}
}

// A puller that stops with a request open leaves no job stuck on its
// lease: whatever the server delivered to the request comes back from
// finish (to be handed back), and nothing is delivered to it after.
func TestPullSubCloseReturnsWhatArrived(t *testing.T) {
	_, _, js := testenv.JetStream(t)
	ctx := context.Background()
	cons := workQueue(t, js, time.Minute)
	for round := 0; round < 20; round++ {
		ps, err := newPullSub(js, "S", "c", 16)
		if err != nil {
			t.Fatal(err)
		}
		reply, err := ps.request(4, 300*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 2; i++ {
			if _, err := js.Publish(ctx, "s.x", []byte("x")); err != nil {
				t.Fatal(err)
			}
		}
		back := ps.finish(reply, time.Now().Add(2*time.Second))
		info, err := cons.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.NumAckPending != len(back) {
			t.Fatalf("round %d: %d delivered and unacked, %d returned by close", round, info.NumAckPending, len(back))
		}
		for _, m := range back {
			x := new(pulled)
			ps.wrap(m, x)
			if err := x.Ack(); err != nil {
				t.Fatal(err)
			}
		}
		// what was not delivered is still there for the next round's puller
		testenv.Eventually(t, 5*time.Second, func() bool {
			info, err := cons.Info(ctx)
			return err == nil && info.NumAckPending == 0
		}, "acks of the returned messages")
		st, err := js.Stream(ctx, "S")
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Purge(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

// workQueue makes the work-queue stream S (subjects s.>) and its consumer
// c (ackWait 0: the server's default).
func workQueue(t *testing.T, js jetstream.JetStream, ackWait time.Duration) jetstream.Consumer {
	t.Helper()
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}, Retention: jetstream.WorkQueuePolicy}); err != nil {
		t.Fatal(err)
	}
	cons, err := js.CreateConsumer(ctx, "S", jetstream.ConsumerConfig{Durable: "c", AckPolicy: jetstream.AckExplicitPolicy, AckWait: ackWait})
	if err != nil {
		t.Fatal(err)
	}
	return cons
}
