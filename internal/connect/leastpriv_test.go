package connect_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/connector-go/connector/dispatcher"
	"github.com/connector-go/connector/internal/connect"
	"github.com/connector-go/connector/internal/streams"
	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/internal/wire"
)

// These helpers are the permissions documented in docs/security.md, in
// nats-server terms. They live in test code on purpose: deployments write
// them in their server configuration or account JWTs; this test proves the
// documented lists are sufficient and tight.
//
// inbox is the role's reply-subject prefix (NATSConfig.InboxPrefix);
// "_INBOX" when every role shares the default.

// ProducerPermissions: publish jobs, schedules (ETA) and events; receive
// JetStream publish acks. Nothing else: no JetStream API at all.
func ProducerPermissions(prefix, inbox string) *server.Permissions {
	return &server.Permissions{
		Publish: &server.SubjectPermission{Allow: []string{
			prefix + ".jobs.>",
			prefix + ".sched.>",
			prefix + ".events.>",
		}},
		Subscribe: &server.SubjectPermission{Allow: []string{inbox + ".>"}},
	}
}

// WorkerPermissions: check the streams, bind/create the durable
// "jobs~<channel>~<band>" consumers on the jobs stream and "ev_<listener>"
// consumers on the events stream, fetch and acknowledge, publish retries
// (schedules), follow-up jobs, events and dead letters; the consumers'
// filters grow as new channels appear (CONSUMER.CREATE updates them).
func WorkerPermissions(prefix, inbox string) *server.Permissions {
	n := wire.MustNames(prefix)
	jobs, events, dead := n.JobsStream(), n.EventsStream(), n.DeadStream()
	return &server.Permissions{
		Publish: &server.SubjectPermission{Allow: []string{
			prefix + ".jobs.>",
			prefix + ".sched.>",
			prefix + ".events.>",
			prefix + ".dead.>",
			"$JS.API.STREAM.INFO." + jobs,
			"$JS.API.STREAM.INFO." + events,
			"$JS.API.STREAM.INFO." + dead,
			// the work-queue consumers jobs~<channel>~<band>
			"$JS.API.CONSUMER.CREATE." + jobs + ".*",
			"$JS.API.CONSUMER.CREATE." + jobs + ".*.>",
			"$JS.API.CONSUMER.DURABLE.CREATE." + jobs + ".*",
			"$JS.API.CONSUMER.INFO." + jobs + ".*",
			"$JS.API.CONSUMER.MSG.NEXT." + jobs + ".*",
			"$JS.ACK." + jobs + ".>",
			// the backlog gauges read at each scrape (consumer lists)
			"$JS.API.CONSUMER.LIST." + jobs,
			"$JS.API.CONSUMER.LIST." + events,
			// listeners' consumers ev_<listener> (NATS wildcards match
			// whole tokens only, so "ev_*" cannot be expressed)
			"$JS.API.CONSUMER.CREATE." + events + ".*",
			"$JS.API.CONSUMER.CREATE." + events + ".*.>",
			"$JS.API.CONSUMER.DURABLE.CREATE." + events + ".*",
			"$JS.API.CONSUMER.INFO." + events + ".*",
			"$JS.API.CONSUMER.MSG.NEXT." + events + ".*",
			"$JS.ACK." + events + ".>",
		}},
		Subscribe: &server.SubjectPermission{Allow: []string{
			inbox + ".>",
			"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES." + jobs + ".*",
		}},
	}
}

