package jspub

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/connector-go/connector/internal/testenv"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Every message of a batch larger than the window is stored once, and its
// Ack carries the sequence the stream gave it.
func TestBatchStoresAllWithSequences(t *testing.T) {
	_, nc, js := testenv.JetStream(t)
	ctx := context.Background()
	s, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "P", Subjects: []string{"p.>"}})
	if err != nil {
		t.Fatal(err)
	}
	p := New(nc, 64, 0)
	defer p.Close()
	const n = 1000
	b, err := p.NewBatch(n)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		if err := b.Publish(ctx, i, &nats.Msg{Subject: "p.x", Data: []byte(fmt.Sprint(i))}); err != nil {
			t.Fatal(err)
		}
	}
	acks := b.Wait(ctx)
	seen := map[uint64]bool{}
	for i, a := range acks {
		if a.Err != nil || a.Seq == 0 || seen[a.Seq] {
			t.Fatalf("ack %d: %+v", i, a)
		}
		seen[a.Seq] = true
		m, err := s.GetMsg(ctx, a.Seq)
		if err != nil || string(m.Data) != fmt.Sprint(i) {
			t.Fatalf("message %d at seq %d: %v %q", i, a.Seq, err, m.Data)
		}
	}
	if info, _ := s.Info(ctx); info.State.Msgs != n {
		t.Fatalf("%d messages stored", info.State.Msgs)
	}
}

// A message no stream takes fails with ErrNoStreamResponse (after the
// retries a leader election deserves); a message the stream refuses fails
// with the stream's error; the others of the batch are stored.
func TestBatchPerMessageErrors(t *testing.T) {
	_, nc, js := testenv.JetStream(t)
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "Q", Subjects: []string{"q.>"}, MaxMsgSize: 100}); err != nil {
		t.Fatal(err)
	}
	p := New(nc, 0, 0)
	defer p.Close()
	b, err := p.NewBatch(3)
	if err != nil {
		t.Fatal(err)
	}
	msgs := []*nats.Msg{
		{Subject: "q.ok", Data: []byte("fine")},
		{Subject: "nostream.x", Data: []byte("lost?")},
		{Subject: "q.big", Data: make([]byte, 500)},
	}
	for i, m := range msgs {
		if err := b.Publish(ctx, i, m); err != nil {
			t.Fatal(err)
		}
	}
	acks := b.Wait(ctx)
	if acks[0].Err != nil || acks[0].Seq != 1 {
		t.Fatalf("ok message: %+v", acks[0])
	}
	if !errors.Is(acks[1].Err, jetstream.ErrNoStreamResponse) {
		t.Fatalf("no stream: %+v", acks[1])
	}
	var apiErr *jetstream.APIError
	if !errors.As(acks[2].Err, &apiErr) || apiErr.Code == 0 {
		t.Fatalf("too large: %+v", acks[2])
	}
}

// A batch whose acknowledgements stop coming fails its outstanding
// messages with ErrAckTimeout, and a cancelled context with its error,
// rather than wait for ever.
func TestBatchStallAndCancel(t *testing.T) {
	_, nc, js := testenv.JetStream(t)
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "R", Subjects: []string{"r.>"}}); err != nil {
		t.Fatal(err)
	}
	// Nothing answers on "mute.>" but a plain subscriber that never replies:
	// the publish has a responder, so no 503, and no acknowledgement.
	mute, err := nc.Subscribe("mute.>", func(*nats.Msg) {})
	if err != nil {
		t.Fatal(err)
	}
	defer mute.Unsubscribe()
	p := New(nc, 2, 300*time.Millisecond)
	defer p.Close()
	b, _ := p.NewBatch(4)
	start := time.Now()
	var errs []error
	for i := 0; i < 4; i++ {
		errs = append(errs, b.Publish(ctx, i, &nats.Msg{Subject: "mute.x", Data: []byte("x")}))
	}
	if errs[0] != nil || errs[1] != nil {
		// The window's first two went out without waiting for any
		// acknowledgement: publishing is pipelined.
		t.Fatalf("publishes within the window: %v", errs)
	}
	acks := b.Wait(ctx)
	if time.Since(start) > 10*time.Second {
		t.Fatalf("stall took %s", time.Since(start))
	}
	for i, a := range acks {
		if !errors.Is(a.Err, ErrAckTimeout) {
			t.Fatalf("ack %d: %+v (publish: %v)", i, a, errs)
		}
	}

	cctx, cancel := context.WithCancel(ctx)
	b2, _ := p.NewBatch(2)
	_ = b2.Publish(cctx, 0, &nats.Msg{Subject: "mute.y", Data: []byte("y")})
	_ = b2.Publish(cctx, 1, &nats.Msg{Subject: "r.y", Data: []byte("y")})
	cancel()
	acks = b2.Wait(cctx)
	if !errors.Is(acks[0].Err, context.Canceled) {
		t.Fatalf("cancelled: %+v", acks[0])
	}
}

