package deadletter_test

import (
	"context"
	"testing"
	"time"

	"github.com/connector-go/connector/internal/deadletter"
	"github.com/connector-go/connector/internal/wire"
)

// A listing ends with the letters there when it began: jobs dying all the
// while (a dead-letter storm) must not keep `jobs dead` or `jobs requeue
// --all` reading for as long as they die.
func TestListEndsWhileLettersKeepComing(t *testing.T) {
	js, n := provisioned(t)
	ctx := context.Background()
	data, err := wire.Marshal(&wire.DeadLetter{Reason: "error", Error: "boom", Subject: n.JobsSubject("root", 1), Data: []byte("payload")})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 200; i++ {
		if _, err := js.PublishAsync(n.DeadJobSubject(wire.NewID()), data); err != nil {
			t.Fatal(err)
		}
	}
	<-js.PublishAsyncComplete()

	// Letters keep coming, faster than a listing reads them, until the
	// listing returns (or for 6 s at most).
	const storm = 6 * time.Second
	stop := make(chan struct{})
	stormed := make(chan struct{})
	go func() {
		defer close(stormed)
		end := time.After(storm)
		for {
			select {
			case <-stop:
				return
			case <-end:
				return
			default:
			}
			for i := 0; i < 100; i++ {
				if _, err := js.PublishAsync(n.DeadJobSubject(wire.NewID()), data); err != nil {
					return
				}
			}
		}
	}()
	start := time.Now()
	entries, err := deadletter.List(ctx, js, n.DeadStream(), []string{n.DeadJobsWildcard()}, 0)
	took := time.Since(start)
	close(stop)
	<-stormed
	<-js.PublishAsyncComplete()
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) < 200 {
		t.Fatalf("%d letters listed, want the 200 there before at least", len(entries))
	}
	if took > storm/2 {
		t.Fatalf("the listing took %s (%d letters) while letters kept coming: it read on past the letters there when it began", took, len(entries))
	}
}
