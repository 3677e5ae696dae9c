package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/updraft/updraft/protocol"
)

// A Poller reads what ReadMessage reads: every length encoding, a
// fragmented message, a ping answered on the way, the close code.
func TestPollerReadsWhatConnReads(t *testing.T) {
	t.Parallel()
	url, served := wsServer(t, scripted)
	c := dial(t, url, http.Header{"Origin": {"https://app.example.com"}})
	if err := c.WriteText([]byte(`{"type":"connect","ref":"c"}`)); err != nil {
		t.Fatal(err)
	}
	p, err := NewPoller()
	if err != nil {
		t.Fatal(err)
	}
	msgs, ended := make(chan []byte, 16), make(chan error, 1)
	if err := p.Add(c, func(m []byte) { msgs <- bytes.Clone(m) }, func(err error) { ended <- err }); err != nil {
		t.Fatal(err)
	}
	const fragmented = 120_000 // the scripted fragmented message's length
	var endErr error
	gotEnd := false
	for _, n := range append(scriptSizes, fragmented) {
		var msg []byte
		select {
		case msg = <-msgs:
		case endErr = <-ended:
			// onEnd runs after every onMsg of the connection, so what came
			// before the end is in msgs already.
			gotEnd = true
			select {
			case msg = <-msgs:
			default:
				t.Fatalf("ended before the message of %d bytes: %v", n, endErr)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no message of %d bytes within 10s", n)
		}
		if n == fragmented && string(msg) != strings.Repeat("frag", 30_000) || n != fragmented && (len(msg) != n || n > 0 && msg[0] != 'a'+byte(n%26)) {
			t.Fatalf("message of %d bytes arrived as %d bytes", n, len(msg))
		}
	}
	if !gotEnd {
		select {
		case endErr = <-ended:
		case <-time.After(10 * time.Second):
			t.Fatal("no end within 10s")
		}
	}
	var ce *CloseError
	if !errors.As(endErr, &ce) || ce.Code != protocol.CloseSlowConsumer || ce.Reason != "slow consumer" {
		t.Fatalf("ended with %v, want the close 4008", endErr)
	}
	if err := <-served; err != nil {
		t.Fatalf("server: %v", err) // the ping was answered, the close replied to
	}
}

// Many connections on one Poller each get their own messages, in order;
// Remove ends a connection at once, and only once, and closes it.
func TestPollerManyConnsAndRemove(t *testing.T) {
	t.Parallel()
	const conns, messages = 20, 200
	gone := make(chan string, conns)
	url, _ := wsServer(t, func(ctx context.Context, c *websocket.Conn, r *http.Request) error {
		_, id, err := c.Read(ctx)
		if err != nil {
			return err
		}
		for i := range messages {
			if err := c.Write(ctx, websocket.MessageText, fmt.Appendf(nil, "%s:%d:%s", id, i, strings.Repeat("x", i*37))); err != nil {
				return err
			}
		}
		c.Read(ctx) // until the client goes
		gone <- string(id)
		return nil
	})
	p, err := NewPoller()
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		next int
		bad  string
	}
	results := make([]result, conns) // each touched by the Poller's goroutine only, until done
	done := make(chan int, conns)
	ended := make(chan int, 2*conns)
	cs := make([]*Conn, conns)
	for k := range conns {
		c := dial(t, url, http.Header{"Origin": {"https://app.example.com"}})
		cs[k] = c
		if err := c.WriteText([]byte(strconv.Itoa(k))); err != nil {
			t.Fatal(err)
		}
		r := &results[k]
		err := p.Add(c, func(m []byte) {
			want := fmt.Sprintf("%d:%d:%s", k, r.next, strings.Repeat("x", r.next*37))
			if string(m) != want && r.bad == "" {
				r.bad = fmt.Sprintf("message %d: %.40q, want %.40q", r.next, m, want)
			}
			if r.next++; r.next == messages {
				done <- k
			}
		}, func(error) { ended <- k })
		if err != nil {
			t.Fatal(err)
		}
	}
	for range conns {
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Fatal("not every connection got its messages within 20s")
		}
	}
	for k := range conns {
		if results[k].bad != "" {
			t.Fatalf("connection %d: %s", k, results[k].bad)
		}
	}
	p.Remove(cs[0])
	select {
	case k := <-ended:
		if k != 0 {
			t.Fatalf("connection %d ended, want 0", k)
		}
	default:
		t.Fatal("Remove returned before the connection's end was reported")
	}
	p.Remove(cs[0])
	if len(ended) != 0 {
		t.Fatal("a second Remove reported the end again")
	}
	select {
	case id := <-gone:
		if id != "0" {
			t.Fatalf("the server saw connection %s go, want 0", id)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the removed connection was not closed")
	}
}
