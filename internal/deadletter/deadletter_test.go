package deadletter_test

import (
	"context"
	"reflect"
	"testing"

	"github.com/connector-go/connector/internal/deadletter"
	"github.com/connector-go/connector/internal/streams"
	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/internal/wire"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// A letter whose message is kept apart (BodySeq) lists with the message's
// own headers, as a letter that holds its message does: not the headers
// the server adds to a direct get of the dead-letter stream (Nats-Stream,
// Nats-Sequence, Nats-Subject, Nats-Time-Stamp).
func TestBodyKeptApartListsItsOwnHeaders(t *testing.T) {
	js, n := provisioned(t)
	ctx := context.Background()
	headers := nats.Header{"Connector-Job-Name": {"shop.import"}, "traceparent": {"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}}
	body := deadletter.Republish(n.DeadBodySubject("job1"), &wire.DeadLetter{Headers: headers, Data: []byte("payload")})
	ack, err := js.PublishMsg(ctx, body)
	if err != nil {
		t.Fatal(err)
	}
	data, err := wire.Marshal(&wire.DeadLetter{Reason: "failed", Subject: n.JobsSubject("root", 1), BodySeq: ack.Sequence})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, n.DeadJobSubject("job1"), data); err != nil {
		t.Fatal(err)
	}
	entries, err := deadletter.List(ctx, js, n.DeadStream(), []string{n.DeadJobsWildcard()}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Fatalf("%d letters listed, want 1", len(entries))
	}
	dl := entries[0].Letter
	if string(dl.Data) != "payload" || !reflect.DeepEqual(nats.Header(dl.Headers), headers) {
		t.Fatalf("letter's message: %q, headers %v; want %v", dl.Data, dl.Headers, headers)
	}
}

// A letter whose message kept apart is gone (the stream's limits discard
// the oldest message first, and a letter's message is stored just before
// it) is listed without its message: the other letters still list.
func TestLetterWhoseBodyIsGoneStillLists(t *testing.T) {
	js, n := provisioned(t)
	ctx := context.Background()
	for _, id := range []string{"job1", "job2"} {
		ack, err := js.Publish(ctx, n.DeadBodySubject(id), []byte("payload of "+id))
		if err != nil {
			t.Fatal(err)
		}
		data, err := wire.Marshal(&wire.DeadLetter{Reason: "failed", JobID: id, BodySeq: ack.Sequence})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := js.Publish(ctx, n.DeadJobSubject(id), data); err != nil {
			t.Fatal(err)
		}
	}
	s, err := js.Stream(ctx, n.DeadStream())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteMsg(ctx, 1); err != nil { // job1's message
		t.Fatal(err)
	}
	entries, err := deadletter.List(ctx, js, n.DeadStream(), []string{n.DeadJobsWildcard()}, 0)
	if err != nil {
		t.Fatalf("listing with one message gone: %v", err)
	}
	if len(entries) != 2 || entries[0].Letter.JobID != "job1" || entries[0].Letter.Data != nil ||
		string(entries[1].Letter.Data) != "payload of job2" {
		t.Fatalf("listed %+v", entries)
	}
}

// provisioned gives a JetStream on an embedded server with the streams of
// a fresh prefix (in memory), and that prefix's names.
func provisioned(t *testing.T) (jetstream.JetStream, wire.Names) {
	t.Helper()
	_, _, js := testenv.JetStream(t)
	n := wire.MustNames(testenv.Prefix(t))
	if err := streams.Ensure(context.Background(), js, streams.Config{Names: n, Memory: true}); err != nil {
		t.Fatal(err)
	}
	return js, n
}
