package jspub

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/connector-go/connector/internal/testenv"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// checkOutcomes: every message has an outcome (a sequence or an error),
// and every message reported stored is in the stream, with its body.
func checkOutcomes(t *testing.T, ctx context.Context, s jetstream.Stream, acks []Ack, body func(i int) string) (stored int) {
	t.Helper()
	for i, a := range acks {
		if a.Err != nil {
			continue
		}
		if a.Seq == 0 {
			t.Fatalf("message %d has no outcome: %+v", i, a)
		}
		m, err := s.GetMsg(ctx, a.Seq)
		if err != nil || string(m.Data) != body(i) {
			t.Fatalf("message %d reported stored at %d: %v %q", i, a.Seq, err, m.Data)
		}
		stored++
	}
	return stored
}

// A batch in which some messages fail (one over the server's max payload,
// some beyond the stream's max msgs with DiscardNew) reports each failure
// on its own message; every other one is stored.
func TestBatchSomeMessagesFail(t *testing.T) {
	srv := testenv.StartNATS(t, func(o *server.Options) { o.MaxPayload = 1024 })
	nc := srv.Connect(t)
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	s, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "F", Subjects: []string{"f.>"}, MaxMsgs: 5, Discard: jetstream.DiscardNew})
	if err != nil {
		t.Fatal(err)
	}
	p := New(nc, 2, 0)
	defer p.Close()
	const n = 9
	b, err := p.NewBatch(n)
	if err != nil {
		t.Fatal(err)
	}
	body := func(i int) string {
		if i == 2 {
			return string(make([]byte, 2048))
		}
		return fmt.Sprint(i)
	}
	for i := 0; i < n; i++ {
		err := b.Publish(ctx, i, &nats.Msg{Subject: "f.x", Data: []byte(body(i))})
		if (i == 2) != (err != nil) {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	acks := b.Wait(ctx)
	if !errors.Is(acks[2].Err, nats.ErrMaxPayload) {
		t.Fatalf("oversized message: %+v", acks[2])
	}
	var full int
	for i, a := range acks {
		var apiErr *jetstream.APIError
		if errors.As(a.Err, &apiErr) && apiErr.ErrorCode == 10077 {
			full++
			if i < 6 {
				t.Errorf("message %d refused though the stream had room: %+v", i, a)
			}
		}
	}
	stored := checkOutcomes(t, ctx, s, acks, body)
	info, _ := s.Info(ctx)
	if stored != 5 || full != 3 || info.State.Msgs != 5 {
		t.Fatalf("stored %d, refused %d, in stream %d: %+v", stored, full, info.State.Msgs, acks)
	}
}

// A batch across a lost connection (the server restarts mid-batch, some
// messages published while it is down) ends with every message
// acknowledged or failed, and none reported stored that is not.
func TestBatchAcrossADisconnect(t *testing.T) {
	srv := testenv.StartNATS(t)
	port := srv.Server.Addr().(*net.TCPAddr).Port
	nc := srv.Connect(t, nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond))
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "D", Subjects: []string{"d.>"}}); err != nil {
		t.Fatal(err)
	}
	p := New(nc, 64, 2*time.Second)
	defer p.Close()
	const n = 3000
	b, err := p.NewBatch(n)
	if err != nil {
		t.Fatal(err)
	}
	body := func(i int) string { return fmt.Sprint("m", i) }
	restarted := make(chan *server.Server, 1)
	restart := func() *server.Server {
		opts := *srv.Opts
		opts.Port = port
		ns, err := server.NewServer(&opts)
		if err != nil {
			return nil
		}
		go ns.Start()
		ns.ReadyForConnections(10 * time.Second)
		return ns
	}
	start := time.Now()
	for i := 0; i < n; i++ {
		if i == n/3 {
			// Down for less than the stall timeout: publishing goes on
			// into the reconnect buffer, then to the restarted server.
			srv.Server.Shutdown()
			srv.Server.WaitForShutdown()
			testenv.Eventually(t, 5*time.Second, func() bool { return !nc.IsConnected() }, "client sees the disconnect")
			go func() {
				time.Sleep(300 * time.Millisecond) // the outage
				restarted <- restart()
			}()
		}
		_ = b.Publish(ctx, i, &nats.Msg{Subject: "d.x", Data: []byte(body(i))})
	}
	acks := b.Wait(ctx)
	if took := time.Since(start); took > 30*time.Second {
		t.Fatalf("batch took %s", took)
	}
	ns := <-restarted
	if ns == nil {
		t.Fatal("server did not restart")
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	testenv.Eventually(t, 10*time.Second, nc.IsConnected, "client reconnected")
	s, err := js.Stream(ctx, "D")
	if err != nil {
		t.Fatal(err)
	}
	stored := checkOutcomes(t, ctx, s, acks, body)
	info, _ := s.Info(ctx)
	t.Logf("%d reported stored, %d in the stream, in %s", stored, info.State.Msgs, time.Since(start))
	if uint64(stored) > info.State.Msgs {
		t.Fatalf("%d reported stored, %d in the stream", stored, info.State.Msgs)
	}
}

