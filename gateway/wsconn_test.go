package gateway

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/updraft/updraft/broker"
	"github.com/updraft/updraft/protocol"
)

// recordingConn is the hijacked connection under the write path, recording
// each write the library makes and whether the write path's lock was held
// during it.
type recordingConn struct {
	net.Conn
	fc     *frameConn
	mu     sync.Mutex
	writes []recordedWrite // guarded by mu
}

type recordedWrite struct {
	b      []byte
	locked bool
}

func (c *recordingConn) Write(b []byte) (int, error) {
	locked := !c.fc.mu.TryLock()
	if !locked {
		c.fc.mu.Unlock()
	}
	c.mu.Lock()
	c.writes = append(c.writes, recordedWrite{bytes.Clone(b), locked})
	c.mu.Unlock()
	return c.Conn.Write(b)
}

// recordingHijacker hands the production hijack (smallBuffers) a
// recordingConn instead of the connection net/http hijacked.
type recordingHijacker struct {
	http.ResponseWriter
	sess *session
	rec  chan<- *recordingConn
}

func (h recordingHijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(h.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	rc := &recordingConn{Conn: c, fc: &h.sess.out}
	h.rec <- rc
	return rc, brw, nil
}

// The write path's contract with coder/websocket (see wsconn.go), checked
// against the version in go.mod: through the connection and buffer the
// gateway hands it at the hijack, the library writes nothing but whole
// control frames, each within one Write, and every Write under the write
// path's lock. Pings, pongs and a close of the largest size go out here;
// a library upgrade that split a frame across writes, or wrote outside
// the lock, fails the test.
func TestLibraryControlFramesAreWholeAndLocked(t *testing.T) {
	recs := make(chan *recordingConn, 1)
	done := make(chan error, 1)
	clientPinged := make(chan struct{}) // the server closes only after the client's pings
	reason := strings.Repeat("r", 123)  // a close frame of 125 bytes: the largest
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sess := &session{}
		conn, err := websocket.Accept(smallBuffers{recordingHijacker{w, sess, recs}, sess}, r,
			&websocket.AcceptOptions{InsecureSkipVerify: true})
		if err != nil {
			done <- err
			return
		}
		go func() {
			ctx := conn.CloseRead(context.Background()) // answers the client's pings
			for i := range 5 {
				pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				err := conn.Ping(pctx)
				cancel()
				if err != nil {
					done <- fmt.Errorf("server ping %d: %w", i, err)
					return
				}
			}
			select {
			case <-clientPinged:
			case <-ctx.Done():
			}
			done <- conn.Close(4000, reason)
		}()
	}))
	defer hs.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(hs.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	closed := c.CloseRead(ctx) // answers the server's pings and its close
	for i := range 5 {
		if err := c.Ping(ctx); err != nil {
			t.Fatalf("client ping %d: %v", i, err)
		}
	}
	close(clientPinged)
	if err := <-done; err != nil {
		t.Fatalf("server: %v", err)
	}
	<-closed.Done()

	rec := <-recs
	rec.mu.Lock()
	defer rec.mu.Unlock()
	count := map[byte]int{}
	for i, w := range rec.writes {
		if !w.locked {
			t.Errorf("write %d (%x) outside the write path's lock", i, w.b)
		}
		for b := w.b; len(b) > 0; {
			if len(b) < 2 || b[0]&0x80 == 0 || b[0]&0x0f < 0x8 || b[1] > 125 || len(b) < 2+int(b[1]) {
				t.Fatalf("write %d (%x) is not whole control frames: a frame split across writes", i, w.b)
			}
			count[b[0]&0x0f]++
			if b[0]&0x0f == 0x8 && int(b[1]) != 2+len(reason) {
				t.Errorf("close frame of %d bytes of payload, want %d", b[1], 2+len(reason))
			}
			b = b[2+int(b[1]):]
		}
	}
	if count[0x9] != 5 || count[0xA] != 5 || count[0x8] != 1 {
		t.Fatalf("the library wrote %d pings, %d pongs and %d closes, want 5, 5 and 1", count[0x9], count[0xA], count[0x8])
	}
}

