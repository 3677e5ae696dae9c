package gateway

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
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
	reason := strings.Repeat("r", 123) // a close frame of 125 bytes: the largest
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
