// Package devenv starts the embedded servers of `connector dev` and of the
// benchmark: a NATS JetStream server and a Redis-protocol store (miniredis).
// Nothing here is for production.
package devenv

import (
	"fmt"
	"net"
	"os"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/nats-io/nats-server/v2/server"
)

// NATSOptions configure the embedded NATS server.
type NATSOptions struct {
	Port     int    // 0: pick a free port
	StoreDir string // "": a temporary directory, removed at Stop
	// SyncAlways fsyncs every write (sync_interval: always); see
	// docs/architecture.md for what it costs and buys.
	SyncAlways bool
}

// NATS is an embedded JetStream server.
type NATS struct {
	Server *server.Server
	URL    string
	tmp    string
}

// StartNATS starts a JetStream server on 127.0.0.1.
func StartNATS(o NATSOptions) (*NATS, error) {
	n := &NATS{}
	dir := o.StoreDir
	if dir == "" {
		d, err := os.MkdirTemp("", "connector-nats-")
		if err != nil {
			return nil, err
		}
		dir, n.tmp = d, d
	}
	port := o.Port
	if port == 0 {
		port = -1
	}
	opts := &server.Options{
		ServerName: "connector-dev", Host: "127.0.0.1", Port: port,
		JetStream: true, StoreDir: dir, NoLog: true, NoSigs: true,
		MaxPayload: 8 << 20,
	}
	if o.SyncAlways {
		opts.SyncAlways = true
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("devenv: nats: %w", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(15 * time.Second) {
		ns.Shutdown()
		return nil, fmt.Errorf("devenv: nats server did not start (port %d busy?)", o.Port)
	}
	n.Server, n.URL = ns, ns.ClientURL()
	return n, nil
}

// Stop shuts the server down and removes its temporary store.
func (n *NATS) Stop() {
	n.Server.Shutdown()
	n.Server.WaitForShutdown()
	if n.tmp != "" {
		_ = os.RemoveAll(n.tmp)
	}
}

// StartRedis starts miniredis on addr ("127.0.0.1:0" for a free port) with
// wall-clock TTLs, so that lock leases expire as they would on Redis.
func StartRedis(addr string) (*miniredis.Miniredis, error) {
	m := miniredis.NewMiniRedis()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	if err := m.StartAddr(addr); err != nil {
		return nil, fmt.Errorf("devenv: redis: %w", err)
	}
	// Wall-clock TTLs: lock leases expire as they would on Redis.
	m.ClockTTL(true)
	return m, nil
}

// FreePort tells whether port on 127.0.0.1 is free.
func FreePort(port int) bool {
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return false
	}
	_ = ln.Close()
	return true
}
