// Package testenv gives tests real servers: an embedded NATS JetStream
// server per test and a real Redis (127.0.0.1:6379 or CONNECTOR_TEST_REDIS_URL),
// each namespaced by a unique prefix and cleaned up afterwards.
//
// When no Redis answers, tests fall back to an embedded Redis-protocol store
// (miniredis) and say so, unless CONNECTOR_TEST_REQUIRE_REDIS=1 (CI sets it),
// in which case they fail.
package testenv

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/connector-go/connector/job"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
)

// Prefix returns a fresh prefix, safe as a subject token, a stream-name part
// and a Redis key part: lowercase letters and digits.
func Prefix(t testing.TB) string {
	t.Helper()
	var b [5]byte
	_, _ = rand.Read(b[:])
	return "t" + hex.EncodeToString(b[:])
}

// NATSServer is an embedded JetStream server started for one test.
type NATSServer struct {
	Server *server.Server
	URL    string
	Opts   *server.Options
}

// StartNATS starts an embedded JetStream server (file storage in a temp dir,
// random port) and shuts it down when the test ends. configure may adjust
// the options (auth, TLS) before start.
func StartNATS(t testing.TB, configure ...func(*server.Options)) *NATSServer {
	t.Helper()
	opts := &server.Options{
		Host:      "127.0.0.1",
		Port:      -1,
		JetStream: true,
		StoreDir:  t.TempDir(),
		NoLog:     true,
		NoSigs:    true,
	}
	for _, f := range configure {
		f(opts)
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("testenv: nats server: %v", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatalf("testenv: nats server not ready")
	}
	t.Cleanup(func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	})
	return &NATSServer{Server: ns, URL: ns.ClientURL(), Opts: opts}
}

// Connect opens a client connection closed at test end.
func (s *NATSServer) Connect(t testing.TB, opts ...nats.Option) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(s.URL, opts...)
	if err != nil {
		t.Fatalf("testenv: connect: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// JetStream starts a server and returns a connection and its JetStream
// context: the common case.
func JetStream(t testing.TB) (*NATSServer, *nats.Conn, jetstream.JetStream) {
	t.Helper()
	s := StartNATS(t)
	nc := s.Connect(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("testenv: jetstream: %v", err)
	}
	return s, nc, js
}

var (
	redisOnce     sync.Once
	redisURL      string
	redisEmbedded bool
	redisErr      error
)

// RedisURL returns the URL of the Redis tests use: the real one when it
// answers, else an embedded store (unless CONNECTOR_TEST_REQUIRE_REDIS=1).
func RedisURL(t testing.TB) string {
	t.Helper()
	redisOnce.Do(func() {
		url := os.Getenv("CONNECTOR_TEST_REDIS_URL")
		if url == "" {
			url = "redis://127.0.0.1:6379/0"
		}
		opt, err := redis.ParseURL(url)
		if err != nil {
			redisErr = err
			return
		}
		c := redis.NewClient(opt)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err = c.Ping(ctx).Err()
		cancel()
		_ = c.Close()
		if err == nil {
			redisURL = url
			return
		}
		if os.Getenv("CONNECTOR_TEST_REQUIRE_REDIS") == "1" {
			redisErr = fmt.Errorf("no real Redis at %s (CONNECTOR_TEST_REQUIRE_REDIS=1): %w", url, err)
			return
		}
		m := miniredis.NewMiniRedis()
		if err := m.Start(); err != nil {
			redisErr = err
			return
		}
		m.ClockTTL(true) // TTLs run down with the wall clock, as on Redis
		redisEmbedded = true
		redisURL = "redis://" + m.Addr() + "/0"
		fmt.Fprintf(os.Stderr, "testenv: no Redis at %s; using the embedded store (miniredis)\n", url)
	})
	if redisErr != nil {
		t.Fatalf("testenv: %v", redisErr)
	}
	return redisURL
}

// RedisEmbedded reports whether tests run on the embedded store.
func RedisEmbedded() bool { return redisEmbedded }

// Redis returns a client to the test Redis and a fresh key prefix. Every key
// containing the prefix is deleted when the test ends.
func Redis(t testing.TB) (*redis.Client, string) {
	t.Helper()
	opt, err := redis.ParseURL(RedisURL(t))
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	c := redis.NewClient(opt)
	prefix := Prefix(t)
	t.Cleanup(func() {
		CleanRedis(c, prefix)
		_ = c.Close()
	})
	return c, prefix
}

// CleanRedis deletes every key that contains prefix.
func CleanRedis(c redis.UniversalClient, prefix string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	iter := c.Scan(ctx, 0, "*"+prefix+"*", 1000).Iterator()
	var keys []string
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
		if len(keys) == 500 {
			c.Unlink(ctx, keys...)
			keys = keys[:0]
		}
	}
	if len(keys) > 0 {
		c.Unlink(ctx, keys...)
	}
}

// FreeAddr returns a 127.0.0.1 address nothing listens on right now: for a
// server a test starts, or for a client that must find nobody there. Its
// port is below the system's ephemeral range: the outgoing connections of
// the tests running meanwhile take their local ports from that range, and
// one could take the address before the test's server starts on it (a
// cluster's second node, started seconds later, then never listened).
func FreeAddr(t testing.TB) string {
	t.Helper()
	if hi := ephemeralLow(); hi > freePortsFrom {
		for range 64 {
			var b [2]byte
			_, _ = rand.Read(b[:])
			port := freePortsFrom + (int(b[0])<<8|int(b[1]))%(hi-freePortsFrom)
			if ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port)); err == nil {
				addr := ln.Addr().String()
				_ = ln.Close()
				return addr
			}
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// freePortsFrom is the lowest port FreeAddr gives.
const freePortsFrom = 20000

// ephemeralLow is the first port of the system's ephemeral range (Linux:
// ip_local_port_range; elsewhere 32768, below the BSDs' and macOS's).
func ephemeralLow() int {
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if lo, err := strconv.Atoi(f[0]); err == nil {
				return lo
			}
		}
	}
	return 32768
}

