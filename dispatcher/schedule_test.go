package dispatcher_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/connector-go/connector/job"
	"github.com/nats-io/nats.go/jetstream"
)

// registered reads a periodic schedule's message (nil when there is none).
func (e *genv) registered(name string) *jetstream.RawStreamMsg {
	e.t.Helper()
	ctx := context.Background()
	s, err := e.js.Stream(ctx, e.names.JobsStream())
	if err != nil {
		e.t.Fatal(err)
	}
	m, err := s.GetLastMsgForSubject(ctx, e.names.PeriodicSubject(name))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil
	}
	if err != nil {
		e.t.Fatal(err)
	}
	return m
}

// Calling Schedule again with the same arguments and options is a no-op:
// the schedule stays as registered (an "@every" schedule keeps its
// period, not restarted by each worker's start-up), though its retry
// pattern has several steps and its arguments hold maps, which Go
// iterates in random order.
func TestScheduleAgainIsANoOp(t *testing.T) {
	e := newGenv(t)
	ctx := context.Background()
	pattern := job.RetryPattern{}
	for i := 1; i <= 8; i++ {
		pattern[i] = time.Duration(i) * time.Second
	}
	register := func() {
		t.Helper()
		if err := e.d.Schedule(ctx, "beat", "@every 1h", writeFields(), job.WithRetryPattern(pattern),
			job.WithHeader("X-Tenant", "acme"), job.WithHeader("X-Region", "eu")); err != nil {
			t.Fatal(err)
		}
	}
	register()
	first := e.registered("beat")
	for i := range 6 {
		register()
		if cur := e.registered("beat"); cur.Sequence != first.Sequence {
			t.Fatalf("call %d of Schedule with the same arguments replaced the schedule (seq %d -> %d)", i+2, first.Sequence, cur.Sequence)
		}
	}
}

// Extra headers (job.WithHeader) go on the schedule message, whose
// headers the server copies into each firing, as Enqueue puts them on the
// job's; registering the schedule with other headers replaces it.
func TestScheduleKeepsHeaders(t *testing.T) {
	e := newGenv(t)
	ctx := context.Background()
	schedule := func(opts ...job.Option) {
		t.Helper()
		if err := e.d.Schedule(ctx, "tenant", "@every 1h", Bulk{N: 2}, opts...); err != nil {
			t.Fatal(err)
		}
	}
	schedule(job.WithHeader("X-Tenant", "acme"))
	m := e.registered("tenant")
	if got := m.Header.Get("X-Tenant"); got != "acme" {
		t.Fatalf("schedule message header X-Tenant = %q, want \"acme\" (headers %v)", got, m.Header)
	}
	// The schedule's own headers are not the caller's to change: refused.
	if err := e.d.Schedule(ctx, "tenant", "@every 1h", Bulk{N: 2}, job.WithHeader("X-Tenant", "acme"),
		job.WithHeader("Nats-Schedule", "@every 1s")); err == nil {
		t.Fatal("Schedule with a Nats-Schedule header of the caller's succeeded")
	}
	if m = e.registered("tenant"); m.Header.Get("Nats-Schedule") != "@every 1h" {
		t.Fatalf("Nats-Schedule = %q, want the spec", m.Header.Get("Nats-Schedule"))
	}
	for _, tc := range []struct {
		opts []job.Option
		want string
	}{
		{[]job.Option{job.WithHeader("X-Tenant", "other")}, "other"},
		{nil, ""},
	} {
		before := m.Sequence
		schedule(tc.opts...)
		if m = e.registered("tenant"); m.Sequence == before || m.Header.Get("X-Tenant") != tc.want {
			t.Fatalf("registered with X-Tenant %q: seq %d -> %d, header %v", tc.want, before, m.Sequence, m.Header)
		}
	}
}

// Unschedule takes a schedule name, checked as Schedule checks it: a name
// that is a subject wildcard is refused, not taken to purge every periodic
// schedule of the deployment.
func TestUnscheduleRefusesAWildcard(t *testing.T) {
	e := newGenv(t)
	ctx := context.Background()
	for _, name := range []string{"a", "b"} {
		if err := e.d.Schedule(ctx, name, "@every 1h", Bulk{N: 3}); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{">", "*", "a.>", ""} {
		if err := e.d.Unschedule(ctx, name); err == nil {
			t.Errorf("Unschedule(%q) succeeded", name)
		}
	}
	for _, name := range []string{"a", "b"} {
		if e.registered(name) == nil {
			t.Errorf("schedule %s removed", name)
		}
	}
	if err := e.d.Unschedule(ctx, "a"); err != nil || e.registered("a") != nil || e.registered("b") == nil {
		t.Fatalf("Unschedule(\"a\") = %v", err)
	}
}
