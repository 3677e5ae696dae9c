package gateway

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/zap"

	"github.com/updraft/updraft/protocol"
)

// maxFrameOut caps one packed server frame; more queued messages go out in
// further frames.
const maxFrameOut = 256 << 10

// maxBadInARow is how many malformed messages in a row a connection may
// send before it is closed with 4000.
const maxBadInARow = 10

// session is one client connection. Its reader goroutine (the HTTP handler
// that accepted it) owns the fields marked "reader only"; its writer
// goroutine owns the outbox's draining; anyone may call send and close.
type session struct {
	srv    *Server
	conn   *websocket.Conn
	id     string
	ctx    context.Context // cancelled when the session ends
	cancel context.CancelFunc
	queue  *sendQueue

	lastSeen  atomic.Int64 // unix nanos of the last frame or pong from the client
	connected atomic.Bool  // a connect succeeded

	// reader only
	claims  *Claims
	key     string // the token's sub, or the session id when anonymous
	subs    map[string]*subscription
	tracked map[string]*tracked // presence memberships by topic
	limiter rateLimiter
	badRun  int
	expiry  *time.Timer
	readBuf bytes.Buffer
}

func (s *Server) serveWebSocket(w http.ResponseWriter, r *http.Request) {
	if s.draining.Load() {
		writeError(w, http.StatusServiceUnavailable, protocol.CodeUnavailable, "node draining: connect to another node")
		return
	}
	if err := s.checkOrigin(r); err != nil {
		writeError(w, http.StatusForbidden, protocol.CodeForbidden, err.Error())
		return
	}
	sess := &session{srv: s, id: newID("s_"), subs: make(map[string]*subscription), tracked: make(map[string]*tracked)}
	conn, err := websocket.Accept(w, r, &websocket.AcceptOptions{
		Subprotocols:       []string{protocol.Subprotocol},
		InsecureSkipVerify: true, // checkOrigin above applies UPDRAFT_ALLOWED_ORIGINS
		OnPongReceived:     func(context.Context, []byte) { sess.seen() },
	})
	if err != nil {
		return // Accept has answered the request
	}
	if sp := conn.Subprotocol(); sp != "" && sp != protocol.Subprotocol {
		conn.Close(protocol.CloseProtocol, "unsupported subprotocol")
		return
	}
	conn.SetReadLimit(-1) // the reader applies MaxMessage itself, to send a disconnect first
	sess.conn = conn
	sess.ctx, sess.cancel = context.WithCancel(context.WithoutCancel(r.Context()))
	sess.queue = newSendQueue(s.cfg.SendQueue, s.cfg.SendQueueBytes)
	sess.limiter = newRateLimiter(s.cfg.ClientRate)
	sess.seen()

	s.mu.Lock()
	if s.draining.Load() {
		s.mu.Unlock()
		conn.Close(protocol.CloseDraining, "node draining")
		return
	}
	s.sessions[sess] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	s.metrics.connections.Inc()
	defer func() {
		s.mu.Lock()
		delete(s.sessions, sess)
		s.mu.Unlock()
		s.metrics.connections.Dec()
		s.wg.Done()
	}()

	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		sess.writeLoop()
	}()
	connectTimer := time.AfterFunc(s.cfg.ConnectTimeout, func() {
		if !sess.connected.Load() {
			sess.close(protocol.CloseUnauthorized, "no connect within "+s.cfg.ConnectTimeout.String())
		}
	})
	sess.readLoop()
	connectTimer.Stop()
	if sess.expiry != nil {
		sess.expiry.Stop()
	}
	<-writerDone
	sess.cancel()
	conn.CloseNow()
	sess.unsubscribeAll()
}

func (sess *session) seen() { sess.lastSeen.Store(time.Now().UnixNano()) }

// send queues an encoded message without blocking. A full outbox closes
// the session as a slow consumer. It reports whether b was queued.
func (sess *session) send(b []byte) bool {
	ok, full := sess.queue.push(b)
	if full {
		sess.slowConsumer()
	}
	return ok
}

// slowConsumer closes the session with 4008, dropping its backlog.
func (sess *session) slowConsumer() {
	if sess.queue.finish(protocol.CloseSlowConsumer, "slow consumer", protocol.EncodeDisconnect(protocol.CloseSlowConsumer, "slow consumer"), true) {
		sess.srv.metrics.slowConsumers.Inc()
		sess.srv.metrics.closes.WithLabelValues("4008").Inc()
	}
}

// close asks the writer to send what is queued, then a disconnect message,
// then the close frame. Only the first close of a session has an effect.
func (sess *session) close(code int, reason string) {
	if sess.queue.finish(code, reason, protocol.EncodeDisconnect(code, reason), false) {
		sess.srv.metrics.closes.WithLabelValues(strconv.Itoa(code)).Inc()
	}
}

// closing reports whether a close was requested.
func (sess *session) closing() bool {
	sess.queue.mu.Lock()
	defer sess.queue.mu.Unlock()
	return sess.queue.done
}

