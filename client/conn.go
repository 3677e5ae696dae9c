package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"

	"github.com/updraft/updraft/protocol"
)

const (
	// defaultMaxMessage is the server's frame limit until its connect reply
	// tells the real one (the protocol's default).
	defaultMaxMessage = 64 << 10
	// writeTimeout bounds one frame write; a connection that cannot take a
	// frame for this long is dropped and reconnected.
	writeTimeout = 10 * time.Second
	// disconnectGrace is how long the client waits for the close frame that
	// should follow the server's disconnect message.
	disconnectGrace = 2 * time.Second
)

// conn is one WebSocket connection and the requests in flight on it. A
// Client replaces its conn on every reconnect; a conn never reconnects. Its
// reader and writer goroutines stop when the WebSocket closes.
type conn struct {
	c  *Client
	ws *websocket.Conn // set before the goroutines start

	// session and node come from the connect reply, set before the conn is
	// attached and read-only afterwards.
	session, node string

	maxMessage atomic.Int64 // the server's limit on the frames we send
	lastSeen   atomic.Int64 // Unix nanoseconds of the last frame or ping received
	silent     atomic.Bool  // set when the watchdog dropped the connection

	mu sync.Mutex
	// pending maps the ref of each request awaiting its reply to the
	// function that takes the reply. Guarded by mu.
	pending map[string]func(*protocol.Reply, error)
	// out holds encoded messages waiting for the writer. Guarded by mu.
	out [][]byte
	// closeErr is set when the reader stops; nil while the conn lives. Guarded by mu.
	closeErr *CloseError
	// disconnect is the server's disconnect message, if one came. Guarded by mu.
	disconnect *protocol.Disconnect
	// watchdog drops the conn when the server falls silent. Guarded by mu.
	watchdog *time.Timer

	wake chan struct{} // capacity 1: out is not empty
	done chan struct{} // closed when the reader stopped; closeErr is set by then
}

// connect dials the server, sends connect and waits for the reply. On
// success the returned conn runs its reader and writer; the caller attaches
// it. ctx bounds the handshake only.
func (c *Client) connect(ctx context.Context) (*conn, error) {
	token, err := c.nextToken(ctx)
	if err != nil {
		return nil, err
	}
	cn := &conn{
		c:       c,
		pending: make(map[string]func(*protocol.Reply, error)),
		wake:    make(chan struct{}, 1),
		done:    make(chan struct{}),
	}
	cn.maxMessage.Store(defaultMaxMessage)
	cn.lastSeen.Store(time.Now().UnixNano())
	ws, resp, err := websocket.Dial(ctx, c.url, &websocket.DialOptions{
		HTTPHeader:   c.opts.Header,
		Subprotocols: []string{protocol.Subprotocol},
		OnPingReceived: func(context.Context, []byte) bool {
			cn.lastSeen.Store(time.Now().UnixNano())
			return true
		},
	})
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			if reason := handshakeReason(resp); reason != "" {
				return nil, fmt.Errorf("client: dial %s: server answered %s: %s", c.url, resp.Status, reason)
			}
			return nil, fmt.Errorf("client: dial %s: server answered %s: %w", c.url, resp.Status, err)
		}
		return nil, fmt.Errorf("client: dial %s: %w", c.url, err)
	}
	ws.SetReadLimit(c.opts.ReadLimit)
	cn.ws = ws
	c.wg.Add(2)
	go cn.readLoop()
	go cn.writeLoop()

	r, err := cn.call(ctx, &protocol.Request{Type: protocol.TypeConnect, Token: token, SDK: c.opts.SDK})
	if err != nil {
		_ = ws.CloseNow()
		var perr *protocol.Error
		var ce *CloseError
		switch {
		case errors.As(err, &perr):
			return nil, fmt.Errorf("client: connect refused: %w", err)
		case errors.As(err, &ce):
			return nil, ce // closed before replying
		}
		return nil, fmt.Errorf("client: connect: %w", err)
	}
	var res protocol.ConnectResult
	if err := json.Unmarshal(r.Data, &res); err != nil {
		_ = ws.CloseNow()
		return nil, fmt.Errorf("client: connect: bad reply data: %w", err)
	}
	cn.session, cn.node = res.Session, res.Node
	if res.MaxMessage > 0 {
		cn.maxMessage.Store(int64(res.MaxMessage))
	}
	if res.Heartbeat > 0 {
		// The server pings every heartbeat: a silence of two and a half
		// heartbeats means it or the network is gone.
		cn.startWatchdog(time.Duration(res.Heartbeat) * c.opts.heartbeatUnit * 5 / 2)
	}
	return cn, nil
}

// close closes the connection with a close handshake (status 1000),
// bounded by the websocket library's timeouts.
func (cn *conn) close() {
	_ = cn.ws.Close(websocket.StatusNormalClosure, "")
}

