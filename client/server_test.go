package client

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/updraft/updraft/protocol"
)

// waitFor bounds every wait of these tests.
const waitFor = 5 * time.Second

// scriptServer is a WebSocket server that a test scripts message by
// message: the test goroutine takes each accepted connection and reads and
// writes protocol messages on it.
type scriptServer struct {
	url   string
	conns chan *serverConn
}

// serverConn is one accepted connection. A goroutine reads it all along
// (so close handshakes complete) and queues the requests for the test.
type serverConn struct {
	t       *testing.T
	ws      *websocket.Conn
	header  http.Header
	subprot string
	reqs    chan protocol.Request // closed when the connection ended
}

func newScriptServer(t *testing.T) *scriptServer {
	t.Helper()
	s := &scriptServer{conns: make(chan *serverConn, 16)}
	ctx, cancel := context.WithCancel(context.Background())
	var (
		mu     sync.Mutex
		all    []*websocket.Conn // guarded by mu
		closed bool              // guarded by mu
		wg     sync.WaitGroup
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/realtime" {
			http.NotFound(w, r)
			return
		}
		ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{
			Subprotocols:       []string{protocol.Subprotocol},
			InsecureSkipVerify: true, // the tests send Origin headers of their choosing
		})
		if err != nil {
			t.Errorf("accept: %v", err)
			return
		}
		ws.SetReadLimit(-1)
		sc := &serverConn{t: t, ws: ws, header: r.Header.Clone(), subprot: ws.Subprotocol(), reqs: make(chan protocol.Request, 1024)}
		mu.Lock()
		if closed {
			mu.Unlock()
			_ = ws.CloseNow()
			return
		}
		all = append(all, ws)
		wg.Add(1)
		mu.Unlock()
		go func() {
			defer wg.Done()
			defer close(sc.reqs)
			for {
				_, frame, err := ws.Read(ctx)
				if err != nil {
					return
				}
				protocol.Lines(frame, func(line []byte) {
					req, err := protocol.DecodeRequest(line)
					if err != nil {
						t.Errorf("server: bad request %s: %v", line, err)
						return
					}
					sc.reqs <- req
				})
			}
		}()
		select {
		case s.conns <- sc:
		default:
			t.Errorf("server: too many connections")
			_ = ws.CloseNow()
		}
	}))
	t.Cleanup(func() {
		mu.Lock()
		closed = true
		mu.Unlock()
		cancel()
		for _, ws := range all {
			_ = ws.CloseNow()
		}
		wg.Wait()
		srv.Close()
	})
	s.url = "ws" + strings.TrimPrefix(srv.URL, "http") + "/api/realtime"
	return s
}

// accept returns the next connection.
func (s *scriptServer) accept(t *testing.T) *serverConn {
	t.Helper()
	select {
	case sc := <-s.conns:
		return sc
	case <-time.After(waitFor):
		t.Fatalf("server: no connection within %v", waitFor)
		return nil
	}
}

// noConn checks that no further connection was accepted.
func (s *scriptServer) noConn(t *testing.T) {
	t.Helper()
	select {
	case <-s.conns:
		t.Fatalf("server: unexpected connection")
	default:
	}
}

// read returns the next request.
func (sc *serverConn) read(t *testing.T) protocol.Request {
	t.Helper()
	select {
	case r, ok := <-sc.reqs:
		if !ok {
			t.Fatalf("server: connection closed while expecting a request")
		}
		return r
	case <-time.After(waitFor):
		t.Fatalf("server: no request within %v", waitFor)
		return protocol.Request{}
	}
}

// expect returns the next request, checking its type.
func (sc *serverConn) expect(t *testing.T, typ string) protocol.Request {
	t.Helper()
	r := sc.read(t)
	if r.Type != typ {
		t.Fatalf("server: got %s request %+v, want %s", r.Type, r, typ)
	}
	return r
}

// handshake answers the connect request and returns it.
func (sc *serverConn) handshake(t *testing.T, session string) protocol.Request {
	t.Helper()
	r := sc.expect(t, protocol.TypeConnect)
	sc.send(t, protocol.EncodeReply(r.Ref, protocol.ConnectResult{Session: session, Node: "node-1", Heartbeat: 25, MaxMessage: 65536}))
	return r
}

