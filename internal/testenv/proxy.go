package testenv

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Proxy is a small TCP load balancer for tests: each new connection goes to
// the next backend, round robin, skipping backends whose GET /readyz does
// not answer 200, as a real load balancer with health checks would. It lets
// a test watch clients move to another node when one drains or dies.
type Proxy struct {
	ln       net.Listener
	backends []string // host:port
	checked  bool     // skip backends whose /readyz is not 200
	next     atomic.Uint64
	wg       sync.WaitGroup
	mu       sync.Mutex
	conns    map[net.Conn]struct{} // guarded by mu
	closed   bool                  // guarded by mu
}

// StartProxy listens on a free loopback port and balances over backends
// (host:port). It stops when the test ends.
func StartProxy(t testing.TB, backends ...string) *Proxy {
	t.Helper()
	return startProxy(t, true, backends)
}

// StartRoundRobin is StartProxy without the health checks: each new
// connection goes to the next backend whether it is up or ready or not, as
// with plain DNS round robin. A backend that refuses the dial drops the
// client's connection, and the client's next attempt goes to the next
// backend. It lets a client reach a node that is not ready, such as one
// whose Redis is down.
func StartRoundRobin(t testing.TB, backends ...string) *Proxy {
	t.Helper()
	return startProxy(t, false, backends)
}

func startProxy(t testing.TB, checked bool, backends []string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testenv: proxy listen: %v", err)
	}
	p := &Proxy{ln: ln, backends: backends, checked: checked, conns: make(map[net.Conn]struct{})}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.Close)
	return p
}

// Addr is the proxy's host:port.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// WSURL is the gateway WebSocket URL through the proxy.
func (p *Proxy) WSURL() string { return "ws://" + p.Addr() + "/api/realtime" }

// Close stops accepting and cuts every proxied connection.
func (p *Proxy) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.ln.Close()
	p.wg.Wait()
}

// Cut drops every connection passing through the proxy right now, as a
// network failure would, and keeps accepting new ones. It returns how many
// client connections it cut.
func (p *Proxy) Cut() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
	}
	return len(p.conns) / 2
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.serve(c)
		}()
	}
}

var readyClient = &http.Client{Timeout: 500 * time.Millisecond}

// pick returns the next ready backend, or an error when none is; without
// health checks, the next backend.
func (p *Proxy) pick() (string, error) {
	for range p.backends {
		b := p.backends[p.next.Add(1)%uint64(len(p.backends))]
		if !p.checked {
			return b, nil
		}
		resp, err := readyClient.Get("http://" + b + "/readyz")
		if err != nil {
			continue
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			return b, nil
		}
	}
	return "", fmt.Errorf("no ready backend among %v", p.backends)
}

func (p *Proxy) serve(front net.Conn) {
	defer front.Close()
	addr, err := p.pick()
	if err != nil {
		return
	}
	back, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return
	}
	defer back.Close()
	if !p.track(front, back) {
		return
	}
	defer p.untrack(front, back)
	done := make(chan struct{}, 2)
	go func() { io.Copy(back, front); back.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
	go func() { io.Copy(front, back); front.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
	<-done
	<-done
}

func (p *Proxy) track(cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	for _, c := range cs {
		p.conns[c] = struct{}{}
	}
	return true
}

func (p *Proxy) untrack(cs ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range cs {
		delete(p.conns, c)
	}
}
