package worker

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/connector-go/connector/internal/testenv"
	"github.com/nats-io/nats.go"
)

// An idle consumer is long-polled by one of a process's pullers, not by
// each: the root channel's three consumers, two pullers each, cost three
// pull requests per fetchWait, not six. Jobs then arrive: all pullers
// pull again and every job runs.
func TestIdleConsumerIsPolledByOnePuller(t *testing.T) {
	const fetchWait = 200 * time.Millisecond
	e := newAckEnv(t, nil, Option(func(c *config) { c.fetchWait = fetchWait }))
	var requests atomic.Int64
	sub, err := e.js.Conn().Subscribe("$JS.API.CONSUMER.MSG.NEXT."+e.names.JobsStream()+".>", func(*nats.Msg) { requests.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := e.js.Conn().Flush(); err != nil {
		t.Fatal(err)
	}
	e.run()
	testenv.Eventually(t, 10*time.Second, func() bool { return requests.Load() >= 3 }, "no pull requests")
	// A rate, over a window of 10 fetchWaits: one poller per consumer asks
	// 10 or 11 times (a request ends at its expiry), two would ask 20 or
	// more. (A slow machine asks less, never more.)
	const window = 10 * fetchWait
	const consumers = 3 // root's priority bands
	from := requests.Load()
	<-time.After(window)
	if n, most := requests.Load()-from, consumers*(int64(window/fetchWait)+3); n > most {
		t.Fatalf("%d pull requests in %v on %d idle consumers, want at most %d (one poller each)", n, window, consumers, most)
	}
	var jobs []sleepJob
	for i := range 200 {
		jobs = append(jobs, sleepJob{N: i})
	}
	seqs := e.publish(jobs...)
	e.acked(20*time.Second, seqs...)
}
