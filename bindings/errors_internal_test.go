package bindings

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/connector-go/connector/job"
)

// replyErr is a Redis error reply, as go-redis returns them (any error with
// a RedisError method is one).
type replyErr string

func (e replyErr) Error() string { return string(e) }
func (replyErr) RedisError()     {}

var _ redis.Error = replyErr("")

// wrap sorts every error a Redis client can return into exactly one of:
// retryable outage (ErrUnavailable, a counted job.Retry), permanent error,
// or the caller's own cancellation. The replies are the ones Redis sends.
func TestWrapClassifiesErrors(t *testing.T) {
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	live := context.Background()
	const (
		outage = iota
		permanent
		callerGaveUp
	)
	cases := []struct {
		name string
		ctx  context.Context
		err  error
		want int
	}{
		{"connection refused", live, &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", errors.New("connection refused"))}, outage},
		{"connection dropped", live, io.EOF, outage},
		{"read timeout", live, &net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded}, outage},
		{"pool timeout", live, redis.ErrPoolTimeout, outage},
		// go-redis wraps a dial timeout in context.DeadlineExceeded: the
		// caller's context is live, so it is an outage, not a give-up.
		{"dial timeout", live, errors.Join(context.DeadlineExceeded, &net.OpError{Op: "dial"}), outage},
		{"loading", live, replyErr("LOADING Redis is loading the dataset in memory"), outage},
		{"readonly replica", live, replyErr("READONLY You can't write against a read only replica."), outage},
		{"readonly in a script (Redis 7)", live, replyErr("READONLY You can't write against a read only replica. script: a3297f, on @user_script:1."), outage},
		{"readonly in a script (Redis 6)", live, replyErr("ERR Error running script (call to f_a3297f): @user_script:7: @user_script: 7: -READONLY You can't write against a read only replica."), outage},
		{"master down", live, replyErr("MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'."), outage},
		{"cluster down", live, replyErr("CLUSTERDOWN The cluster is down"), outage},
		{"try again", live, replyErr("TRYAGAIN Multiple keys request during rehashing of slot"), outage},
		{"busy script", live, replyErr("BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE."), outage},
		{"out of memory", live, replyErr("OOM command not allowed when used memory > 'maxmemory'."), outage},
		{"no replicas", live, replyErr("NOREPLICAS Not enough good replicas to write."), outage},
		{"moved", live, replyErr("MOVED 3999 127.0.0.1:6381"), outage},
		{"max clients", live, replyErr("ERR max number of clients reached"), outage},
		{"wrong type", live, replyErr("WRONGTYPE Operation against a key holding the wrong kind of value"), permanent},
		{"busy key is not busy", live, replyErr("BUSYKEY Target key name already exists."), permanent},
		{"script bug", live, replyErr("ERR Error running script (call to f_1): @user_script:1: user_script:1: attempt to compare nil with number"), permanent},
		{"auth", live, replyErr("NOAUTH Authentication required."), permanent},
		{"no permission", live, replyErr("NOPERM this user has no permissions to run the 'evalsha' command"), permanent},
		{"cancelled by the caller", cancelled, context.Canceled, callerGaveUp},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := wrap(c.ctx, "op", c.err)
			if !errors.Is(got, c.err) {
				t.Errorf("%v does not wrap the client's error %v", got, c.err)
			}
			r, retryable := job.AsRetryable(got)
			unavailable := errors.Is(got, ErrUnavailable)
			switch c.want {
			case outage:
				if !unavailable || !retryable || r.NoCount {
					t.Errorf("%v: want ErrUnavailable and a counted job.Retry (unavailable=%v retryable=%v)", got, unavailable, retryable)
				}
			case permanent, callerGaveUp:
				if unavailable || retryable {
					t.Errorf("%v: want a permanent error (unavailable=%v retryable=%v)", got, unavailable, retryable)
				}
			}
		})
	}
	if wrap(live, "op", nil) != nil {
		t.Error("wrap(nil) != nil")
	}
}

// escape is injective on the structure of a key: joining escaped parts with
// ':' never lets two different name tuples produce the same key, and no part
// can open or close a hash tag.
func FuzzEscapeKeepsNamesApart(f *testing.F) {
	f.Add("a:b", "c", "a", "b:c")
	f.Add("}{", "%", "%7D%7B", "%25")
	f.Add("", ":", ":", "")
	f.Fuzz(func(t *testing.T, a1, b1, a2, b2 string) {
		k1 := escape(a1) + ":" + escape(b1)
		k2 := escape(a2) + ":" + escape(b2)
		if (k1 == k2) != (a1 == a2 && b1 == b2) {
			t.Fatalf("(%q,%q) and (%q,%q) both give key %q", a1, b1, a2, b2, k1)
		}
		for _, k := range []string{k1, k2} {
			for i := 0; i < len(k); i++ {
				if k[i] == '{' || k[i] == '}' {
					t.Fatalf("escaped key %q holds a brace", k)
				}
			}
		}
	})
}