// SilentAddr returns the address of a TCP listener that accepts
// connections and never answers: a NATS or Redis that hangs (overloaded,
// or a network path that drops packets). It is closed, with its
// connections, when the test ends.
func SilentAddr(t testing.TB) string {
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
		_ = ln.Close()
		<-done
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	return ln.Addr().String()
}

// CaughtUp reports whether consumers of stream have delivered and
// acknowledged every message on subject filter (the subjects they share
// between them). Nothing pending is not enough: a consumer counts a new
// message a moment after its publish was acknowledged (the server signals
// its consumers on a goroutine of its own, in stream order), so the
// newest message on filter must also have been delivered by one of them;
// then every earlier one was counted too.
func CaughtUp(ctx context.Context, js jetstream.JetStream, stream, filter string, consumers ...string) bool {
	var delivered uint64
	for _, name := range consumers {
		c, err := js.Consumer(ctx, stream, name)
		if err != nil {
			return false
		}
		info, err := c.Info(ctx)
		if err != nil || info.NumPending != 0 || info.NumAckPending != 0 {
			return false
		}
		delivered = max(delivered, info.Delivered.Stream)
	}
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return false
	}
	last, err := s.GetLastMsgForSubject(ctx, filter)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return true
	}
	return err == nil && delivered >= last.Sequence
}

// JobReader reads job records: *dispatcher.Dispatcher.
type JobReader interface {
	Job(ctx context.Context, id string) (job.Record, error)
}

// WaitJob waits until job id's record is in state want, failing the test
// after timeout (with the last record read), and returns the record.
func WaitJob(t testing.TB, d JobReader, id string, want job.State, timeout time.Duration) job.Record {
	t.Helper()
	var rec job.Record
	Eventually(t, timeout, func() bool {
		r, err := d.Job(context.Background(), id)
		rec = r
		return err == nil && r.State == want
	}, "job %s in state %s (last %+v)", id, want, &rec)
	return rec
}