// call sends req and waits for its reply. It returns the reply's
// *protocol.Error when the server refused, and the *CloseError of the
// connection when it ended first.
func (cn *conn) call(ctx context.Context, req *protocol.Request) (*protocol.Reply, error) {
	p, err := cn.start(req)
	if err != nil {
		return nil, err
	}
	return p.wait(ctx)
}

// pendingCall is a request sent and waiting for its reply.
type pendingCall struct {
	cn  *conn
	ref string
	ch  chan callResult
}

type callResult struct {
	r   *protocol.Reply
	err error
}

// start sends req; wait then waits for the reply. It lets a caller queue
// the request while holding a lock and wait without it.
func (cn *conn) start(req *protocol.Request) (*pendingCall, error) {
	ch := make(chan callResult, 1)
	ref, err := cn.send(req, func(r *protocol.Reply, err error) { ch <- callResult{r, err} })
	if err != nil {
		return nil, err
	}
	return &pendingCall{cn: cn, ref: ref, ch: ch}, nil
}

// wait returns the ok reply, the failed reply's *protocol.Error, the
// connection's *CloseError, or ctx's error.
func (p *pendingCall) wait(ctx context.Context) (*protocol.Reply, error) {
	select {
	case res := <-p.ch:
		if res.err != nil {
			return nil, res.err
		}
		if !res.r.OK {
			return nil, res.r.Error
		}
		return res.r, nil
	case <-ctx.Done():
		p.cn.forget(p.ref)
		return nil, ctx.Err()
	}
}

// send gives req a fresh ref and queues it for the writer; fn, when not
// nil, receives the reply or, if the connection ends first, its
// *CloseError. fn runs on the reader goroutine and must not block. send
// never blocks; on a connection that has ended it sends nothing and
// returns a notSentError.
func (cn *conn) send(req *protocol.Request, fn func(*protocol.Reply, error)) (string, error) {
	req.Ref = strconv.FormatUint(cn.c.refs.Add(1), 10)
	b, err := marshal(req)
	if err != nil {
		return "", fmt.Errorf("client: encoding %s: %w", req.Type, err)
	}
	if max := cn.maxMessage.Load(); int64(len(b)) > max {
		return "", fmt.Errorf("%w: %s is %d bytes, the server accepts %d", ErrTooLarge, req.Type, len(b), max)
	}
	cn.mu.Lock()
	if cn.closeErr != nil {
		err := notSentError{cn.closeErr}
		cn.mu.Unlock()
		return "", err
	}
	if fn != nil {
		cn.pending[req.Ref] = fn
	}
	cn.out = append(cn.out, b)
	cn.mu.Unlock()
	select {
	case cn.wake <- struct{}{}:
	default:
	}
	return req.Ref, nil
}

// notSentError is the *CloseError of a connection that had ended before a
// request could be queued on it: the request can go on the next one.
type notSentError struct{ ce *CloseError }

func (e notSentError) Error() string { return e.ce.Error() }
func (e notSentError) Unwrap() error { return e.ce }

// forget drops the reply function of a request nobody waits for anymore.
func (cn *conn) forget(ref string) {
	cn.mu.Lock()
	delete(cn.pending, ref)
	cn.mu.Unlock()
}

// writeLoop writes queued messages, packing as many as fit the server's
// limit into each frame, until the connection ends.
func (cn *conn) writeLoop() {
	defer cn.c.wg.Done()
	var frame []byte
	for {
		select {
		case <-cn.wake:
		case <-cn.done:
			return
		}
		cn.mu.Lock()
		msgs := cn.out
		cn.out = nil
		cn.mu.Unlock()
		max := int(cn.maxMessage.Load())
		for len(msgs) > 0 {
			frame = append(frame[:0], msgs[0]...)
			msgs = msgs[1:]
			for len(msgs) > 0 && len(frame)+1+len(msgs[0]) <= max {
				frame = append(frame, protocol.Separator)
				frame = append(frame, msgs[0]...)
				msgs = msgs[1:]
			}
			if err := cn.write(frame); err != nil {
				cn.c.log.Debug("client: write failed", slog.Any("error", err))
				_ = cn.ws.CloseNow() // the reader reports the end
				return
			}
		}
	}
}

func (cn *conn) write(frame []byte) error {
	ctx, cancel := context.WithTimeout(cn.c.ctx, writeTimeout)
	defer cancel()
	return cn.ws.Write(ctx, websocket.MessageText, frame)
}