func TestParseAck(t *testing.T) {
	for in, want := range map[string]uint64{
		`{"stream":"S","seq":1}`:                                   1,
		`{"stream":"S","domain":"hub","seq":18446744073709551615}`: 18446744073709551615,
		`{"stream":"S", "seq": 42,"duplicate":true}`:               42,
	} {
		if got, err := ParseAck([]byte(in)); err != nil || got != want {
			t.Errorf("%s: %d %v", in, got, err)
		}
	}
	for _, bad := range []string{``, `{}`, `{"stream":"S"}`, `{"stream":"S","seq":}`, `{"seq":3}`, `{"stream":"S","seq":123456789012345678901}`} {
		if _, err := ParseAck([]byte(bad)); !errors.Is(err, jetstream.ErrInvalidJSAck) {
			t.Errorf("%q: %v", bad, err)
		}
	}
	_, err := ParseAck([]byte(`{"error":{"code":503,"err_code":10077,"description":"maximum messages exceeded"}}`))
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) || apiErr.ErrorCode != 10077 {
		t.Fatalf("error ack: %v", err)
	}
}

// A batch larger than its window whose acknowledgements stop fails within
// about one stall timeout, not one stall timeout per message beyond the
// window (a 10k-job EnqueueMany would wait 30 s per job: days).
func TestBatchStallFailsTheRestAtOnce(t *testing.T) {
	_, nc, _ := testenv.JetStream(t)
	ctx := context.Background()
	mute, err := nc.Subscribe("mute.>", func(*nats.Msg) {})
	if err != nil {
		t.Fatal(err)
	}
	defer mute.Unsubscribe()
	const stall = 200 * time.Millisecond
	p := New(nc, 2, stall)
	defer p.Close()
	const n = 40
	b, _ := p.NewBatch(n)
	start := time.Now()
	for i := 0; i < n; i++ {
		_ = b.Publish(ctx, i, &nats.Msg{Subject: "mute.x", Data: []byte("x")})
	}
	acks := b.Wait(ctx)
	if took := time.Since(start); took > 10*stall {
		t.Fatalf("a stalled batch of %d (window 2, stall %s) took %s to fail", n, stall, took)
	}
	for i, a := range acks {
		if !errors.Is(a.Err, ErrAckTimeout) {
			t.Fatalf("ack %d: %+v", i, a)
		}
	}
}

// A batch still publishing when its Publisher is closed (a Dispatcher
// closed at shutdown during a bulk enqueue) fails the rest of its messages
// with ErrClosed at once, without publishing them: they could never be
// acknowledged, and Wait would otherwise hang for the stall timeout and
// report stored messages as lost.
func TestPublishAfterCloseFailsAtOnce(t *testing.T) {
	_, nc, js := testenv.JetStream(t)
	ctx := context.Background()
	s, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "C", Subjects: []string{"c.>"}})
	if err != nil {
		t.Fatal(err)
	}
	p := New(nc, 0, 5*time.Second)
	b, err := p.NewBatch(2)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(ctx, 0, &nats.Msg{Subject: "c.x", Data: []byte("0")}); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(ctx, 1, &nats.Msg{Subject: "c.x", Data: []byte("1")}); !errors.Is(err, ErrClosed) {
		t.Fatalf("publish after close: %v", err)
	}
	start := time.Now()
	acks := b.Wait(ctx)
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("Wait after Close took %s", took)
	}
	if !errors.Is(acks[1].Err, ErrClosed) {
		t.Fatalf("ack 1: %+v", acks[1])
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if info, _ := s.Info(ctx); info.State.Msgs > 1 {
		t.Fatalf("%d messages stored: the one published after Close went out", info.State.Msgs)
	}
}

// Closing a Publisher while its first batch subscribes is safe, and a
// batch asked for after Close leaves no subscription behind.
func TestCloseRacesFirstBatch(t *testing.T) {
	_, nc, _ := testenv.JetStream(t)
	for i := 0; i < 20; i++ {
		p := New(nc, 0, 0)
		done := make(chan struct{})
		go func() {
			defer close(done)
			if b, err := p.NewBatch(1); err == nil {
				b.Wait(context.Background())
			}
		}()
		_ = p.Close()
		<-done
	}
	p := New(nc, 0, 0)
	_ = p.Close()
	before := nc.NumSubscriptions()
	if _, err := p.NewBatch(1); !errors.Is(err, ErrClosed) {
		t.Fatalf("NewBatch after Close: %v", err)
	}
	if n := nc.NumSubscriptions(); n != before {
		t.Fatalf("NewBatch after Close left %d subscriptions (before: %d)", n, before)
	}
}

// A Publish waiting for room in a full window when the Publisher is closed
// fails with ErrClosed without publishing: Close's abort frees the window,
// and the message would go out with no one left to read its
// acknowledgement.
func TestPublishWaitingForRoomWhenClosed(t *testing.T) {
	_, nc, _ := testenv.JetStream(t)
	ctx := context.Background()
	var got atomic.Int64
	mute, err := nc.Subscribe("mute.>", func(*nats.Msg) { got.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	defer mute.Unsubscribe()
	p := New(nc, 1, time.Minute)
	b, err := p.NewBatch(2)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(ctx, 0, &nats.Msg{Subject: "mute.x", Data: []byte("0")}); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- b.Publish(ctx, 1, &nats.Msg{Subject: "mute.x", Data: []byte("1")}) }()
	testenv.Eventually(t, 5*time.Second, func() bool { return got.Load() == 1 }, "first message delivered")
	testenv.Eventually(t, 5*time.Second, func() bool {
		buf := make([]byte, 1<<20)
		return strings.Contains(string(buf[:runtime.Stack(buf, true)]), "jspub.(*Batch).waitRoom")
	}, "second Publish waiting for room in the full window")
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("publish waiting for room, then closed: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Publish still blocked after Close")
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if n := got.Load(); n != 1 {
		t.Fatalf("%d messages went out, want 1 (none after Close)", n)
	}
}