// writeLoop drains the outbox, packing whatever is queued into as few
// frames as possible, and pings the client every heartbeat.
func (sess *session) writeLoop() {
	hb := sess.srv.cfg.Heartbeat
	ticker := time.NewTicker(hb)
	defer ticker.Stop()
	var items [][]byte
	var frame []byte
	for {
		select {
		case <-sess.ctx.Done():
			return
		case <-ticker.C:
			if time.Since(time.Unix(0, sess.lastSeen.Load())) > 2*hb {
				sess.close(protocol.CloseGoingAway, "no heartbeat from client")
				continue
			}
			go func() {
				ctx, cancel := context.WithTimeout(sess.ctx, hb)
				defer cancel()
				if sess.conn.Ping(ctx) == nil {
					sess.seen()
				}
			}()
		case <-sess.queue.ready:
			var done bool
			var code int
			var reason string
			items, done, code, reason = sess.queue.take(items[:0])
			var err error
			frame, err = sess.writeFrames(items, frame[:0])
			clear(items)
			if err != nil {
				sess.cancel()
				return
			}
			if done {
				sess.conn.Close(websocket.StatusCode(code), reason)
				sess.cancel()
				return
			}
		}
	}
}

// writeFrames writes items newline-separated in frames of at most
// maxFrameOut bytes (a single larger item goes alone), reusing buf.
func (sess *session) writeFrames(items [][]byte, buf []byte) ([]byte, error) {
	for len(items) > 0 {
		buf = append(buf[:0], items[0]...)
		items = items[1:]
		for len(items) > 0 && len(buf)+1+len(items[0]) <= maxFrameOut {
			buf = append(buf, protocol.Separator)
			buf = append(buf, items[0]...)
			items = items[1:]
		}
		ctx, cancel := context.WithTimeout(sess.ctx, sess.srv.cfg.WriteTimeout)
		err := sess.conn.Write(ctx, websocket.MessageText, buf)
		cancel()
		if err != nil {
			return buf, err
		}
	}
	return buf, nil
}

// readLoop reads frames until the connection ends or a close is requested.
func (sess *session) readLoop() {
	max := sess.srv.cfg.MaxMessage
	for !sess.closing() {
		typ, r, err := sess.conn.Reader(sess.ctx)
		if err != nil {
			if !sess.closing() {
				sess.cancel() // the client went away: stop the writer too
			}
			return
		}
		sess.seen()
		if typ != websocket.MessageText {
			sess.close(protocol.CloseUnsupportedData, "binary frames are not supported")
			return
		}
		sess.readBuf.Reset()
		if _, err := sess.readBuf.ReadFrom(io.LimitReader(r, int64(max)+1)); err != nil {
			sess.cancel()
			return
		}
		if sess.readBuf.Len() > max {
			sess.close(protocol.CloseTooBig, "frame larger than "+strconv.Itoa(max)+" bytes")
			return
		}
		protocol.Lines(sess.readBuf.Bytes(), sess.handleLine)
	}
}

func (sess *session) handleLine(line []byte) {
	if sess.closing() {
		return
	}
	req, err := protocol.DecodeRequest(line)
	if err != nil {
		var de *protocol.DecodeError
		ref := ""
		if errors.As(err, &de) {
			ref = de.Ref
		}
		sess.replyError(ref, protocol.CodeBadRequest, err.Error())
		if sess.badRun++; sess.badRun >= maxBadInARow {
			sess.close(protocol.CloseProtocol, "too many malformed messages")
		}
		return
	}
	sess.badRun = 0
	if !sess.limiter.allow(time.Now()) {
		sess.replyError(req.Ref, protocol.CodeRateLimited, "over "+strconv.FormatFloat(sess.srv.cfg.ClientRate, 'f', -1, 64)+" requests per second")
		if sess.limiter.overFor(time.Now()) >= rateLimitGrace {
			sess.close(protocol.CloseRateLimited, "rate limit exceeded for too long")
		}
		return
	}
	if !sess.connected.Load() && req.Type != protocol.TypeConnect {
		sess.replyError(req.Ref, protocol.CodeUnauthorized, "the first message must be connect")
		sess.close(protocol.CloseUnauthorized, "not connected")
		return
	}
	sess.handle(&req)
}

// reply queues a reply; replies share the outbox with events, so a client
// sees them in the order they happened.
func (sess *session) reply(b []byte) { sess.send(b) }

func (sess *session) replyOK(ref string, data any) { sess.reply(protocol.EncodeReply(ref, data)) }

func (sess *session) replyError(ref, code, msg string) {
	sess.srv.metrics.rejected.WithLabelValues(code).Inc()
	sess.reply(protocol.EncodeError(ref, code, msg))
}

func (sess *session) logger() *zap.Logger {
	return sess.srv.log.With(zap.String("session", sess.id))
}