// send writes msgs as one frame, newline-separated.
func (sc *serverConn) send(t *testing.T, msgs ...[]byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := sc.ws.Write(ctx, websocket.MessageText, bytes.Join(msgs, []byte{protocol.Separator})); err != nil {
		t.Fatalf("server: write: %v", err)
	}
}

// close sends a disconnect message and closes with code.
func (sc *serverConn) close(t *testing.T, code int, reason string) {
	t.Helper()
	sc.send(t, protocol.EncodeDisconnect(code, reason))
	if err := sc.ws.Close(websocket.StatusCode(code), reason); err != nil {
		t.Logf("server: close: %v", err)
	}
}

// waitClosed waits until the client closed the connection.
func (sc *serverConn) waitClosed(t *testing.T) {
	t.Helper()
	deadline := time.After(waitFor)
	for {
		select {
		case _, ok := <-sc.reqs:
			if !ok {
				return
			}
		case <-deadline:
			t.Fatalf("server: connection still open after %v", waitFor)
		}
	}
}

// event returns the wire form of an event.
func event(topic, name, epoch string, seq uint64, data string) []byte {
	return protocol.AppendEvent(nil, &protocol.Event{Topic: topic, Event: name, Epoch: epoch, Seq: seq, TS: 1764170000000 + int64(seq), Data: []byte(data)})
}

// async runs fn on a goroutine; the channel delivers its error.
func async(fn func() error) <-chan error {
	ch := make(chan error, 1)
	go func() { ch <- fn() }()
	return ch
}

// await returns the value sent on ch, failing the test after waitFor.
func await[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitFor):
		t.Fatalf("no %s within %v", what, waitFor)
		var zero T
		return zero
	}
}

// dial connects a client to s, answering the handshake, and closes it at
// the end of the test.
func dial(t *testing.T, s *scriptServer, opts Options) (*Client, *serverConn) {
	t.Helper()
	type result struct {
		c   *Client
		err error
	}
	ch := make(chan result, 1)
	go func() {
		c, err := Dial(context.Background(), s.url, opts)
		ch <- result{c, err}
	}()
	sc := s.accept(t)
	sc.handshake(t, "s_1")
	res := await(t, ch, "Dial")
	if res.err != nil {
		t.Fatalf("Dial: %v", res.err)
	}
	t.Cleanup(func() { _ = res.c.Close() })
	return res.c, sc
}

// fastOptions reconnect within milliseconds.
func fastOptions() Options {
	return Options{MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond}
}

// recorder collects what a client reports, safe for concurrent use.
type recorder struct {
	mu          sync.Mutex
	events      []protocol.Event
	statuses    []Status
	disconnects []int
	changed     chan struct{}
}

func newRecorder() *recorder { return &recorder{changed: make(chan struct{}, 1)} }

func (r *recorder) notify() {
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

func (r *recorder) event(ev protocol.Event) {
	r.mu.Lock()
	r.events = append(r.events, ev)
	r.mu.Unlock()
	r.notify()
}

func (r *recorder) status(s Status) {
	r.mu.Lock()
	r.statuses = append(r.statuses, s)
	r.mu.Unlock()
	r.notify()
}

func (r *recorder) disconnect(code int, _ string) {
	r.mu.Lock()
	r.disconnects = append(r.disconnects, code)
	r.mu.Unlock()
	r.notify()
}

// until waits until cond, evaluated under the recorder's lock, holds.
func (r *recorder) until(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(waitFor)
	for {
		r.mu.Lock()
		ok := cond()
		r.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-r.changed:
		case <-deadline:
			r.mu.Lock()
			defer r.mu.Unlock()
			t.Fatalf("%s: not within %v (events %d, statuses %v, disconnects %v)", what, waitFor, len(r.events), r.statuses, r.disconnects)
		}
	}
}

func (r *recorder) seqs() []uint64 {
	var s []uint64
	for _, ev := range r.events {
		s = append(s, ev.Seq)
	}
	return s
}
