package gateway

import (
	"bytes"
	"encoding/binary"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coder/websocket"

	"github.com/updraft/updraft/protocol"
)

// How queued messages reach the socket.
//
// A node has one write worker per core. The push that finds a connection's
// queue idle hands the connection to its worker (schedule), which takes
// everything queued, packs it into frames and writes them with one
// non-blocking write(2) on the socket. That is the whole cost of a delivery
// at low rates: no goroutine starts or wakes per connection, and a worker
// woken once writes for every connection a message reached. Under load,
// messages queue while the worker goes round its connections, so each
// write carries more of them.
//
// A write the socket does not take whole (the client reads slowly) is
// never waited for by a worker: the rest goes to a goroutine of the
// connection's own (flush), which writes with a deadline (WriteTimeout)
// and drains the queue, then lets the connection go back to the worker. So
// does the close a connection ends with, whose handshake waits for the
// client.
//
// Frames are written on the raw connection, not through the WebSocket
// library's per-message writer (its locking and writer reset were an
// eighth of the CPU of a delivery); the library still writes control
// frames (pings, pongs, close). Both write a whole frame under the
// session's wmu (the connection the library writes to takes it: see
// lockedConn), so frames never interleave.

// writePool is the node's write workers.
type writePool struct {
	workers []*writeWorker
	next    atomic.Uint32 // for handing new connections out in turn
}

func newWritePool() *writePool {
	p := &writePool{workers: make([]*writeWorker, runtime.GOMAXPROCS(0))}
	for i := range p.workers {
		w := &writeWorker{wake: make(chan struct{}, 1)}
		w.write = w.writeOnce
		p.workers[i] = w
		go w.run()
	}
	return p
}

// pick returns the worker for a new connection.
func (p *writePool) pick() *writeWorker {
	return p.workers[int(p.next.Add(1))%len(p.workers)]
}

// writeWorker writes for its connections, one at a time, never blocking.
type writeWorker struct {
	wake  chan struct{} // capacity 1: "ready has something"
	mu    sync.Mutex
	ready []*session // guarded by mu: connections whose queue has something

	// worker only
	batch []*session
	buf   writeBuf
	// The non-blocking write's argument and results, here so that handing
	// write to syscall.RawConn costs no allocation.
	write func(fd uintptr) bool
	out   []byte
	n     int
	errno error
}

// schedule hands sess, whose queue marked a writer as running, to its
// worker.
func (w *writeWorker) schedule(sess *session) {
	w.mu.Lock()
	w.ready = append(w.ready, sess)
	first := len(w.ready) == 1
	w.mu.Unlock()
	if first {
		select {
		case w.wake <- struct{}{}:
		default: // the worker has a wake-up pending
		}
	}
}

// run serves the worker's ready connections for the life of the process.
// It sleeps only when none is ready.
func (w *writeWorker) run() {
	for range w.wake {
		for {
			w.mu.Lock()
			w.batch, w.ready = w.ready, w.batch[:0]
			w.mu.Unlock()
			if len(w.batch) == 0 {
				break
			}
			for _, sess := range w.batch {
				w.serve(sess)
			}
			clear(w.batch)
		}
	}
}

// serve writes what sess has queued, or hands it to a goroutine of its own
// when the socket does not take it at once.
func (w *writeWorker) serve(sess *session) {
	frame, done, code, reason, stop := w.buf.next(sess.queue, maxWorkerFrame)
	if stop {
		sess.queue.writers.Done()
		return
	}
	// A frame that outgrew the worker's buffer is the worker's no longer
	// (see next): a flush may have it without a copy.
	own := func(b []byte) []byte {
		if w.buf.frame == nil {
			return b
		}
		return bytes.Clone(b)
	}
	if done || sess.rc == nil || !sess.wmu.TryLock() {
		// A close (its handshake waits for the client), or the library
		// is writing a control frame: not for the worker to wait on.
		go sess.flush(own(frame), false, done, code, reason)
		return
	}
	sess.dropStaleDeadline()
	n, err := w.tryWrite(sess, frame)
	switch {
	case err != nil:
		sess.wmu.Unlock()
		sess.cancel()
		sess.queue.writerDone()
	case n < len(frame):
		// The rest must follow before any other frame: the goroutine
		// inherits the lock.
		sess.srv.metrics.writesWaited.Inc()
		go sess.flush(own(frame[n:]), true, false, 0, "")
	default:
		sess.wmu.Unlock()
		// Back in line: the next round writes what came meanwhile, or
		// finds the queue empty and lets the connection go idle.
		w.schedule(sess)
	}
}

// tryWrite writes b to sess's socket with a single write(2) that does not
// wait: n is what the socket took (0 when its buffer is full).
func (w *writeWorker) tryWrite(sess *session, b []byte) (n int, err error) {
	w.out, w.n, w.errno = b, 0, nil
	err = sess.rc.Write(w.write)
	w.out = nil
	switch {
	case err != nil: // closed
		return 0, err
	case w.errno == syscall.EAGAIN:
		return 0, nil
	case w.errno != nil:
		return 0, w.errno
	}
	return w.n, nil
}

func (w *writeWorker) writeOnce(fd uintptr) bool {
	for {
		n, err := syscall.Write(int(fd), w.out)
		if err == syscall.EINTR {
			continue
		}
		w.n, w.errno = max(n, 0), err
		return true // never wait for the socket here
	}
}

