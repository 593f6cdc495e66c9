package streams_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/connector-go/connector/internal/streams"
	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/internal/wire"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func TestEnsureIsIdempotent(t *testing.T) {
	_, _, js := testenv.JetStream(t)
	ctx := context.Background()
	cfg := streams.Config{Names: wire.MustNames(testenv.Prefix(t))}
	for i := 0; i < 2; i++ {
		if err := streams.Ensure(ctx, js, cfg); err != nil {
			t.Fatalf("ensure #%d: %v", i, err)
		}
	}
	if err := streams.Check(ctx, js, cfg.Names); err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(ctx, cfg.Names.JobsStream())
	if err != nil {
		t.Fatal(err)
	}
	if got := s.CachedInfo().Config.Retention; got != jetstream.WorkQueuePolicy {
		t.Fatalf("jobs retention = %v", got)
	}
}

// The retry and ETA design rests on message schedules: a schedule on
// <prefix>.sched.<id> fires once into the jobs subject, keeps our headers,
// and is purged. This test pins that behaviour of the server we embed.
func TestScheduleFiresIntoJobsSubject(t *testing.T) {
	_, nc, js := testenv.JetStream(t)
	ctx := context.Background()
	n := wire.MustNames(testenv.Prefix(t))
	cfg := streams.Config{Names: n}
	if err := streams.Ensure(ctx, js, cfg); err != nil {
		t.Fatal(err)
	}
	_ = nc
	cons, err := js.CreateOrUpdateConsumer(ctx, n.JobsStream(), jetstream.ConsumerConfig{
		Durable: "w", FilterSubject: n.JobsWildcard(), AckPolicy: jetstream.AckExplicitPolicy,
	})
	if err != nil {
		t.Fatal(err)
	}
	at := time.Now().Add(1200 * time.Millisecond)
	m := nats.NewMsg(n.ScheduleSubject("job1"))
	m.Header.Set(wire.HeaderSchedule, "@at "+at.UTC().Format(time.RFC3339Nano))
	m.Header.Set(wire.HeaderSchTarget, n.JobsSubject("root", 1))
	m.Header["traceparent"] = []string{"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
	m.Data = []byte("payload")
	if _, err := js.PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}
	var got jetstream.Msg
	for got == nil {
		b, err := cons.Fetch(1, jetstream.FetchMaxWait(10*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range b.Messages() {
			got = m
		}
		if b.Error() != nil {
			t.Fatal(b.Error())
		}
	}
	now := time.Now()
	if now.Before(at) {
		t.Fatalf("fired %s early", at.Sub(now))
	}
	if late := now.Sub(at); late > time.Second {
		t.Fatalf("fired %s late", late)
	}
	if string(got.Data()) != "payload" || got.Headers().Get("traceparent") == "" {
		t.Fatalf("fired message lost body or headers: %q %v", got.Data(), got.Headers())
	}
	t.Logf("fired %s after the ETA; headers %v", now.Sub(at), got.Headers())
	s, _ := js.Stream(ctx, n.JobsStream())
	testenv.Eventually(t, 5*time.Second, func() bool {
		info, err := s.Info(ctx, jetstream.WithSubjectFilter(n.ScheduleWildcard()))
		return err == nil && len(info.State.Subjects) == 0
	}, "schedule purged after firing")
}

// At start a worker waits while the streams are missing or JetStream does
// not answer yet, not on errors that waiting cannot cure.
func TestUnavailable(t *testing.T) {
	for _, c := range []struct {
		name string
		err  error
		want bool
	}{
		{"stream not provisioned yet", fmt.Errorf("streams: X_JOBS: %w", jetstream.ErrStreamNotFound), true},
		{"cluster without a meta leader", &jetstream.APIError{Code: 503, ErrorCode: 10008, Description: "JetStream system temporarily unavailable"}, true},
		{"cluster waiting for its peers", &jetstream.APIError{Code: 500, ErrorCode: 10005, Description: "no suitable peers for placement"}, true},
		{"no responders", nats.ErrNoResponders, true},
		{"replicas on a single server", &jetstream.APIError{Code: 500, ErrorCode: 10074, Description: "replicas > 1 not supported in non-clustered mode"}, false},
		{"API timeout", context.DeadlineExceeded, true},
		{"JetStream not enabled", jetstream.ErrJetStreamNotEnabled, false},
		{"bad request", &jetstream.APIError{Code: 400, ErrorCode: 10003, Description: "bad request"}, false},
		{"permissions", errors.New("nats: permissions violation for subscription"), false},
	} {
		if got := streams.Unavailable(c.err); got != c.want {
			t.Errorf("%s: Unavailable(%v) = %v, want %v", c.name, c.err, got, c.want)
		}
	}
}

// A retention shorter than the 2-minute dedup window is a valid setting
// (--dead-max-age, --events-max-age): the server refuses a duplicates
// window larger than the max age, so provisioning must shorten the window
// rather than fail, on new streams and on live ones (updated), and a
// second Ensure must find the streams unchanged.
func TestEnsureWithAShortMaxAge(t *testing.T) {
	_, _, js := testenv.JetStream(t)
	ctx := context.Background()
	names := wire.MustNames(testenv.Prefix(t))
	if err := streams.Ensure(ctx, js, streams.Config{Names: names}); err != nil {
		t.Fatal(err)
	}
	cfg := streams.Config{Names: names, DeadMaxAge: time.Minute, EventsMaxAge: 30 * time.Second}
	for i := 0; i < 2; i++ {
		if err := streams.Ensure(ctx, js, cfg); err != nil {
			t.Fatalf("ensure #%d: %v", i, err)
		}
	}
	for name, age := range map[string]time.Duration{cfg.Names.DeadStream(): time.Minute, cfg.Names.EventsStream(): 30 * time.Second} {
		s, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		c := s.CachedInfo().Config
		if c.MaxAge != age || c.Duplicates > c.MaxAge {
			t.Errorf("%s: max age %s, duplicates %s", name, c.MaxAge, c.Duplicates)
		}
	}
	if s, err := js.Stream(ctx, cfg.Names.JobsStream()); err != nil || s.CachedInfo().Config.Duplicates != 2*time.Minute {
		t.Errorf("jobs stream: %v", err)
	}
}

// A second provisioning with the same settings leaves the streams alone
// (no update: a fleet starting together would otherwise update streams
// while others create consumers on them).
func TestEnsureAgainUpdatesNothing(t *testing.T) {
	_, nc, js := testenv.JetStream(t)
	ctx := context.Background()
	cfg := streams.Config{Names: wire.MustNames(testenv.Prefix(t))}
	if err := streams.Ensure(ctx, js, cfg); err != nil {
		t.Fatal(err)
	}
	sub, err := nc.SubscribeSync("$JS.API.STREAM.UPDATE.>")
	if err != nil {
		t.Fatal(err)
	}
	if err := streams.Ensure(ctx, js, cfg); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if n, _, _ := sub.Pending(); n != 0 {
		m, _ := sub.NextMsg(time.Second)
		t.Fatalf("second Ensure sent %d stream updates (first: %s %s)", n, m.Subject, m.Data)
	}
}

// What an operator set on a stream beyond what provisioning manages (a
// dead-letter stream's size limits, compression, message TTLs) survives a
// provisioning that updates the stream (here: a new max age); before, the
// update reset them, or failed on every start (message TTLs cannot be
// turned off).
func TestEnsureKeepsTheOperatorsSettings(t *testing.T) {
	_, _, js := testenv.JetStream(t)
	ctx := context.Background()
	names := wire.MustNames(testenv.Prefix(t))
	if err := streams.Ensure(ctx, js, streams.Config{Names: names}); err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(ctx, names.DeadStream())
	if err != nil {
		t.Fatal(err)
	}
	oc := s.CachedInfo().Config
	oc.MaxBytes, oc.MaxMsgs, oc.Compression = 64<<20, 100_000, jetstream.S2Compression
	oc.AllowMsgTTL = true // (which the server refuses to turn off)
	if _, err := js.UpdateStream(ctx, oc); err != nil {
		t.Fatal(err)
	}
	if err := streams.Ensure(ctx, js, streams.Config{Names: names, DeadMaxAge: time.Hour}); err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c := info.Config
	if c.MaxAge != time.Hour {
		t.Fatalf("max age %s, want 1h", c.MaxAge)
	}
	if c.MaxBytes != 64<<20 || c.MaxMsgs != 100_000 || c.Compression != jetstream.S2Compression || !c.AllowMsgTTL {
		t.Fatalf("the operator's settings were reset: max bytes %d, max msgs %d, compression %v, message TTLs %v", c.MaxBytes, c.MaxMsgs, c.Compression, c.AllowMsgTTL)
	}
}
