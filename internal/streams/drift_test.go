package streams_test

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/connector-go/connector/internal/streams"
	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/internal/wire"
	"github.com/nats-io/nats.go/jetstream"
)

// A fleet rolling out provisions the same streams at once, each process on
// its own connection: none fails because another created a stream first,
// and the streams end as one provisioning alone makes them.
func TestEnsureConcurrently(t *testing.T) {
	s := testenv.StartNATS(t)
	ctx := context.Background()
	for round := 0; round < 5; round++ {
		cfg := streams.Config{Names: wire.MustNames(testenv.Prefix(t))}
		const n = 8
		var wg sync.WaitGroup
		errs := make([]error, n)
		start := make(chan struct{})
		for i := 0; i < n; i++ {
			js, err := jetstream.New(s.Connect(t))
			if err != nil {
				t.Fatal(err)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				errs[i] = streams.Ensure(ctx, js, cfg)
			}()
		}
		close(start)
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("round %d, process %d: %v", round, i, err)
			}
		}
		js, _ := jetstream.New(s.Connect(t))
		for _, want := range []jetstream.StreamConfig{streams.Jobs(cfg), streams.Dead(cfg), streams.Events(cfg)} {
			st, err := js.Stream(ctx, want.Name)
			if err != nil {
				t.Fatal(err)
			}
			c := st.CachedInfo().Config
			if c.Retention != want.Retention || c.AllowMsgSchedules != want.AllowMsgSchedules || c.MaxAge != want.MaxAge || len(c.Subjects) != len(want.Subjects) {
				t.Fatalf("%s after concurrent provisioning: %+v", want.Name, c)
			}
		}
	}
}

// racingCreator is a JetStream on which another process (an older
// version, or one with other settings) creates each stream just after
// this process found it missing: the interleaving of a rolling upgrade.
type racingCreator struct {
	jetstream.JetStream
	other func(name string) *jetstream.StreamConfig
	once  sync.Map
}

func (r *racingCreator) Stream(ctx context.Context, name string) (jetstream.Stream, error) {
	if oc := r.other(name); oc != nil {
		if _, loaded := r.once.LoadOrStore(name, true); !loaded {
			// Not there when this process looks...
			if _, err := r.JetStream.CreateStream(ctx, *oc); err != nil {
				return nil, err
			}
			// ...created by the other one right after.
			return nil, jetstream.ErrStreamNotFound
		}
	}
	return r.JetStream.Stream(ctx, name)
}

func (r *racingCreator) CreateOrUpdateStream(ctx context.Context, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	if raced, _ := r.once.Swap(cfg.Name, false); raced == true {
		// The update found no stream (the other process had not created
		// it yet); the create then meets the other process's stream.
		return r.JetStream.CreateStream(ctx, cfg)
	}
	return r.JetStream.CreateOrUpdateStream(ctx, cfg)
}

// A process that loses the creation race to an older version (here: a
// jobs stream without message schedules and its schedule subjects) must
// not run silently on that stream: it updates it as it would have
// created it.
func TestEnsureAfterLosingTheCreationRace(t *testing.T) {
	_, _, js := testenv.JetStream(t)
	ctx := context.Background()
	cfg := streams.Config{Names: wire.MustNames(testenv.Prefix(t))}
	old := streams.Jobs(cfg)
	old.AllowMsgSchedules = false
	old.Subjects = old.Subjects[:1]
	r := &racingCreator{JetStream: js, other: func(name string) *jetstream.StreamConfig {
		if name == old.Name {
			return &old
		}
		return nil
	}}
	if err := streams.Ensure(ctx, r, cfg); err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(ctx, old.Name)
	if err != nil {
		t.Fatal(err)
	}
	if c := st.CachedInfo().Config; !c.AllowMsgSchedules || len(c.Subjects) != 2 {
		t.Fatalf("jobs stream left as the other process made it: schedules %v, subjects %v", c.AllowMsgSchedules, c.Subjects)
	}
}

