package gateway

import (
	"bytes"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/coder/websocket"
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
// How frames are packed and share the socket with the WebSocket library's
// control frames, and the raw write with its fallback, is the write path's
// (wsconn.go). The hand-off between a queue and its writer is the queue's
// (queue.go): a writer takes a batch, and ends on a take that says stop or
// with writerDone.

// writePool is the node's write workers.
type writePool struct {
	workers []*writeWorker
	next    atomic.Uint32 // for handing new connections out in turn
}

func newWritePool() *writePool {
	p := &writePool{workers: make([]*writeWorker, runtime.GOMAXPROCS(0))}
	for i := range p.workers {
		w := &writeWorker{wake: make(chan struct{}, 1)}
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
	raw   rawWriter // for the non-blocking writes
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
	frame, end := w.buf.next(sess.queue, maxWorkerFrame)
	if end.stop {
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
	if end.close || !sess.out.lockNow() {
		// A close (its handshake waits for the client), no raw write
		// (the fallback), or the library is writing a control frame:
		// not for the worker to wait on.
		go sess.flush(own(frame), false, end)
		return
	}
	n, err := sess.out.tryWrite(&w.raw, frame)
	switch {
	case err != nil:
		sess.out.unlock()
		sess.cancel()
		sess.queue.writerDone()
	case n < len(frame):
		// The rest must follow before any other frame: the goroutine
		// inherits the lock.
		sess.srv.metrics.writesWaited.Inc()
		go sess.flush(own(frame[n:]), true, batch{})
	default:
		sess.out.unlock()
		// Back in line: the next round writes what came meanwhile, or
		// finds the queue empty and lets the connection go idle.
		w.schedule(sess)
	}
}

// flush is a connection's writer while its client reads slowly or it is
// closing: it writes pending (holding the write lock already when locked),
// then, as the worker would but waiting for the socket, everything queued
// after it, each write within WriteTimeout, and ends when the queue is
// empty or the connection closed. When end.close, the queue has finished:
// it closes the connection with end's code and reason after pending.
func (sess *session) flush(pending []byte, locked bool, end batch) {
	buf := writeBufs.Get().(*writeBuf)
	defer writeBufs.Put(buf)
	for {
		if !locked {
			sess.out.lock()
		}
		err := sess.out.writeBlocking(pending, sess.srv.cfg.WriteTimeout)
		sess.out.unlock()
		locked = false
		if err != nil {
			sess.cancel()
			sess.queue.writerDone()
			return
		}
		if end.close {
			sess.conn.Close(websocket.StatusCode(end.code), end.reason)
			sess.cancel()
			sess.queue.writerDone()
			return
		}
		pending, end = buf.next(sess.queue, maxPooledFrame)
		if end.stop {
			return // the queue counted the writer gone
		}
	}
}

// writeBuf is a writer's reusable memory.
type writeBuf struct {
	items [][]byte
	frame []byte
}

// next takes everything q holds and packs it into frames, valid until
// the next call; end says what else the take said (stop, close), its
// items already cleared. The frame buffer is kept for that call unless it
// grew past keep bytes.
func (b *writeBuf) next(q *sendQueue, keep int) (frame []byte, end batch) {
	end = q.take(b.items[:0])
	b.items, end.items = end.items, nil
	if end.stop {
		return nil, end
	}
	frame = appendFrames(b.frame[:0], b.items)
	clear(b.items)
	b.frame = frame
	if cap(frame) > keep {
		b.frame = nil
	}
	return frame, end
}

var writeBufs = sync.Pool{New: func() any { return new(writeBuf) }}

// maxPooledFrame bounds the frame buffers kept in the pool.
const maxPooledFrame = 64 << 10

// maxWorkerFrame bounds the frame buffer a write worker keeps between
// writes: larger than a pooled one, as a node has only one worker per core
// and under load each write carries many messages.
const maxWorkerFrame = 1 << 20
