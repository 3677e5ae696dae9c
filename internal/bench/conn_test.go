package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/updraft/updraft/protocol"
)

// wsServer runs handle on every WebSocket accepted with the updraft.v1
// subprotocol; what handle returns arrives on the channel.
func wsServer(t *testing.T, handle func(ctx context.Context, c *websocket.Conn, r *http.Request) error) (string, <-chan error) {
	t.Helper()
	done := make(chan error, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, &websocket.AcceptOptions{
			Subprotocols:   []string{protocol.Subprotocol},
			OriginPatterns: []string{"app.example.com"},
		})
		if err != nil {
			done <- err
			return
		}
		defer c.CloseNow()
		if c.Subprotocol() != protocol.Subprotocol {
			done <- errors.New("the client did not offer " + protocol.Subprotocol)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		defer cancel()
		done <- handle(ctx, c, r)
	}))
	t.Cleanup(srv.Close)
	return "ws" + strings.TrimPrefix(srv.URL, "http") + "/api/realtime", done
}

func dial(t *testing.T, url string, header http.Header) *Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := Dial(ctx, url, header)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// scriptSizes are the lengths of the messages scripted sends: every length
// encoding (7-bit, 16-bit, 64-bit).
var scriptSizes = []int{0, 1, 125, 126, 65535, 65536, 300_000}

// scripted is a server that checks the Origin, reads a connect, sends
// messages of scriptSizes, then a fragmented message of 30,000 "frag"s, a
// ping, and closes with 4008.
func scripted(ctx context.Context, c *websocket.Conn, r *http.Request) error {
	if got := r.Header.Get("Origin"); got != "https://app.example.com" {
		return errors.New("Origin " + got)
	}
	typ, msg, err := c.Read(ctx)
	if err != nil || typ != websocket.MessageText || string(msg) != `{"type":"connect","ref":"c"}` {
		return fmt.Errorf("read %v %q %v", typ, msg, err)
	}
	for _, n := range scriptSizes {
		if err := c.Write(ctx, websocket.MessageText, bytes.Repeat([]byte{'a' + byte(n%26)}, n)); err != nil {
			return err
		}
	}
	w, err := c.Writer(ctx, websocket.MessageText) // a fragmented message
	if err != nil {
		return err
	}
	for range 3 {
		w.Write(bytes.Repeat([]byte("frag"), 10_000))
		// coder/websocket sends what it buffered as a frame once its buffer fills.
	}
	if err := w.Close(); err != nil {
		return err
	}
	// A ping needs a reader here for the client's pong; the close
	// handshake ends it.
	go c.Read(ctx)
	if err := c.Ping(ctx); err != nil {
		return err
	}
	return c.Close(protocol.CloseSlowConsumer, "slow consumer")
}

// Messages of every length encoding (7-bit, 16-bit, 64-bit) and
// fragmented ones arrive whole; what the client writes arrives unmasked;
// pings are answered; the close code is reported.
func TestConnReadsWritesAndCloses(t *testing.T) {
	t.Parallel()
	url, served := wsServer(t, scripted)
	c := dial(t, url, http.Header{"Origin": {"https://app.example.com"}})
	if err := c.WriteText([]byte(`{"type":"connect","ref":"c"}`)); err != nil {
		t.Fatal(err)
	}
	var buf []byte
	for _, n := range scriptSizes {
		msg, err := c.ReadMessage(buf[:0])
		if err != nil {
			t.Fatalf("message of %d bytes: %v", n, err)
		}
		if len(msg) != n || n > 0 && (msg[0] != 'a'+byte(n%26) || msg[n-1] != msg[0]) {
			t.Fatalf("message of %d bytes arrived as %d bytes", n, len(msg))
		}
		buf = msg
	}
	msg, err := c.ReadMessage(buf[:0])
	if err != nil || string(msg) != strings.Repeat("frag", 30_000) {
		t.Fatalf("fragmented message: %d bytes, %v", len(msg), err)
	}
	_, err = c.ReadMessage(nil) // answers the ping on the way
	var ce *CloseError
	if !errors.As(err, &ce) || ce.Code != protocol.CloseSlowConsumer || ce.Reason != "slow consumer" {
		t.Fatalf("got %v, want the close 4008", err)
	}
	if err := <-served; err != nil {
		t.Fatalf("server: %v", err)
	}
}

func TestDialErrors(t *testing.T) {
	t.Parallel()
	plain := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(plain.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := Dial(ctx, "ws"+strings.TrimPrefix(plain.URL, "http")+"/api/realtime", nil); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("a server that does not upgrade: %v", err)
	}
	if _, err := Dial(ctx, "http"+strings.TrimPrefix(plain.URL, "http"), nil); err == nil || !strings.Contains(err.Error(), "not a ws://") {
		t.Errorf("an http URL: %v", err)
	}

	// A server that accepts the connection and never answers: the
	// context bounds the handshake.
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }))
	t.Cleanup(hang.Close)
	short, cancel2 := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel2()
	if _, err := Dial(short, "ws"+strings.TrimPrefix(hang.URL, "http"), nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("a silent server: %v, want the context's deadline", err)
	}
}