func TestAppendFrames(t *testing.T) {
	item := func(n int, c byte) []byte { return bytes.Repeat([]byte{c}, n) }
	tests := []struct {
		name   string
		items  [][]byte
		frames []int // payload length of each frame
	}{
		{"one byte", [][]byte{item(1, 'a')}, []int{1}},
		{"125: one-byte length", [][]byte{item(125, 'a')}, []int{125}},
		{"126: two-byte length", [][]byte{item(126, 'a')}, []int{126}},
		{"65535: two-byte length", [][]byte{item(65535, 'a')}, []int{65535}},
		{"65536: eight-byte length", [][]byte{item(65536, 'a')}, []int{65536}},
		{"packed with separators", [][]byte{item(10, 'a'), item(20, 'b'), item(30, 'c')}, []int{62}},
		{"packing stops at maxFrameOut", [][]byte{item(maxFrameOut-10, 'a'), item(9, 'b'), item(1, 'c')}, []int{maxFrameOut, 1}},
		{"an item larger than maxFrameOut goes alone", [][]byte{item(5, 'a'), item(maxFrameOut+1, 'b'), item(5, 'c')}, []int{5, maxFrameOut + 1, 5}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := bytes.NewReader(appendFrames([]byte("keep"), tt.items)[4:])
			var got [][]byte
			for i, want := range tt.frames {
				op, p := readFrame(t, r)
				if op != 0x81 || len(p) != want {
					t.Fatalf("frame %d: first byte %x, %d bytes; want 0x81 (final text frame), %d", i, op, len(p), want)
				}
				got = append(got, bytes.Split(p, []byte{protocol.Separator})...)
			}
			if r.Len() != 0 {
				t.Fatalf("%d bytes after the last frame", r.Len())
			}
			if !slicesEqual(got, tt.items) {
				t.Fatalf("the frames carry %d items, not the %d queued, in order", len(got), len(tt.items))
			}
		})
	}
}

func slicesEqual(a, b [][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}

// The library's control frames wait for the frame a writer is writing: a
// lockedConn write does not start while the write path's lock is held.
func TestLockedConnWaitsForTheWriter(t *testing.T) {
	server, client := net.Pipe() // synchronous: a write completes only when read
	defer server.Close()
	defer client.Close()
	var fc frameConn
	lc, _ := fc.attach(server)
	fc.lock() // a writer is in the middle of a frame
	wrote := make(chan error, 1)
	go func() {
		_, err := lc.Write([]byte("ping"))
		wrote <- err
	}()
	buf := make([]byte, 4)
	client.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if n, err := client.Read(buf); err == nil {
		t.Fatalf("the control frame went out (%q) while the writer held the lock", buf[:n])
	}
	fc.unlock()
	client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(client, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("after the writer: %q %v", buf, err)
	}
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
}

// A write deadline left by an earlier flush that has since passed must
// not fail the next write: neither the worker's nor a control frame of the
// library's (a heartbeat ping to a client that has been idle longer than
// WriteTimeout).
func TestStaleWriteDeadlineIsDropped(t *testing.T) {
	const topic = "chat/deadline"
	s, hs, b := writerServer(t, Config{})
	reader, sess := subscribedClient(t, s, hs, topic)
	// What a flush leaves behind, long expired.
	stale := func() {
		past := time.Now().Add(-time.Minute)
		sess.out.lock()
		sess.out.deadline = past
		sess.out.raw.SetWriteDeadline(past)
		sess.out.unlock()
	}
	stale()

	// A ping, answered by the client while it reads: the library's
	// control frame comes first, before any event could renew the deadline.
	read := make(chan []byte, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, msg, _ := reader.c.Read(ctx) // answers the ping, then reads the event
		read <- msg
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := sess.conn.Ping(ctx); err != nil {
		t.Fatalf("ping after the deadline passed: %v", err)
	}
	// Then the worker's write, the deadline stale again.
	stale()
	if _, err := b.Publish(context.Background(), topic, broker.Publication{Event: "m", Data: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
	var ev protocol.Event
	if msg := <-read; json.Unmarshal(msg, &ev) != nil || ev.Seq != 1 {
		t.Fatalf("after the deadline passed the client got %q, want the event of seq 1", msg)
	}
}

// Behind a listener whose connections have no file descriptor (TLS
// terminated by the gateway's own listener), every write goes through
// flush, and messages of every size arrive in order.
func TestWritesWithoutRawSocket(t *testing.T) {
	const topic = "chat/tls"
	s, b := writerGateway(t, Config{})
	hs := httptest.NewTLSServer(s)
	t.Cleanup(hs.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "wss"+strings.TrimPrefix(hs.URL, "https")+"/api/realtime",
		&websocket.DialOptions{Subprotocols: []string{protocol.Subprotocol}, HTTPClient: hs.Client()})
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadLimit(-1)
	t.Cleanup(func() { c.CloseNow() })
	reader := &wsConn{t: t, c: c}
	if rep := reader.request(map[string]any{"type": "connect"}); !rep.OK {
		t.Fatal(rep.Error)
	}
	if rep := reader.request(map[string]any{"type": "subscribe", "topic": topic}); !rep.OK {
		t.Fatal(rep.Error)
	}
	if sessions := s.liveSessions(); len(sessions) != 1 || sessions[0].out.rc != nil {
		t.Fatal("the TLS connection has a raw socket: the test does not exercise the fallback")
	}
	for i, size := range []int{10, 5 << 10, 300 << 10} {
		data, _ := json.Marshal(map[string]string{"pad": strings.Repeat("z", size)})
		if _, err := b.Publish(context.Background(), topic, broker.Publication{Event: "m", Data: data}); err != nil {
			t.Fatal(err)
		}
		if ev := reader.nextEvent(); ev.Seq != uint64(i+1) || len(ev.Data) != len(data) {
			t.Fatalf("event %d: seq %d, %d bytes; want seq %d, %d bytes", i, ev.Seq, len(ev.Data), i+1, len(data))
		}
	}
}
