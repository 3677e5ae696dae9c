package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/updraft/updraft/protocol"
)

// rawConn is a bare WebSocket to a gateway, for tests that must send what a
// well-behaved client never would and watch exactly what comes back.
type rawConn struct {
	t       *testing.T
	c       *websocket.Conn
	pending []json.RawMessage // messages read but not yet consumed
}

func dialRaw(t *testing.T, url string, header http.Header) *rawConn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{Subprotocols: []string{protocol.Subprotocol}, HTTPHeader: header})
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	c.SetReadLimit(64 << 20)
	t.Cleanup(func() { c.CloseNow() })
	return &rawConn{t: t, c: c}
}

// connect sends connect with token and fails unless it succeeds.
func (r *rawConn) connect(tok string) {
	r.t.Helper()
	r.send(`{"type":"connect","ref":"c1","token":"` + tok + `"}`)
	if rep := r.reply("c1"); !rep.OK {
		r.t.Fatalf("connect refused: %+v", rep.Error)
	}
}

func (r *rawConn) send(frame string) {
	r.t.Helper()
	r.sendType(websocket.MessageText, []byte(frame))
}

func (r *rawConn) sendType(typ websocket.MessageType, b []byte) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := r.c.Write(ctx, typ, b); err != nil {
		r.t.Fatalf("write: %v", err)
	}
}

// next returns the next message from the server, or the close error.
func (r *rawConn) next(timeout time.Duration) (json.RawMessage, error) {
	if len(r.pending) > 0 {
		m := r.pending[0]
		r.pending = r.pending[1:]
		return m, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	typ, b, err := r.c.Read(ctx)
	if err != nil {
		return nil, err
	}
	if typ != websocket.MessageText {
		r.t.Fatalf("server sent a binary frame")
	}
	protocol.Lines(b, func(l []byte) { r.pending = append(r.pending, append(json.RawMessage(nil), l...)) })
	return r.next(timeout)
}

// reply reads until the reply to ref, skipping events.
func (r *rawConn) reply(ref string) protocol.Reply {
	r.t.Helper()
	for {
		m, err := r.next(5 * time.Second)
		if err != nil {
			r.t.Fatalf("waiting for reply %q: %v", ref, err)
		}
		var rep protocol.Reply
		if json.Unmarshal(m, &rep) == nil && rep.Type == protocol.TypeReply && rep.Ref == ref {
			return rep
		}
	}
}

// replyTo sends one request and returns its reply.
func (r *rawConn) replyTo(ref, frame string) protocol.Reply {
	r.t.Helper()
	r.send(frame)
	return r.reply(ref)
}

// expectError fails unless rep is an error with code.
func (r *rawConn) expectError(rep protocol.Reply, code string) {
	r.t.Helper()
	if rep.OK || rep.Error == nil || rep.Error.Code != code || rep.Error.Message == "" {
		r.t.Fatalf("reply %+v (error %+v), want error %s with a message", rep, rep.Error, code)
	}
}

// expectClose reads until the connection ends and checks that the server
// sent a disconnect message with code and closed with the same code.
func (r *rawConn) expectClose(code int) {
	r.t.Helper()
	sawDisconnect := false
	for {
		m, err := r.next(15 * time.Second)
		if err != nil {
			var ce websocket.CloseError
			if !errors.As(err, &ce) {
				r.t.Fatalf("want close %d, connection ended with %v", code, err)
			}
			if int(ce.Code) != code {
				r.t.Fatalf("closed with %d %q, want %d", ce.Code, ce.Reason, code)
			}
			if !sawDisconnect {
				r.t.Fatalf("closed with %d but no disconnect message came first", code)
			}
			return
		}
		var d protocol.Disconnect
		if json.Unmarshal(m, &d) == nil && d.Type == protocol.TypeDisconnect {
			if d.Code != code || d.Reason == "" {
				r.t.Fatalf("disconnect %+v, want code %d with a reason", d, code)
			}
			sawDisconnect = true
		}
	}
}

// alive fails unless the connection still answers a ping.
func (r *rawConn) alive() {
	r.t.Helper()
	if rep := r.replyTo("alive", `{"type":"ping","ref":"alive"}`); !rep.OK {
		r.t.Fatalf("ping after bad input: %+v", rep.Error)
	}
}
