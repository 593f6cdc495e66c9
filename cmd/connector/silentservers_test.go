package main

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/connector-go/connector/internal/testenv"
)

// silentServer accepts TCP connections and never answers.
func silentServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String()
}

// The operator commands take no --start-wait: one attempt each. Against
// a NATS or a Redis that accepts connections and never answers, they
// fail within the connect timeouts (5s each), naming what they could not
// reach, instead of hanging (the context here has no deadline).
func TestOperatorCommandsDoNotHangOnSilentServers(t *testing.T) {
	srv := testenv.StartNATS(t)
	_, prefix := testenv.Redis(t)
	silent := silentServer(t)
	for _, tc := range []struct {
		name, nats, redis, want string
		args                    []string
	}{
		{"nats silent", "nats://" + silent, testenv.RedisURL(t), "connect: nats nats://" + silent, []string{"jobs", "dead"}},
		{"redis silent", srv.URL, "redis://" + silent + "/0", "connect: redis redis://" + silent, []string{"jobs", "show", "some-id"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := map[string]string{"CONNECTOR_NATS_URL": tc.nats, "CONNECTOR_REDIS_URL": tc.redis, "CONNECTOR_PREFIX": prefix}
			done := make(chan error, 1)
			go func() {
				var out, errb testenv.Buffer
				done <- run(context.Background(), tc.args, &out, &errb, func(k string) string { return env[k] })
			}()
			select {
			case err := <-done:
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("err = %v, want %q", err, tc.want)
				}
			case <-time.After(20 * time.Second):
				t.Fatalf("connector %s did not return within 20s", strings.Join(tc.args, " "))
			}
		})
	}
}
