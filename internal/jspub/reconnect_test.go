package jspub

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/connector-go/connector/internal/testenv"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// linkedClient connects to srv through a testenv.Link, reconnecting at
// once whenever the link is back.
func linkedClient(t *testing.T, srv *testenv.NATSServer) (*testenv.Link, *nats.Conn) {
	t.Helper()
	l := testenv.NewLink(t, srv.Server.Addr().String())
	client, err := nats.Connect("nats://"+l.Addr, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond), nats.ReconnectJitter(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(client.Close)
	return l, client
}

// A batch whose acknowledgements are lost in a reconnect (messages the
// server stored while its replies could not reach the client, then the
// link cut) does not wait the stall timeout: shortly after the client is
// back, those messages fail with ErrAckLost (not Unsent: they may be, and
// here are, stored). Messages published while the client was away (its
// reconnect buffer) and after it came back are acknowledged as usual, and
// every message is settled exactly once.
func TestAcksLostInAReconnect(t *testing.T) {
	srv := testenv.StartNATS(t)
	direct := srv.Connect(t)
	js, _ := jetstream.New(direct)
	ctx := context.Background()
	s, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "R", Subjects: []string{"r.>"}})
	if err != nil {
		t.Fatal(err)
	}
	l, client := linkedClient(t, srv)

	const stall = 10 * time.Second
	p := New(client, 0, stall)
	defer p.Close()
	const per = 10 // before the blip, lost in it, while away, after it
	b, err := p.NewBatch(4 * per)
	if err != nil {
		t.Fatal(err)
	}
	body := func(i int) string { return fmt.Sprint("r", i) }
	publish := func(from int) {
		t.Helper()
		for i := from; i < from+per; i++ {
			if err := b.Publish(ctx, i, &nats.Msg{Subject: "r.x", Data: []byte(body(i))}); err != nil {
				t.Fatalf("publish %d: %v", i, err)
			}
		}
	}
	stored := func(n uint64) func() bool {
		return func() bool { info, err := s.Info(ctx); return err == nil && info.State.Msgs == n }
	}

	publish(0)
	testenv.Eventually(t, 5*time.Second, func() bool { _, ok := b.Settled(per - 1); return ok }, "first messages acknowledged")

	// Stored, their acknowledgements dropped on the way back.
	l.Mute(true)
	publish(per)
	testenv.Eventually(t, 5*time.Second, stored(2*per), "muted messages stored")

	// The link drops; published meanwhile, into the reconnect buffer.
	l.Cut(true)
	testenv.Eventually(t, 5*time.Second, func() bool { return !client.IsConnected() }, "client sees the cut")
	publish(2 * per)

	back := time.Now()
	l.Cut(false)
	testenv.Eventually(t, 5*time.Second, client.IsConnected, "client reconnected")
	publish(3 * per)

	wctx, cancel := context.WithTimeout(ctx, stall-2*time.Second) // a failing run ends before the stall
	defer cancel()
	acks := b.Wait(wctx)
	if took := time.Since(back); took > 5*time.Second {
		t.Errorf("Wait returned %s after the reconnect (stall %s)", took, stall)
	}
	for i, a := range acks {
		lost := i >= per && i < 2*per
		switch {
		case lost && (!errors.Is(a.Err, ErrAckLost) || !errors.Is(a.Err, nats.ErrTimeout) || a.Unsent || a.Seq != 0):
			t.Errorf("message %d, its acknowledgement lost: %+v, want ErrAckLost", i, a)
		case !lost && (a.Err != nil || a.Seq == 0):
			t.Errorf("message %d: %+v, want acknowledged", i, a)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	if n := checkOutcomes(t, ctx, s, acks, body); n != 3*per {
		t.Fatalf("%d reported stored", n)
	}
	// The lost ones are stored: their outcome was unknown, not a failure.
	testenv.Eventually(t, 5*time.Second, stored(4*per), "every message stored")
	// Settled once each: a second settle would have taken left below zero.
	if left := b.left.Load(); left != 0 {
		t.Fatalf("left %d after Wait", left)
	}
}

// A reconnect fails only messages written on the connection lost: one
// published while the client was away (sent from the reconnect buffer)
// or after it came back is never taken for lost, however long its
// acknowledgement takes (here none comes: a subscriber that never
// answers), and ends with ErrAckTimeout at the stall timeout.
func TestReconnectFailsOnlyMessagesWrittenBefore(t *testing.T) {
	srv := testenv.StartNATS(t)
	direct := srv.Connect(t)
	mute, err := direct.Subscribe("mute.>", func(*nats.Msg) {})
	if err != nil {
		t.Fatal(err)
	}
	defer mute.Unsubscribe()
	if err := direct.Flush(); err != nil {
		t.Fatal(err)
	}
	l, client := linkedClient(t, srv)
	const stall = 6 * time.Second
	p := New(client, 0, stall)
	defer p.Close()
	b, err := p.NewBatch(3)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	publish := func(i int) {
		t.Helper()
		if err := b.Publish(ctx, i, &nats.Msg{Subject: "mute.x", Data: []byte("x")}); err != nil {
			t.Fatal(err)
		}
	}
	publish(0) // on the connection lost
	if err := client.Flush(); err != nil {
		t.Fatal(err)
	}
	l.Cut(true)
	testenv.Eventually(t, 5*time.Second, func() bool { return !client.IsConnected() }, "client sees the cut")
	publish(1) // buffered
	l.Cut(false)
	testenv.Eventually(t, 5*time.Second, client.IsConnected, "client reconnected")
	publish(2) // on the new connection
	testenv.Eventually(t, stall-time.Second, func() bool { _, ok := b.Settled(0); return ok }, "the lost one fails before the stall")
	acks := b.Wait(ctx)
	if !errors.Is(acks[0].Err, ErrAckLost) || acks[0].Unsent {
		t.Errorf("message written before the cut: %+v, want ErrAckLost", acks[0])
	}
	for i := 1; i < 3; i++ {
		if !errors.Is(acks[i].Err, ErrAckTimeout) || acks[i].Unsent {
			t.Errorf("message %d, written after the cut: %+v, want ErrAckTimeout", i, acks[i])
		}
	}
}

// epoch counts a status change nats.go has queued and watch not taken
// yet (the publish that follows it is on the new connection), and is
// uncertain while watch takes changes.
func TestEpochCountsChangesNotTakenYet(t *testing.T) {
	p := &Publisher{status: make(chan nats.Status, 10)}
	if e := p.epoch(); e != 1 {
		t.Fatalf("epoch %d with no change, want 1", e)
	}
	p.status <- nats.RECONNECTING
	p.status <- nats.CONNECTED
	if e := p.epoch(); e != 3 {
		t.Fatalf("epoch %d with two changes queued, want 3", e)
	}
	<-p.status
	p.gen.Add(1) // watch took one and has not counted it
	if e := p.epoch(); e != uncertain {
		t.Fatalf("epoch %d while watch counts, want uncertain", e)
	}
	p.events.Add(1)
	p.gen.Add(1)
	if e := p.epoch(); e != 3 {
		t.Fatalf("epoch %d after watch counted, want 3", e)
	}
}

// A connection closed for good (nats.go gave up reconnecting, or its
// owner closed it) fails the outstanding messages at once with ErrAckLost:
// no acknowledgement can come any more, and the batch need not wait the
// stall timeout.
func TestClosedConnectionFailsOutstandingAtOnce(t *testing.T) {
	srv := testenv.StartNATS(t)
	mute := srv.Connect(t) // receives, never answers
	if _, err := mute.Subscribe("mute.closed", func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	if err := mute.Flush(); err != nil {
		t.Fatal(err)
	}
	client := srv.Connect(t)
	const stall = 10 * time.Second
	p := New(client, 0, stall)
	defer p.Close()
	b, err := p.NewBatch(3)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := range 3 {
		if err := b.Publish(ctx, i, &nats.Msg{Subject: "mute.closed", Data: []byte("x")}); err != nil {
			t.Fatal(err)
		}
	}
	if err := client.Flush(); err != nil {
		t.Fatal(err)
	}
	closed := time.Now()
	client.Close()
	acks := b.Wait(ctx)
	if took := time.Since(closed); took > stall/2 {
		t.Fatalf("Wait returned %v after the connection closed, want at once", took)
	}
	for i, a := range acks {
		if !errors.Is(a.Err, ErrAckLost) || a.Unsent {
			t.Errorf("message %d: %+v, want ErrAckLost", i, a)
		}
	}
}
