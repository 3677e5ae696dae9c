package gateway

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/zap"

	"github.com/updraft/updraft/protocol"
)

// maxBadInARow is how many malformed messages in a row a connection may
// send before it is closed with 4000.
const maxBadInARow = 10

// session is one client connection. Its reader goroutine (run, started by
// the HTTP handler that accepted it) owns the fields marked "reader only";
// a writer, running only while the outbox holds something (its write
// worker, or flush while the client reads slowly: see writer.go), drains
// it; anyone may call send and close.
type session struct {
	srv  *Server
	conn *websocket.Conn
	// out is the socket under conn, which the writers write frames on,
	// shared with the library's control frames (see wsconn.go).
	out    frameConn
	worker *writeWorker // writes for the connection while its client keeps up
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
}

func (s *Server) serveWebSocket(w http.ResponseWriter, r *http.Request) {
	if s.draining.Load() {
		writeError(w, protocol.CodeUnavailable, "node draining: connect to another node")
		return
	}
	if err := s.checkOrigin(r); err != nil {
		writeError(w, protocol.CodeForbidden, err.Error())
		return
	}
	sess := &session{srv: s, id: newID("s_"), subs: make(map[string]*subscription), tracked: make(map[string]*tracked)}
	conn, err := websocket.Accept(smallBuffers{w, sess}, r, &websocket.AcceptOptions{
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
	sess.worker = s.writers.pick()
	sess.ctx, sess.cancel = context.WithCancel(context.WithoutCancel(r.Context()))
	sess.queue = newSendQueue(s.cfg.SendQueue, s.cfg.SendQueueBytes, &s.queued)
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
	// The session reads in a goroutine of its own and this handler returns:
	// net/http then lets go of the connection's request, response and
	// buffers, which an idle connection would otherwise hold for life.
	go sess.run()
}

// run reads the session's frames until the connection ends, then cleans
// up.
func (sess *session) run() {
	s := sess.srv
	defer func() {
		s.mu.Lock()
		delete(s.sessions, sess)
		s.mu.Unlock()
		s.metrics.connections.Dec()
		s.wg.Done()
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
	// A close the server asked for is written by the writer, after what
	// was queued (each frame within WriteTimeout); a client that went away
	// gets nothing more: closing the connection ends a write in progress.
	gone := !sess.closing()
	if gone {
		sess.conn.CloseNow()
	}
	sess.queue.shut(gone)
	sess.cancel()
	sess.conn.CloseNow()
	sess.unsubscribeAll()
}

func (sess *session) seen() { sess.lastSeen.Store(time.Now().UnixNano()) }

// send queues an encoded message without blocking, starting the writer
// when none runs. A full outbox closes the session as a slow consumer. It
// reports whether b was queued.
func (sess *session) send(b []byte) bool {
	ok, full, start := sess.queue.push(b)
	sess.startWriter(start)
	if full {
		sess.slowConsumer()
	}
	return ok
}

// startWriter hands the connection to its write worker when the queue
// said to (start).
func (sess *session) startWriter(start bool) {
	if start {
		sess.worker.schedule(sess)
	}
}

// slowConsumer closes the session with 4008, dropping its backlog.
func (sess *session) slowConsumer() {
	first, start := sess.queue.finish(protocol.CloseSlowConsumer, "slow consumer", protocol.EncodeDisconnect(protocol.CloseSlowConsumer, "slow consumer"), true)
	sess.startWriter(start)
	if first {
		sess.srv.metrics.slowConsumers.Inc()
		sess.srv.metrics.closes.WithLabelValues(strconv.Itoa(protocol.CloseSlowConsumer)).Inc()
	}
}

// close asks the writer to send what is queued, then a disconnect message,
// then the close frame. Only the first close of a session has an effect.
func (sess *session) close(code int, reason string) {
	first, start := sess.queue.finish(code, reason, protocol.EncodeDisconnect(code, reason), false)
	sess.startWriter(start)
	if first {
		sess.srv.metrics.closes.WithLabelValues(strconv.Itoa(code)).Inc()
	}
}

// closing reports whether a close was requested.
func (sess *session) closing() bool {
	return sess.queue.finished()
}

// readBufs holds the buffers frames are read into: a connection holds one
// only while it reads a frame. Requests do not keep references into it
// (what outlives a request is copied: see broker.Memory.Publish and the
// presence state).
var readBufs = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// smallBuffers hands the WebSocket library a 1 KiB read buffer and a write
// buffer the size of the largest control frame instead of net/http's 4 KiB
// ones (its connection's, which net/http frees with the connection once the
// handler returned: see serveWebSocket), so that an idle connection does
// not hold 8 KiB of buffers for life. A larger frame is read past the
// buffer, straight from the socket (bufio does so), at the cost of one more
// system call for its header. The library writes control frames only, and
// its write side is the write path's (frameConn.attach, wsconn.go).
type smallBuffers struct {
	http.ResponseWriter
	sess *session // its write side is attached to the hijacked connection
}

// connBufferSize fits one typical request and its frame header.
const connBufferSize = 1 << 10

func (w smallBuffers) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w smallBuffers) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	// What the client sent after its handshake may already sit in
	// net/http's reader. It must sit in the new reader's buffer too: the
	// library keeps what is buffered and then reads the connection itself.
	// net/http flushed the 101 response before handing the connection
	// over, so its writer holds nothing.
	br := bufio.NewReaderSize(c, connBufferSize)
	if n := brw.Reader.Buffered(); n > 0 {
		early, _ := brw.Reader.Peek(n)
		br = bufio.NewReaderSize(io.MultiReader(bytes.NewReader(bytes.Clone(early)), c), max(connBufferSize, n))
		if _, err := br.Peek(n); err != nil {
			c.Close()
			return nil, nil, err
		}
	}
	// The library writes control frames only, under the write path's lock.
	lc, bw := w.sess.out.attach(c)
	return lc, bufio.NewReadWriter(br, bw), nil
}

// heartbeatLoop pings every connection each heartbeat, and closes one
// silent for two with 1001, until ctx ends: one goroutine for the node,
// not one per connection.
func (s *Server) heartbeatLoop(ctx context.Context) {
	hb := s.cfg.Heartbeat
	ticker := time.NewTicker(hb)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		for _, sess := range s.liveSessions() {
			if time.Since(time.Unix(0, sess.lastSeen.Load())) > 2*hb {
				sess.close(protocol.CloseGoingAway, "no heartbeat from client")
				continue
			}
			go sess.ping(hb)
		}
	}
}

// ping sends a WebSocket ping and waits up to timeout for the pong.
func (sess *session) ping(timeout time.Duration) {
	ctx, cancel := context.WithTimeout(sess.ctx, timeout)
	defer cancel()
	if sess.conn.Ping(ctx) == nil {
		sess.seen()
	}
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
		buf := readBufs.Get().(*bytes.Buffer)
		buf.Reset()
		_, err = buf.ReadFrom(io.LimitReader(r, int64(max)+1))
		stop := err != nil || buf.Len() > max
		switch {
		case err != nil:
			sess.cancel()
		case buf.Len() > max:
			sess.close(protocol.CloseTooBig, "frame larger than "+strconv.Itoa(max)+" bytes")
		default:
			protocol.Lines(buf.Bytes(), sess.handleLine)
		}
		if buf.Cap() <= maxPooledFrame {
			readBufs.Put(buf)
		}
		if stop {
			return
		}
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