// OperatorPermissions: the connector CLI provisions and inspects the three
// streams and their consumers, reads, requeues and deletes dead letters,
// purges schedules (cancel), and may enqueue.
func OperatorPermissions(prefix, inbox string) *server.Permissions {
	n := wire.MustNames(prefix)
	allow := []string{
		prefix + ".jobs.>",
		prefix + ".sched.>",
		prefix + ".events.>",
		prefix + ".dead.>",
		"$JS.API.INFO",
		"$JS.API.STREAM.NAMES",
		"$JS.API.STREAM.LIST",
	}
	for _, s := range []string{n.JobsStream(), n.DeadStream(), n.EventsStream()} {
		allow = append(allow,
			"$JS.API.STREAM.*."+s,     // CREATE UPDATE INFO DELETE PURGE
			"$JS.API.STREAM.MSG.*."+s, // MSG.GET MSG.DELETE
			"$JS.API.DIRECT.GET."+s,
			"$JS.API.DIRECT.GET."+s+".>",
			"$JS.API.CONSUMER.*."+s,      // NAMES LIST
			"$JS.API.CONSUMER.*."+s+".>", // CREATE INFO DELETE PAUSE
			"$JS.API.CONSUMER.DURABLE.CREATE."+s+".*",
			"$JS.API.CONSUMER.MSG.NEXT."+s+".*",
			"$JS.ACK."+s+".>",
		)
	}
	return &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: allow},
		Subscribe: &server.SubjectPermission{Allow: []string{inbox + ".>"}},
	}
}

// role is one connected user and the log of its asynchronous errors
// (where the server's permission violations arrive).
type role struct {
	nc   *nats.Conn
	js   jetstream.JetStream
	logs *observer.ObservedLogs
}

