package testenv

import (
	"io"
	"net"
	"sync"
	"testing"
)

// Link is a TCP relay between clients and a server (a NATS server, say)
// whose server-to-client direction a test can disturb, the server itself
// never stopping: held, what the server sends waits until Release (a
// congested network: a publish is stored, its acknowledgement comes
// late); muted, it is dropped (acknowledgements lost on the wire); cut,
// every connection through it is closed and, while down, new ones are
// refused (a network blip). Clients connect to Addr.
type Link struct {
	Addr string
	mu   sync.Mutex
	cond *sync.Cond
	held bool
	mute bool
	down bool
	open []net.Conn
}

// NewLink starts a Link to server (host:port), closed when the test ends.
func NewLink(t testing.TB, server string) *Link {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &Link{Addr: ln.Addr().String()}
	l.cond = sync.NewCond(&l.mu)
	t.Cleanup(func() {
		ln.Close()
		l.Release()
		l.Cut(false)
	})
	go func() {
		for {
			cli, err := ln.Accept()
			if err != nil {
				return
			}
			l.mu.Lock()
			down := l.down
			l.mu.Unlock()
			if down {
				cli.Close()
				continue
			}
			srv, err := net.Dial("tcp", server)
			if err != nil {
				cli.Close()
				continue
			}
			l.mu.Lock()
			l.open = append(l.open, cli, srv)
			l.mu.Unlock()
			go func() { _, _ = io.Copy(srv, cli); srv.Close() }()
			go l.relay(srv, cli)
		}
	}()
	return l
}

// relay copies what the server sends to the client, as the link lets it.
func (l *Link) relay(srv, cli net.Conn) {
	defer cli.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := srv.Read(buf)
		if n > 0 {
			l.mu.Lock()
			for l.held {
				l.cond.Wait()
			}
			mute := l.mute
			l.mu.Unlock()
			if !mute {
				if _, werr := cli.Write(buf[:n]); werr != nil {
					return
				}
			}
		}
		if err != nil {
			return
		}
	}
}

// Hold makes what the server sends wait, until Release.
func (l *Link) Hold() { l.mu.Lock(); l.held = true; l.mu.Unlock() }

// Release lets what the server sends through again, what waited first.
func (l *Link) Release() {
	l.mu.Lock()
	l.held = false
	l.mu.Unlock()
	l.cond.Broadcast()
}

// Mute drops what the server sends (on), or stops dropping it.
func (l *Link) Mute(on bool) { l.mu.Lock(); l.mute = on; l.mu.Unlock() }

// Cut closes every connection through the link and, when down, refuses
// new ones until Cut(false); the mute ends with the connections it muted.
func (l *Link) Cut(down bool) {
	l.mu.Lock()
	l.down, l.mute = down, false
	open := l.open
	l.open = nil
	l.mu.Unlock()
	for _, c := range open {
		c.Close()
	}
}