// A context cancelled mid-batch (window full, acknowledgements slow)
// ends the batch at once: every message has an outcome, later messages
// are not published, and those reported stored are stored.
func TestBatchCancelledMidway(t *testing.T) {
	_, nc, js := testenv.JetStream(t)
	ctx := context.Background()
	s, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "X", Subjects: []string{"x.>"}})
	if err != nil {
		t.Fatal(err)
	}
	// "x.mute" reaches the stream and a subscriber that never answers: the
	// server acknowledges it, "mute.x" is never acknowledged.
	mute, err := nc.Subscribe("mute.>", func(*nats.Msg) {})
	if err != nil {
		t.Fatal(err)
	}
	defer mute.Unsubscribe()
	p := New(nc, 4, time.Minute)
	defer p.Close()
	const n = 100
	b, err := p.NewBatch(n)
	if err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	body := func(i int) string { return fmt.Sprint(i) }
	errc := make(chan error, 1)
	go func() {
		var first error
		for i := 0; i < n; i++ {
			subj := "x.ok"
			if i%10 == 9 {
				subj = "mute.x"
			}
			if err := b.Publish(cctx, i, &nats.Msg{Subject: subj, Data: []byte(body(i))}); err != nil && first == nil {
				first = err
			}
		}
		errc <- first
	}()
	testenv.Eventually(t, 5*time.Second, func() bool {
		buf := make([]byte, 1<<20)
		return bytes.Contains(buf[:runtime.Stack(buf, true)], []byte("jspub.(*Batch).waitRoom"))
	}, "publisher waiting for room")
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("publish after cancel: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Publish still blocked after cancel")
	}
	start := time.Now()
	acks := b.Wait(cctx)
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("Wait after cancel took %s", took)
	}
	checkOutcomes(t, ctx, s, acks, body)
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	info, _ := s.Info(ctx)
	if info.State.Msgs >= n-n/10 {
		t.Fatalf("%d stored: publishing went on after the cancel", info.State.Msgs)
	}
	for i, a := range acks {
		if a.Err == nil && a.Seq == 0 {
			t.Fatalf("message %d without an outcome", i)
		}
	}
}

// A Publisher leaves no goroutine behind once closed, whatever its
// batches met: acknowledgements, refusals, no responders (retried),
// stalls, cancellations.
func TestPublisherLeavesNoGoroutine(t *testing.T) {
	_, nc, js := testenv.JetStream(t)
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "G", Subjects: []string{"g.>"}, MaxMsgs: 10, Discard: jetstream.DiscardNew}); err != nil {
		t.Fatal(err)
	}
	mute, err := nc.Subscribe("mute.>", func(*nats.Msg) {})
	if err != nil {
		t.Fatal(err)
	}
	defer mute.Unsubscribe()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	before := runtime.NumGoroutine()
	for round := 0; round < 3; round++ {
		p := New(nc, 4, 200*time.Millisecond)
		for _, subj := range []string{"g.x", "nostream.x", "mute.x"} {
			b, err := p.NewBatch(20)
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 20; i++ {
				_ = b.Publish(ctx, i, &nats.Msg{Subject: subj, Data: []byte("x")})
			}
			b.Wait(ctx)
		}
		cctx, cancel := context.WithCancel(ctx)
		b, _ := p.NewBatch(20)
		for i := 0; i < 20; i++ {
			if i == 10 {
				cancel()
			}
			_ = b.Publish(cctx, i, &nats.Msg{Subject: "mute.x", Data: []byte("x")})
		}
		b.Wait(cctx)
		cancel()
		if err := p.Close(); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines, %d before:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}
