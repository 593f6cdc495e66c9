package dispatcher_test

import (
	"context"
	"errors"
	"testing"

	"github.com/connector-go/connector/dispatcher"
	"github.com/connector-go/connector/internal/wire"
	"github.com/connector-go/connector/job"
)

// A job's extra header is one NATS header line: a value with a line break
// would smuggle headers of its own onto the wire (here the dispatcher's
// own Nats-Msg-Id, which then made JetStream drop the second job as a
// duplicate of the first while both enqueues answered an id), and a key
// with a colon or a space breaks the header block. Both are refused before
// anything is claimed or published, with wire.ErrInvalid.
func TestEnqueueRefusesHeadersThatBreakTheHeaderBlock(t *testing.T) {
	e := newGenv(t)
	ctx := context.Background()
	bad := []job.Option{
		job.WithHeader("X-Note", "a\r\nNats-Msg-Id: same"),
		job.WithHeader("X-Note", "a\nb"),
		job.WithHeader("X Note", "a"),
		job.WithHeader("X-Note:", "a"),
		job.WithHeader("", "a"),
	}
	for i, o := range bad {
		id, err := e.d.Enqueue(ctx, Bulk{N: i}, o, job.WithIdentityKey("hdr"))
		if !errors.Is(err, wire.ErrInvalid) {
			t.Errorf("Enqueue with bad header %d: %q, %v; want wire.ErrInvalid", i, id, err)
		}
		res, err := e.d.EnqueueMany(ctx, []dispatcher.Item{{Args: Bulk{N: 100 + i}, Options: []job.Option{o}}})
		if err == nil || !errors.Is(res[0].Err, wire.ErrInvalid) {
			t.Errorf("EnqueueMany with bad header %d: %+v, %v; want wire.ErrInvalid", i, res, err)
		}
	}
	if n := e.rdb.Exists(ctx, e.names.RedisKey("identity", "hdr")).Val(); n != 0 {
		t.Errorf("identity key claimed by a refused job")
	}
	info, err := e.js.Stream(ctx, e.names.JobsStream())
	if err != nil {
		t.Fatal(err)
	}
	if st := info.CachedInfo().State; st.Msgs != 0 {
		t.Errorf("%d messages stored by refused jobs", st.Msgs)
	}
	// A legitimate header still goes through.
	if _, err := e.d.Enqueue(ctx, Bulk{N: 1}, job.WithHeader("X-Tenant", "acme corp")); err != nil {
		t.Fatal(err)
	}
}