// Eventually waits until cond is true, failing the test after timeout.
func Eventually(t testing.TB, timeout time.Duration, cond func() bool, format string, a ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("testenv: timed out after %s waiting for: %s", timeout, fmt.Sprintf(format, a...))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

var (
	buildMu    sync.Mutex
	buildCache = map[string]string{}
	buildDir   string
)

// GoBuild builds a main package of this module once per test binary and
// returns the path of the executable, for tests that run (and kill) real
// worker processes.
func GoBuild(t testing.TB, pkg string) string {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	if p, ok := buildCache[pkg]; ok {
		return p
	}
	if buildDir == "" {
		d, err := os.MkdirTemp("", "connector-testbin-")
		if err != nil {
			t.Fatal(err)
		}
		buildDir = d
	}
	out := filepath.Join(buildDir, strings.ReplaceAll(strings.Trim(pkg, "./"), "/", "_"))
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = ModuleRoot(t)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("testenv: go build %s: %v\n%s", pkg, err, b)
	}
	buildCache[pkg] = out
	return out
}

// ModuleRoot finds the directory holding go.mod.
func ModuleRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("testenv: go.mod not found")
		}
		dir = parent
	}
}

// Buffer is a bytes.Buffer safe for concurrent use: a process's or a
// logger's output written on one goroutine while the test reads it on
// another.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// String returns what was written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// FirstAttempt listens on a free address, accepts the first connection
// there and closes it at once (as a server still starting does), then
// stops listening. The channel says when that happened (or that no
// connection came): a connection was tried, and failed, before the test
// starts the real server on the address.
func FirstAttempt(t testing.TB) (addr string, tried <-chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	out := make(chan error, 1)
	go func() {
		_ = ln.(*net.TCPListener).SetDeadline(time.Now().Add(30 * time.Second))
		c, err := ln.Accept()
		if err == nil {
			_ = c.Close()
		}
		_ = ln.Close()
		out <- err
	}()
	return ln.Addr().String(), out
}

// Port is the port of a 127.0.0.1 address (FreeAddr, FirstAttempt): for a
// server a test starts there (StartNATS's options take a port).
func Port(t testing.TB, addr string) int {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// HeldAPI is a JetStream context on srv whose API requests pass through a
// relay of the test: the first request whose API subject starts with hold
// ("CONSUMER.CREATE.") is held, and every one after it, until release.
// held receives that request's API subject once it is held.
func HeldAPI(t *testing.T, srv *NATSServer, hold string) (js jetstream.JetStream, held <-chan string, release func()) {
	t.Helper()
	const prefix = "held.API."
	relay := srv.Connect(t)
	heldc, released := make(chan string, 1), make(chan struct{})
	holding := true
	// One subscription: its messages are handled one at a time, in order,
	// so holding one holds those after it.
	_, err := relay.Subscribe(prefix+">", func(m *nats.Msg) {
		api := strings.TrimPrefix(m.Subject, prefix)
		if holding && strings.HasPrefix(api, hold) {
			holding = false
			heldc <- api
			<-released
		}
		// The reply subject is the requester's: answers, and the messages
		// of a pull request, go straight to it.
		err := relay.PublishMsg(&nats.Msg{Subject: "$JS.API." + api, Reply: m.Reply, Header: m.Header, Data: m.Data})
		if err != nil && !errors.Is(err, nats.ErrConnectionClosed) { // closed: the test is over
			t.Errorf("relay %s: %v", api, err)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := relay.Flush(); err != nil {
		t.Fatal(err)
	}
	var once bool
	release = func() {
		if !once {
			once = true
			close(released)
		}
	}
	t.Cleanup(release)
	// The held request must not time out while the test looks.
	js, err = jetstream.NewWithAPIPrefix(srv.Connect(t), prefix, jetstream.WithDefaultTimeout(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	return js, heldc, release
}
