package e2e_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/job"
	"github.com/connector-go/connector/worker"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/vmihailenco/msgpack/v5"
)

// importRecord is the job a producer in another language enqueues below,
// the shape of docs/protocol.md's Python example.
type importRecord struct {
	BackendID  string `msgpack:"backend_id"`
	Model      string `msgpack:"model"`
	ExternalID string `msgpack:"external_id"`
}

func (importRecord) JobName() string { return "e2e.import_record" }

// foreignEnqueue does what docs/protocol.md tells a producer in another
// language to do, with nothing of this module's: a msgpack map with exactly
// the keys the document lists, the headers it lists, a plain JetStream
// publish; with a delay, the same envelope as a message schedule on
// <prefix>.sched.<id> (Nats-Schedule "@at <RFC 3339 UTC>",
// Nats-Schedule-Target the jobs subject).
func foreignEnqueue(t *testing.T, js jetstream.JetStream, prefix, id, name string, args map[string]any, channel string, priority int, at time.Time) {
	t.Helper()
	band := 1
	switch {
	case priority < 5:
		band = 0
	case priority >= 15:
		band = 2
	}
	env := map[string]any{
		"v": 1, "id": id, "name": name, "args": args,
		"channel": channel, "priority": priority,
		"enqueued_at": time.Now().UnixMilli(),
	}
	body, err := msgpack.Marshal(env)
	if err != nil {
		t.Fatal(err)
	}
	subject := fmt.Sprintf("%s.jobs.%s.%d", prefix, channel, band)
	msg := nats.NewMsg(subject)
	msg.Header.Set("Nats-Msg-Id", id)
	msg.Header.Set("Connector-Job-Name", name)
	if !at.IsZero() {
		msg.Header.Set("Nats-Schedule", "@at "+at.UTC().Format("2006-01-02T15:04:05.000Z07:00"))
		msg.Header.Set("Nats-Schedule-Target", subject)
		msg.Subject = fmt.Sprintf("%s.sched.%s", prefix, id)
	}
	msg.Data = body
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := js.PublishMsg(ctx, msg); err != nil {
		t.Fatalf("publish %s: %v", msg.Subject, err)
	}
}

// A producer in another language enqueues per docs/protocol.md, one job
// at once and one delayed: a worker runs both, with the arguments sent,
// and the delayed one not before its time.
func TestForeignProducerPerProtocolDoc(t *testing.T) {
	e := newEnv(t)
	type run struct {
		args importRecord
		at   time.Time
		meta job.Meta
	}
	var mu sync.Mutex
	runs := map[string]run{}
	reg := worker.NewRegistry()
	worker.MustRegister(reg, func(_ context.Context, j *job.Job[importRecord]) (string, error) {
		mu.Lock()
		defer mu.Unlock()
		runs[j.ID] = run{args: j.Args, at: time.Now(), meta: j.Meta}
		return "imported " + j.Args.ExternalID, nil
	})
	e.startWorker(reg, worker.WithChannels("root:4,root.shop:2"))

	// A plain connection and JetStream context: no dispatcher.
	nc := e.srv.Connect(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	name := importRecord{}.JobName()
	args := func(ext string) map[string]any {
		return map[string]any{"backend_id": "shop-v1", "model": "product", "external_id": ext}
	}
	foreignEnqueue(t, js, e.prefix, "py-now-1", name, args("42"), "root.shop", 10, time.Time{})
	due := time.Now().Add(2 * time.Second).Truncate(time.Millisecond) // the header has milliseconds
	foreignEnqueue(t, js, e.prefix, "py-later-1", name, args("43"), "root.shop", 3, due)

	got := func(id string) (run, bool) {
		mu.Lock()
		defer mu.Unlock()
		r, ok := runs[id]
		return r, ok
	}
	testenv.Eventually(t, 20*time.Second, func() bool {
		_, now := got("py-now-1")
		_, later := got("py-later-1")
		return now && later
	}, "both jobs run")
	now, _ := got("py-now-1")
	later, _ := got("py-later-1")
	if want := (importRecord{BackendID: "shop-v1", Model: "product", ExternalID: "42"}); now.args != want {
		t.Errorf("immediate job args %+v, want %+v", now.args, want)
	}
	if later.args.ExternalID != "43" {
		t.Errorf("delayed job args %+v", later.args)
	}
	if now.meta.Channel != "root.shop" || now.meta.Name != name {
		t.Errorf("immediate job meta: channel %q, name %q", now.meta.Channel, now.meta.Name)
	}
	if later.at.Before(due) {
		t.Errorf("delayed job ran at %s, %v before its time %s", later.at.Format(time.RFC3339Nano), due.Sub(later.at), due.Format(time.RFC3339Nano))
	}
	if !now.at.Before(due) {
		t.Errorf("immediate job ran at %s, not before the delayed one's time %s", now.at.Format(time.RFC3339Nano), due.Format(time.RFC3339Nano))
	}
	// The workers' records know them as done, like any job.
	for _, id := range []string{"py-now-1", "py-later-1"} {
		testenv.Eventually(t, 10*time.Second, func() bool {
			rec, err := e.d.Job(context.Background(), id)
			return err == nil && rec.State == job.StateDone
		}, "record of %s done", id)
	}
}
