package dispatcher_test

import (
	"context"
	"testing"
	"time"

	"github.com/connector-go/connector/job"
)

// A job due centuries from now with an identity key: the key's lifetime
// (the wait plus 30 days) overflowed time.Duration and Redis refused the
// claim ("invalid expire time"), though the same job without a key was
// enqueued. The key is held (as long as a duration goes) and answers the
// second enqueue.
func TestIdentityKeyOfAJobDueCenturiesAhead(t *testing.T) {
	e := newGenv(t)
	ctx := context.Background()
	eta := time.Date(2400, 1, 1, 0, 0, 0, 0, time.UTC)
	if _, err := e.d.Enqueue(ctx, GraphStep{Name: "far-nokey"}, job.WithETA(eta)); err != nil {
		t.Fatalf("without a key: %v", err)
	}
	id, err := e.d.Enqueue(ctx, GraphStep{Name: "far"}, job.WithETA(eta), job.WithIdentityKey("centuries"))
	if err != nil {
		t.Fatalf("with an identity key: %v", err)
	}
	again, err := e.d.Enqueue(ctx, GraphStep{Name: "far"}, job.WithETA(eta), job.WithIdentityKey("centuries"))
	if err != nil || again != id {
		t.Fatalf("second enqueue with the key: %q, %v; want %q", again, err, id)
	}
	if ttl := e.rdb.PTTL(ctx, e.names.RedisKey("identity", "centuries")).Val(); ttl < 200*365*24*time.Hour {
		t.Fatalf("identity key expires in %v", ttl)
	}
}