func connectRole(t *testing.T, url, user, pw, inbox string) role {
	t.Helper()
	core, logs := observer.New(zap.DebugLevel)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nc, err := connect.ConnectNATS(ctx, connect.NATSConfig{
		URL: url, Name: user, User: user, Password: pw, InboxPrefix: inbox,
	}, zap.New(core))
	if err != nil {
		t.Fatalf("%s: %v", user, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return role{nc: nc, js: js, logs: logs}
}

// denied waits until the server reported a permissions violation on
// subject to r.
func (r role) denied(t *testing.T, kind, subject string) {
	t.Helper()
	want := "Permissions Violation for " + kind + " to \"" + subject
	testenv.Eventually(t, 5*time.Second, func() bool {
		for _, e := range r.logs.All() {
			if s, ok := e.ContextMap()["error"].(string); ok && strings.Contains(s, want) {
				return true
			}
		}
		return false
	}, "a logged %q", want)
}

func TestLeastPrivilege(t *testing.T) {
	prefix := testenv.Prefix(t)
	n := wire.MustNames(prefix)
	const pw = "role-Pw-9f8e7d"
	srv := testenv.StartNATS(t, func(o *server.Options) {
		o.Users = []*server.User{
			{Username: "producer", Password: pw, Permissions: ProducerPermissions(prefix, "_INBOX_producer")},
			{Username: "worker", Password: pw, Permissions: WorkerPermissions(prefix, "_INBOX_worker")},
			{Username: "operator", Password: pw, Permissions: OperatorPermissions(prefix, "_INBOX_operator")},
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()

	// The operator CLI provisions the streams.
	op := connectRole(t, srv.URL, "operator", pw, "_INBOX_operator")
	if err := streams.Ensure(ctx, op.js, streams.Config{Names: n, Memory: true}); err != nil {
		t.Fatalf("operator provisions streams: %v", err)
	}

	prod := connectRole(t, srv.URL, "producer", pw, "_INBOX_producer")
	work := connectRole(t, srv.URL, "worker", pw, "_INBOX_worker")

	// --- The worker binds its consumers (as worker.Setup does). ---
	if err := streams.Check(ctx, work.js, n); err != nil {
		t.Fatalf("worker checks streams: %v", err)
	}
	jobsCons, err := work.js.CreateOrUpdateConsumer(ctx, n.JobsStream(), jetstream.ConsumerConfig{
		Durable: "workers", FilterSubject: n.JobsWildcard(),
		AckPolicy: jetstream.AckExplicitPolicy, DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		t.Fatalf("worker creates the workers consumer: %v", err)
	}
	evCons, err := work.js.CreateOrUpdateConsumer(ctx, n.EventsStream(), jetstream.ConsumerConfig{
		Durable: "ev_audit", FilterSubject: n.EventsWildcard(), AckPolicy: jetstream.AckExplicitPolicy,
	})
	if err != nil {
		t.Fatalf("worker creates an event listener consumer: %v", err)
	}

	// --- The producer publishes a job, an ETA job and an event, with acks. ---
	env := &wire.Envelope{ID: wire.NewID(), Name: "sale.import", Args: []byte{0x80}}
	data, err := wire.EncodeEnvelope(env)
	if err != nil {
		t.Fatal(err)
	}
	msg := nats.NewMsg(n.JobsSubject("root", 1))
	msg.Data = data
	msg.Header.Set(wire.HeaderMsgID, env.ID)
	if ack, err := prod.js.PublishMsg(ctx, msg); err != nil || ack.Stream != n.JobsStream() {
		t.Fatalf("producer publishes a job: %v %+v", err, ack)
	}
	later := nats.NewMsg(n.ScheduleSubject(wire.NewID()))
	later.Data = data
	later.Header.Set(wire.HeaderSchedule, "@at "+time.Now().Add(time.Hour).UTC().Format(time.RFC3339))
	later.Header.Set(wire.HeaderSchTarget, n.JobsSubject("root", 1))
	if _, err := prod.js.PublishMsg(ctx, later); err != nil {
		t.Fatalf("producer publishes a scheduled job: %v", err)
	}
	if _, err := prod.js.Publish(ctx, prefix+".events.sale.created", []byte("{}")); err != nil {
		t.Fatalf("producer publishes an event: %v", err)
	}

	// --- The worker consumes and acks the job and the event. ---
	for name, cons := range map[string]jetstream.Consumer{"job": jobsCons, "event": evCons} {
		batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			if err := m.DoubleAck(ctx); err != nil {
				t.Fatalf("worker acks the %s: %v", name, err)
			}
		}
		if got != 1 || batch.Error() != nil {
			t.Fatalf("worker fetched %d %s(s): %v", got, name, batch.Error())
		}
	}
	// A retry and a dead letter.
	retry := nats.NewMsg(n.ScheduleSubject(env.ID))
	retry.Data = data
	retry.Header.Set(wire.HeaderSchedule, "@at "+time.Now().Add(time.Hour).UTC().Format(time.RFC3339))
	retry.Header.Set(wire.HeaderSchTarget, n.JobsSubject("root", 1))
	if _, err := work.js.PublishMsg(ctx, retry); err != nil {
		t.Fatalf("worker schedules a retry: %v", err)
	}
	if _, err := work.js.Publish(ctx, n.DeadJobSubject(env.ID), []byte("letter")); err != nil {
		t.Fatalf("worker dead-letters: %v", err)
	}

	// --- What the producer cannot do. ---
	short := func() (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, 750*time.Millisecond) }
	t.Run("producer cannot create a consumer", func(t *testing.T) {
		c, cancel := short()
		defer cancel()
		_, err := prod.js.CreateOrUpdateConsumer(c, n.JobsStream(), jetstream.ConsumerConfig{
			Durable: "steal", FilterSubject: n.JobsWildcard(), AckPolicy: jetstream.AckExplicitPolicy,
		})
		if err == nil {
			t.Fatal("producer created a consumer")
		}
		prod.denied(t, "Publish", "$JS.API.CONSUMER.CREATE."+n.JobsStream())
	})
	t.Run("producer cannot fetch jobs", func(t *testing.T) {
		if _, err := prod.nc.Request("$JS.API.CONSUMER.MSG.NEXT."+n.JobsStream()+".workers", []byte(`{"batch":1,"expires":500000000}`), 750*time.Millisecond); err == nil {
			t.Fatal("producer fetched from the workers consumer")
		}
		prod.denied(t, "Publish", "$JS.API.CONSUMER.MSG.NEXT."+n.JobsStream()+".workers")
		c, cancel := short()
		defer cancel()
		if _, err := prod.js.Consumer(c, n.JobsStream(), "workers"); err == nil {
			t.Fatal("producer looked up the workers consumer")
		}
	})
	t.Run("producer cannot subscribe to jobs or to workers' inboxes", func(t *testing.T) {
		for _, subj := range []string{n.JobsWildcard(), "_INBOX_worker.>", "_INBOX.>"} {
			sub, err := prod.nc.SubscribeSync(subj)
			if err == nil {
				defer sub.Unsubscribe()
			}
			prod.denied(t, "Subscription", subj)
		}
	})
	t.Run("producer cannot delete or purge streams", func(t *testing.T) {
		c, cancel := short()
		defer cancel()
		if err := prod.js.DeleteStream(c, n.JobsStream()); err == nil {
			t.Fatal("producer deleted the jobs stream")
		}
		prod.denied(t, "Publish", "$JS.API.STREAM.DELETE."+n.JobsStream())
		if _, err := prod.nc.Request("$JS.API.STREAM.PURGE."+n.EventsStream(), nil, 750*time.Millisecond); err == nil {
			t.Fatal("producer purged the events stream")
		}
		prod.denied(t, "Publish", "$JS.API.STREAM.PURGE."+n.EventsStream())
	})
	t.Run("producer cannot forge dead letters", func(t *testing.T) {
		c, cancel := short()
		defer cancel()
		if _, err := prod.js.Publish(c, n.DeadJobSubject("x"), []byte("x")); err == nil {
			t.Fatal("producer wrote a dead letter")
		}
		prod.denied(t, "Publish", n.DeadJobSubject("x"))
	})
	t.Run("worker cannot delete streams or other consumers", func(t *testing.T) {
		c, cancel := short()
		defer cancel()
		if err := work.js.DeleteStream(c, n.DeadStream()); err == nil {
			t.Fatal("worker deleted the dead-letter stream")
		}
		work.denied(t, "Publish", "$JS.API.STREAM.DELETE."+n.DeadStream())
		c2, cancel2 := short()
		defer cancel2()
		if err := work.js.DeleteConsumer(c2, n.JobsStream(), "workers"); err == nil {
			t.Fatal("worker deleted its consumer")
		}
		work.denied(t, "Publish", "$JS.API.CONSUMER.DELETE."+n.JobsStream()+".workers")
	})

	t.Run("only the operator registers periodic jobs", func(t *testing.T) {
		// Registering (or replacing) a periodic job reads its subject in
		// the jobs stream: the operator's JetStream API only.
		for who, r := range map[string]role{"producer": prod, "worker": work} {
			d, err := dispatcher.New(r.js, dispatcher.WithPrefix(prefix))
			if err != nil {
				t.Fatal(err)
			}
			c, cancel := short()
			err = d.Schedule(c, "lp-"+who, "@every 1m", lpImport{ID: who})
			cancel()
			if err == nil {
				t.Fatalf("%s registered a periodic job", who)
			}
			want := "Permissions Violation for Publish to \"$JS.API."
			testenv.Eventually(t, 5*time.Second, func() bool {
				for _, e := range r.logs.All() {
					if s, ok := e.ContextMap()["error"].(string); ok && strings.Contains(s, want) && strings.Contains(s, n.JobsStream()) {
						return true
					}
				}
				return false
			}, "%s: a logged %q on %s", who, want, n.JobsStream())
		}
		opd, err := dispatcher.New(op.js, dispatcher.WithPrefix(prefix))
		if err != nil {
			t.Fatal(err)
		}
		if err := opd.Schedule(ctx, "lp-operator", "@every 1m", lpImport{ID: "operator"}); err != nil {
			t.Fatalf("operator registers a periodic job: %v", err)
		}
		// Again, unchanged: a no-op; changed: replaced (a publish the
		// server rolls the subject up to).
		for _, spec := range []string{"@every 1m", "@every 2m"} {
			if err := opd.Schedule(ctx, "lp-operator", spec, lpImport{ID: "operator"}); err != nil {
				t.Fatalf("operator registers a periodic job again (%s): %v", spec, err)
			}
		}
		s, err := op.js.Stream(ctx, n.JobsStream())
		if err != nil {
			t.Fatal(err)
		}
		info, err := s.Info(ctx, jetstream.WithSubjectFilter(n.PeriodicSubject(">")))
		if err != nil {
			t.Fatal(err)
		}
		if len(info.State.Subjects) != 1 || info.State.Subjects[n.PeriodicSubject("lp-operator")] != 1 {
			t.Fatalf("periodic subjects %v, want only the operator's, once", info.State.Subjects)
		}
		// Leave the stream as the rest of the test expects it.
		if err := s.Purge(ctx, jetstream.WithPurgeSubject(n.PeriodicSubject("lp-operator"))); err != nil {
			t.Fatal(err)
		}
	})

	// --- The operator reads the dead letter and can tear down. ---
	dlq, err := op.js.Stream(ctx, n.DeadStream())
	if err != nil {
		t.Fatal(err)
	}
	if m, err := dlq.GetLastMsgForSubject(ctx, n.DeadJobSubject(env.ID)); err != nil || string(m.Data) != "letter" {
		t.Fatalf("operator reads the dead letter: %v", err)
	}
	info, err := op.js.Stream(ctx, n.JobsStream())
	if err != nil {
		t.Fatalf("operator: jobs stream: %v", err)
	}
	if msgs := info.CachedInfo().State.Msgs; msgs != 2 { // the two pending schedules
		t.Errorf("jobs stream holds %d messages, want the 2 schedules", msgs)
	}
	if err := op.js.DeleteStream(ctx, n.EventsStream()); err != nil {
		t.Fatalf("operator deletes a stream: %v", err)
	}
	if _, err := op.js.Stream(ctx, n.EventsStream()); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Fatalf("events stream still there: %v", err)
	}
}

// natsConf renders a user's permissions in nats-server configuration
// syntax, as docs/security.md shows them.
func natsConf(user, passwordVar string, p *server.Permissions) string {
	list := func(s []string) string {
		q := make([]string, len(s))
		for i, x := range s {
			q[i] = `"` + x + `"`
		}
		return "[\n          " + strings.Join(q, ",\n          ") + "\n        ]"
	}
	return "{\n" +
		"    user: " + user + "\n" +
		"    password: " + passwordVar + "\n" +
		"    permissions: {\n" +
		"      publish: { allow: " + list(p.Publish.Allow) + " }\n" +
		"      subscribe: { allow: " + list(p.Subscribe.Allow) + " }\n" +
		"    }\n" +
		"  }"
}

func docPermissions() string {
	const prefix = "connector"
	return "  " + natsConf("producer", "$NATS_PRODUCER_PASSWORD", ProducerPermissions(prefix, "_INBOX_producer")) + "\n" +
		"  " + natsConf("worker", "$NATS_WORKER_PASSWORD", WorkerPermissions(prefix, "_INBOX_worker")) + "\n" +
		"  " + natsConf("operator", "$NATS_OPERATOR_PASSWORD", OperatorPermissions(prefix, "_INBOX_operator")) + "\n"
}

// TestSecurityDocMatchesPermissions keeps docs/security.md and the
// permissions proven by TestLeastPrivilege identical.
func TestSecurityDocMatchesPermissions(t *testing.T) {
	if os.Getenv("CONNECTOR_PRINT_PERMISSIONS") == "1" {
		fmt.Print(docPermissions())
	}
	doc, err := os.ReadFile(filepath.Join(testenv.ModuleRoot(t), "docs", "security.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(doc), docPermissions()) {
		t.Errorf("docs/security.md does not hold the tested permissions; paste this block (CONNECTOR_PRINT_PERMISSIONS=1 prints it):\n%s", docPermissions())
	}
}