// A jobs stream made by hand without publish acknowledgements (NoAck)
// would fail every bulk enqueue after its stall timeout: provisioning
// turns acknowledgements back on.
func TestEnsureTurnsAcknowledgementsOn(t *testing.T) {
	_, _, js := testenv.JetStream(t)
	ctx := context.Background()
	cfg := streams.Config{Names: wire.MustNames(testenv.Prefix(t))}
	hand := streams.Jobs(cfg)
	hand.NoAck = true
	st, err := js.CreateStream(ctx, hand)
	if err != nil {
		t.Fatal(err)
	}
	if err := streams.Ensure(ctx, js, cfg); err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.NoAck {
		t.Fatal("jobs stream left without publish acknowledgements")
	}
	if _, err := js.Publish(ctx, cfg.Names.JobsSubject("root", 1), []byte("acked")); err != nil {
		t.Fatal(err)
	}
}

// A jobs stream made by an older version (R1, no message schedules, no
// schedule subjects, a max age) is updated in place, its messages kept.
func TestEnsureUpgradesAnOlderJobsStream(t *testing.T) {
	_, _, js := testenv.JetStream(t)
	ctx := context.Background()
	cfg := streams.Config{Names: wire.MustNames(testenv.Prefix(t))}
	old := streams.Jobs(cfg)
	old.AllowMsgSchedules, old.Subjects, old.MaxAge, old.Duplicates = false, old.Subjects[:1], 0, 0
	st, err := js.CreateStream(ctx, old)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, cfg.Names.JobsSubject("root", 1), []byte("kept")); err != nil {
		t.Fatal(err)
	}
	if err := streams.Ensure(ctx, js, cfg); err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if c := info.Config; !c.AllowMsgSchedules || len(c.Subjects) != 2 || c.Retention != jetstream.WorkQueuePolicy {
		t.Fatalf("not upgraded: %+v", c)
	}
	if info.State.Msgs != 1 {
		t.Fatalf("%d messages after the upgrade, want 1", info.State.Msgs)
	}
}

// Settings the server refuses to change (a jobs stream made by hand with
// limits retention, a stream on memory storage when file is configured,
// replicas a single server cannot have) fail the start with an error that
// names the stream and the setting, and says what to do; the stream and
// its messages are left as they were.
func TestEnsureRefusesWhatTheServerCannotChange(t *testing.T) {
	for _, c := range []struct {
		name    string
		mutate  func(*jetstream.StreamConfig, *streams.Config)
		mention []string
	}{
		{"limits retention", func(sc *jetstream.StreamConfig, _ *streams.Config) { sc.Retention = jetstream.LimitsPolicy }, []string{"retention", "workqueue", "recreate"}},
		{"memory storage", func(sc *jetstream.StreamConfig, _ *streams.Config) { sc.Storage = jetstream.MemoryStorage }, []string{"storage", "file", "recreate"}},
		{"deny purge (schedules are cancelled by purging)", func(sc *jetstream.StreamConfig, _ *streams.Config) {
			// (the server clears deny purge on a stream with message schedules)
			sc.DenyPurge, sc.AllowMsgSchedules = true, false
		}, []string{"deny purge", "recreate"}},
		{"deny delete", func(sc *jetstream.StreamConfig, _ *streams.Config) { sc.DenyDelete = true }, []string{"deny delete", "recreate"}},
		{"replicas on one server", func(_ *jetstream.StreamConfig, c *streams.Config) { c.Replicas = 3 }, []string{"replicas"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, _, js := testenv.JetStream(t)
			ctx := context.Background()
			cfg := streams.Config{Names: wire.MustNames(testenv.Prefix(t))}
			hand := streams.Jobs(cfg)
			c.mutate(&hand, &cfg)
			st, err := js.CreateStream(ctx, hand)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := js.Publish(ctx, cfg.Names.JobsSubject("root", 1), []byte("kept")); err != nil {
				t.Fatal(err)
			}
			err = streams.Ensure(ctx, js, cfg)
			if err == nil {
				t.Fatal("Ensure accepted a jobs stream it cannot fix")
			}
			t.Logf("%v", err)
			msg := strings.ToLower(err.Error())
			for _, w := range append(c.mention, strings.ToLower(hand.Name)) {
				if !strings.Contains(msg, w) {
					t.Errorf("error does not mention %q: %v", w, err)
				}
			}
			if strings.Contains(msg, "nats-server >= 2.12") {
				t.Errorf("error blames the server version: %v", err)
			}
			info, err := st.Info(ctx)
			if err != nil || info.State.Msgs != 1 || info.Config.Retention != hand.Retention || info.Config.Storage != hand.Storage {
				t.Fatalf("stream changed: %v %+v", err, info)
			}
		})
	}
}