// readLoop reads frames until the connection ends, then fails the pending
// requests with the connection's CloseError.
func (cn *conn) readLoop() {
	defer cn.c.wg.Done()
	var err error
	for {
		var typ websocket.MessageType
		var frame []byte
		typ, frame, err = cn.ws.Read(cn.c.ctx)
		if err != nil {
			break
		}
		cn.lastSeen.Store(time.Now().UnixNano())
		if typ != websocket.MessageText {
			continue // binary frames are reserved
		}
		protocol.Lines(frame, cn.handle)
	}
	_ = cn.ws.CloseNow()

	cn.mu.Lock()
	ce := &CloseError{Code: CloseAbnormal, Reason: err.Error()}
	var wce websocket.CloseError
	switch {
	case errors.As(err, &wce):
		ce = &CloseError{Code: int(wce.Code), Reason: wce.Reason}
	case cn.disconnect != nil:
		ce = &CloseError{Code: cn.disconnect.Code, Reason: cn.disconnect.Reason}
	case cn.silent.Load():
		ce.Reason = "no frame or ping from the server for two heartbeats"
	}
	cn.closeErr = ce
	pending := cn.pending
	cn.pending = nil
	if cn.watchdog != nil {
		cn.watchdog.Stop()
	}
	cn.mu.Unlock()
	close(cn.done)
	for _, fn := range pending {
		fn(nil, ce)
	}
}

// handle acts on one message from the server, decoded into its protocol
// type. A message it cannot read is logged and skipped.
func (cn *conn) handle(line []byte) {
	typ, err := protocol.MessageType(line)
	if err != nil && !errors.Is(err, protocol.ErrMissingType) {
		cn.unreadable(line, err)
		return
	}
	switch typ {
	case protocol.TypeReply:
		var r protocol.Reply
		if err := json.Unmarshal(line, &r); err != nil {
			cn.unreadable(line, err)
			return
		}
		cn.mu.Lock()
		fn := cn.pending[r.Ref]
		delete(cn.pending, r.Ref)
		cn.mu.Unlock()
		if fn == nil {
			cn.c.log.Debug("client: reply to no pending request", slog.String("ref", r.Ref))
			return
		}
		if !r.OK && r.Error == nil {
			r.Error = &protocol.Error{Code: protocol.CodeInternal, Message: "failed reply without an error"}
		}
		fn(&r, nil)
	case protocol.TypeEvent:
		var ev protocol.Event
		if err := json.Unmarshal(line, &ev); err != nil {
			cn.unreadable(line, err)
			return
		}
		cn.c.event(ev)
	case protocol.TypePresence:
		var ev protocol.PresenceEvent
		if err := json.Unmarshal(line, &ev); err != nil {
			cn.unreadable(line, err)
			return
		}
		cn.c.presence(ev)
	case protocol.TypeDisconnect:
		var d protocol.Disconnect
		if err := json.Unmarshal(line, &d); err != nil {
			cn.unreadable(line, err)
			return
		}
		cn.mu.Lock()
		cn.disconnect = &d
		cn.mu.Unlock()
		cn.c.log.Info("client: server disconnects", slog.Int("code", d.Code), slog.String("reason", d.Reason))
		// The close frame should follow at once; do not wait for it forever.
		time.AfterFunc(disconnectGrace, func() { _ = cn.ws.CloseNow() })
	default:
		// Types of later versions.
		cn.c.log.Debug("client: message ignored", slog.String("type", typ))
	}
}

func (cn *conn) unreadable(line []byte, err error) {
	cn.c.log.Warn("client: unreadable message from server", slog.Any("error", err), slog.String("message", string(truncate(line, 200))))
}

// startWatchdog drops the connection when nothing (no frame, no ping) came
// from the server for limit.
func (cn *conn) startWatchdog(limit time.Duration) {
	check := func() {
		idle := time.Since(time.Unix(0, cn.lastSeen.Load()))
		if idle >= limit {
			cn.c.log.Warn("client: server silent, dropping the connection", slog.Duration("silent", idle))
			cn.silent.Store(true)
			_ = cn.ws.CloseNow()
			return
		}
		cn.mu.Lock()
		if cn.closeErr == nil {
			cn.watchdog.Reset(limit - idle)
		}
		cn.mu.Unlock()
	}
	cn.mu.Lock()
	if cn.closeErr == nil {
		cn.watchdog = time.AfterFunc(limit, check)
	}
	cn.mu.Unlock()
}

func truncate(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}

// marshal encodes v as encoding/json does, but leaves <, > and & as they
// are: what a client publishes reaches subscribers byte for byte.
func marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte{'\n'}), nil
}

// handshakeReason returns why the server refused a WebSocket handshake:
// the message of the protocol's error body, {"error":{"code","message"}},
// or the start of any other body, or "" when there is none. The websocket
// package keeps the first 1 KiB of the body.
func handshakeReason(resp *http.Response) string {
	if resp.Body == nil {
		return ""
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	b = bytes.TrimSpace(b)
	var env struct {
		Error *protocol.Error `json:"error"`
	}
	if json.Unmarshal(b, &env) == nil && env.Error != nil && env.Error.Message != "" {
		return env.Error.Message
	}
	if len(b) == 0 || !utf8.Valid(b) || bytes.IndexFunc(b, func(r rune) bool { return r < ' ' && r != '\n' && r != '\t' }) >= 0 {
		return "" // nothing, or nothing to print
	}
	if len(b) > 200 {
		return strings.ToValidUTF8(string(b[:200]), "") + "..."
	}
	return string(b)
}
