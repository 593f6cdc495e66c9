package connect_test

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/connector-go/connector/internal/connect"
	"github.com/connector-go/connector/internal/testenv"
)

// Waiting at start is for servers still coming up, never for a
// configuration that cannot work.
func TestTransient(t *testing.T) {
	for _, c := range []struct {
		name string
		err  error
		want bool
	}{
		{"refused (nats.go)", nats.ErrNoServers, true},
		{"refused (dial)", &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}, true},
		{"name not resolved yet", &net.OpError{Op: "dial", Err: &net.DNSError{Err: "no such host", Name: "nats", IsNotFound: true}}, true},
		{"closed while starting", fmt.Errorf("connect: %w", io.EOF), true},
		{"timeout", nats.ErrTimeout, true},
		{"authorization", nats.ErrAuthorization, false},
		{"bad configuration", fmt.Errorf("%w: two auth methods", connect.ErrConfig), false},
		{"TLS alert", &net.OpError{Op: "remote error", Err: errors.New("tls: bad certificate")}, false},
		{"unknown CA", x509.UnknownAuthorityError{}, false},
		{"cancelled", context.Canceled, false},
	} {
		if got := connect.Transient(c.err); got != c.want {
			t.Errorf("%s: Transient(%v) = %v, want %v", c.name, c.err, got, c.want)
		}
	}
}

// Retry tries once without a deadline, gives up after the wait with the last
// error, and stops at once on an error waiting cannot cure.
func TestRetry(t *testing.T) {
	log := zap.NewNop()
	refused := func(n *int) func(context.Context) (int, error) {
		return func(context.Context) (int, error) { *n++; return 0, nats.ErrNoServers }
	}
	var n int
	if _, err := connect.Retry(context.Background(), time.Time{}, log, "NATS", connect.Transient, refused(&n)); !errors.Is(err, nats.ErrNoServers) || n != 1 {
		t.Fatalf("no wait: %v after %d attempts, want the error after 1", err, n)
	}
	n = 0
	if _, err := connect.Retry(context.Background(), time.Now().Add(600*time.Millisecond), log, "NATS", connect.Transient, refused(&n)); !errors.Is(err, nats.ErrNoServers) || n < 2 || !strings.Contains(err.Error(), "gave up waiting") {
		t.Fatalf("wait: %v after %d attempts, want the last error after several", err, n)
	}
	n = 0
	_, err := connect.Retry(context.Background(), time.Now().Add(time.Minute), log, "NATS", connect.Transient, func(context.Context) (int, error) { n++; return 0, nats.ErrAuthorization })
	if !errors.Is(err, nats.ErrAuthorization) || n != 1 {
		t.Fatalf("auth: %v after %d attempts, want the error after 1", err, n)
	}
	n = 0
	v, err := connect.Retry(context.Background(), time.Now().Add(time.Minute), log, "Redis", connect.Transient, func(context.Context) (int, error) {
		if n++; n < 3 {
			return 0, &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
		}
		return 42, nil
	})
	if err != nil || v != 42 || n != 3 {
		t.Fatalf("comes up: %d, %v after %d attempts, want 42 after 3", v, err, n)
	}
	// A real refused Redis is transient too.
	_, err = connect.ConnectRedis(context.Background(), connect.RedisConfig{URL: "redis://" + testenv.FreeAddr(t) + "/0"}, nil)
	if err == nil || !connect.Transient(err) {
		t.Fatalf("refused Redis: %v, want a transient error", err)
	}
}
