package events_test

import (
	"context"
	"testing"
	"time"

	"github.com/connector-go/connector/events"
	"github.com/nats-io/nats.go"
)

// A publish whose acknowledgement is lost (a timeout, a reconnect) may
// well be stored: the caller retries. Publish filled the event id itself,
// so it must return it with the error, for the retry to use the same id
// and the stream to drop it as a duplicate; without it the retry is a
// second event, which every listener handles again. Here the events
// stream is replaced by a responder that records what was sent and
// answers with an error, so the publish certainly fails.
func TestPublishErrorReturnsTheIDToRetryWith(t *testing.T) {
	e := newEnv(t)
	must(t, e.js.DeleteStream(context.Background(), e.names.EventsStream()))
	nc := e.srv.Connect(t)
	sent := make(chan string, 1)
	_, err := nc.Subscribe(e.names.EventsWildcard(), func(m *nats.Msg) {
		sent <- m.Header.Get("Nats-Msg-Id")
		_ = m.Respond([]byte(`{"error":{"code":503,"err_code":10000,"description":"ack lost"}}`))
	})
	must(t, err)
	must(t, nc.Flush())
	id, err := e.publisher().Publish(context.Background(), events.Event{Model: "res.partner", Name: events.Write, RecordID: "42"})
	if err == nil {
		t.Fatal("publish succeeded")
	}
	var msgID string
	select {
	case msgID = <-sent:
	case <-time.After(5 * time.Second):
		t.Fatal("nothing sent")
	}
	if msgID == "" || id != msgID {
		t.Fatalf("Publish returned id %q with its error (%v); it sent Nats-Msg-Id %q", id, err, msgID)
	}
}