// flush is a connection's writer while its client reads slowly or it is
// closing: it writes pending (holding wmu already when locked), then, as
// the worker would but waiting for the socket, everything queued after it,
// each write within WriteTimeout, and ends when the queue is empty or the
// connection closed. When done, the queue has finished: it closes the
// connection with code and reason after pending.
func (sess *session) flush(pending []byte, locked, done bool, code int, reason string) {
	defer sess.queue.writerDone()
	buf := writeBufs.Get().(*writeBuf)
	defer writeBufs.Put(buf)
	for {
		if !locked {
			sess.wmu.Lock()
		}
		err := sess.writeBlocking(pending)
		sess.wmu.Unlock()
		locked = false
		if err != nil {
			sess.cancel()
			return
		}
		if done {
			sess.conn.Close(websocket.StatusCode(code), reason)
			sess.cancel()
			return
		}
		var stop bool
		pending, done, code, reason, stop = buf.next(sess.queue, maxPooledFrame)
		if stop {
			return
		}
	}
}

// writeBlocking writes b whole, each call within at least half of
// WriteTimeout (see armWriteDeadline).
func (sess *session) writeBlocking(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	sess.armWriteDeadline()
	_, err := sess.raw.Write(b)
	return err
}

// armWriteDeadline makes sure the next blocking write has between half and
// all of WriteTimeout: it moves the connection's write deadline only once
// half of it has passed (moving a deadline costs a runtime timer update per
// write). Only flush calls it, holding wmu. The deadline stays when flush
// ends: see dropStaleDeadline.
func (sess *session) armWriteDeadline() {
	now := time.Now()
	if now.Add(sess.srv.cfg.WriteTimeout / 2).Before(sess.writeDeadline) {
		return
	}
	sess.writeDeadline = now.Add(sess.srv.cfg.WriteTimeout)
	sess.raw.SetWriteDeadline(sess.writeDeadline)
}

// dropStaleDeadline lifts the write deadline of a flush long done once it
// has passed, so that it does not fail the next write on the connection:
// the worker's (which never waits, so needs none) or a control frame of the
// library's (bounded by the library's own context). Whoever writes calls
// it, holding wmu.
func (sess *session) dropStaleDeadline() {
	if !sess.writeDeadline.IsZero() && time.Now().After(sess.writeDeadline) {
		sess.writeDeadline = time.Time{}
		sess.raw.SetWriteDeadline(time.Time{})
	}
}

// appendFrames appends items to dst as WebSocket text frames (FIN set,
// unmasked, as a server sends them), newline-separated, each frame at most
// maxFrameOut bytes of payload unless a single item is larger.
func appendFrames(dst []byte, items [][]byte) []byte {
	for len(items) > 0 {
		size, k := len(items[0]), 1
		for k < len(items) && size+1+len(items[k]) <= maxFrameOut {
			size += 1 + len(items[k])
			k++
		}
		dst = appendFrameHeader(dst, size)
		dst = append(dst, items[0]...)
		for _, it := range items[1:k] {
			dst = append(dst, protocol.Separator)
			dst = append(dst, it...)
		}
		items = items[k:]
	}
	return dst
}

// appendFrameHeader appends the header of a final, unmasked text frame
// carrying n bytes (RFC 6455 section 5.2).
func appendFrameHeader(dst []byte, n int) []byte {
	const finText = 0x80 | 0x1
	switch {
	case n < 126:
		return append(dst, finText, byte(n))
	case n <= 0xFFFF:
		return binary.BigEndian.AppendUint16(append(dst, finText, 126), uint16(n))
	default:
		return binary.BigEndian.AppendUint64(append(dst, finText, 127), uint64(n))
	}
}

// lockedConn is the connection the WebSocket library writes its control
// frames to: each write takes the session's wmu. The library writes a
// control frame with one Write (its buffer holds the largest, 127 bytes),
// so a frame of the library's never lands inside one of the writers'.
type lockedConn struct {
	net.Conn
	sess *session
}

func (c lockedConn) Write(b []byte) (int, error) {
	c.sess.wmu.Lock()
	defer c.sess.wmu.Unlock()
	c.sess.dropStaleDeadline()
	return c.Conn.Write(b)
}

// rawConnOf returns c's system call access for the workers' non-blocking
// writes, or nil when c has none (then every write goes through flush).
func rawConnOf(c net.Conn) syscall.RawConn {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}

// writeBuf is a writer's reusable memory.
type writeBuf struct {
	items [][]byte
	frame []byte
}

// next takes everything q holds (see take for done, code, reason and stop)
// and packs it into frames, valid until the next call. The frame buffer
// is kept for that call unless it grew past keep bytes.
func (b *writeBuf) next(q *sendQueue, keep int) (frame []byte, done bool, code int, reason string, stop bool) {
	b.items, done, code, reason, stop = q.take(b.items[:0])
	if stop {
		return nil, false, 0, "", true
	}
	frame = appendFrames(b.frame[:0], b.items)
	clear(b.items)
	b.frame = frame
	if cap(frame) > keep {
		b.frame = nil
	}
	return frame, done, code, reason, false
}

var writeBufs = sync.Pool{New: func() any { return new(writeBuf) }}

// maxPooledFrame bounds the frame buffers kept in the pool.
const maxPooledFrame = 64 << 10

// maxWorkerFrame bounds the frame buffer a write worker keeps between
// writes: larger than a pooled one, as a node has only one worker per core
// and under load each write carries many messages.
const maxWorkerFrame = 1 << 20
