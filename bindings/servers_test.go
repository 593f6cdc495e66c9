package bindings_test

import (
	"context"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/connector-go/connector/internal/testenv"
)

// This file holds the test fixtures that need more than the shared test
// Redis: a redis-server process of the test's own (a cluster node, a
// replica), a proxy that can cut the connection to Redis, a hook that counts
// round trips, and a snapshot of every key of a prefix.

// startRedisServer runs a redis-server of the test's own on a free loopback
// port with extra arguments, and returns its address once it answers PING.
// It skips the test when the redis-server binary is not installed (CI
// installs it, see .ci/run) and fails it, with the server's log, when the
// server does not come up.
func startRedisServer(t *testing.T, args ...string) string {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redis-server not installed: cannot start a Redis of the test's own")
	}
	dir := t.TempDir()
	addr := testenv.FreeAddr(t)
	port := addr[strings.LastIndexByte(addr, ':')+1:]
	logFile := filepath.Join(dir, "redis.log")
	cmd := exec.Command(bin, append([]string{"--port", port, "--bind", "127.0.0.1",
		"--dir", dir, "--save", "", "--appendonly", "no", "--logfile", logFile}, args...)...)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start redis-server: %v", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer c.Close()
	ctx := context.Background()
	deadline := time.Now().Add(10 * time.Second)
	for c.Ping(ctx).Err() != nil {
		select {
		case <-exited:
			log, _ := os.ReadFile(logFile)
			t.Fatalf("redis-server %v exited at start; its log:\n%s", args, log)
		default:
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(logFile)
			t.Fatalf("redis-server %v did not answer within 10s; its log:\n%s", args, log)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return addr
}

// testRedisAddr is the host:port of the shared test Redis (or of the
// embedded store standing in for it).
func testRedisAddr(t *testing.T) string {
	t.Helper()
	opt, err := redis.ParseURL(testenv.RedisURL(t))
	if err != nil {
		t.Fatal(err)
	}
	return opt.Addr
}

// proxyState is what a flakyProxy does with connections.
type proxyState int

const (
	proxyUp   proxyState = iota // forward to Redis
	proxyDown                   // close every connection at once (a crashed Redis, a reset)
	proxyHang                   // accept and never answer (a partition, a stopped VM)
)

// flakyProxy forwards TCP connections to a Redis and can cut them, to play
// a Redis outage in the middle of a session against the real server, and
// then its recovery with the data intact.
type flakyProxy struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	state proxyState
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

func startProxy(t *testing.T, target string) *flakyProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &flakyProxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		_ = ln.Close()
		p.set(proxyDown)
		p.wg.Wait()
	})
	return p
}

// Addr is where clients connect.
func (p *flakyProxy) Addr() string { return p.ln.Addr().String() }

// set changes the proxy's state. Leaving proxyUp closes every connection,
// so that no request already in flight gets through.
func (p *flakyProxy) set(s proxyState) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.state = s
	if s != proxyUp {
		for c := range p.conns {
			_ = c.Close()
			delete(p.conns, c)
		}
	}
}

func (p *flakyProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return // listener closed
		}
		p.mu.Lock()
		state := p.state
		switch state {
		case proxyDown:
			_ = c.Close()
		case proxyHang:
			p.conns[c] = struct{}{} // held open, never read
		}
		p.mu.Unlock()
		if state != proxyUp {
			continue
		}
		up, err := net.DialTimeout("tcp", p.target, 2*time.Second)
		if err != nil {
			_ = c.Close()
			continue
		}
		p.mu.Lock()
		if p.state != proxyUp { // cut while dialing
			p.mu.Unlock()
			_ = c.Close()
			_ = up.Close()
			continue
		}
		p.conns[c], p.conns[up] = struct{}{}, struct{}{}
		p.mu.Unlock()
		p.wg.Add(2)
		pipe := func(dst, src net.Conn) {
			defer p.wg.Done()
			_, _ = io.Copy(dst, src)
			_ = dst.Close()
			_ = src.Close()
		}
		go pipe(up, c)
		go pipe(c, up)
	}
}

// roundTrips counts what a client sends to Redis: each single command is
// one round trip, and so is each pipeline, whatever it holds. The handshake
// go-redis sends on a new connection (HELLO, CLIENT SETINFO, ...) is not
// the package's doing and is left out.
type roundTrips struct {
	mu       sync.Mutex
	commands [][]any // the arguments of each single command
	pipes    [][][]any
}

func (h *roundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if !handshake(cmd) {
			h.mu.Lock()
			h.commands = append(h.commands, cmd.Args())
			h.mu.Unlock()
		}
		return next(ctx, cmd)
	}
}

func handshake(cmd redis.Cmder) bool {
	switch cmd.Name() {
	case "hello", "client", "auth", "select", "readonly":
		return true
	}
	return false
}

func (h *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		var args [][]any
		for _, c := range cmds {
			if !handshake(c) {
				args = append(args, c.Args())
			}
		}
		if len(args) > 0 {
			h.mu.Lock()
			h.pipes = append(h.pipes, args)
			h.mu.Unlock()
		}
		return next(ctx, cmds)
	}
}

// names lists the command names of what take returned, for messages.
func names(commands [][]any) []any {
	out := make([]any, len(commands))
	for i, c := range commands {
		out[i] = c[0]
	}
	return out
}

// take returns what was sent since the last take, and forgets it.
func (h *roundTrips) take() (commands [][]any, pipes [][][]any) {
	h.mu.Lock()
	defer h.mu.Unlock()
	commands, pipes = h.commands, h.pipes
	h.commands, h.pipes = nil, nil
	return commands, pipes
}

// snapshot returns every key holding prefix with its type, content and
// whether it expires, as one sorted text per key, to compare the whole
// state of a test's Redis before and after an operation.
func snapshot(t *testing.T, rdb *redis.Client, prefix string) []string {
	t.Helper()
	ctx := context.Background()
	keys, err := rdb.Keys(ctx, "*"+prefix+"*").Result()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, k := range keys {
		typ := rdb.Type(ctx, k).Val()
		var content string
		switch typ {
		case "hash":
			m := rdb.HGetAll(ctx, k).Val()
			fields := make([]string, 0, len(m))
			for f, v := range m {
				fields = append(fields, f+"="+v)
			}
			sort.Strings(fields)
			content = strings.Join(fields, ",")
		case "string":
			content = rdb.Get(ctx, k).Val()
		default:
			content = "?"
		}
		expires := rdb.PTTL(ctx, k).Val() > 0
		out = append(out, k+" "+typ+" ["+content+"] expires="+map[bool]string{true: "yes", false: "no"}[expires])
	}
	sort.Strings(out)
	return out
}
