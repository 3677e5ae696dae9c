package gateway

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
)

// sendQueue is a connection's bounded outbox. The hub and the session push
// encoded messages without ever blocking. A writer runs only while there
// is something to write: the push that finds the queue idle says so (the
// caller hands the connection to its write worker, see writer.go), and the
// writer takes everything queued at once, packs it into frames, and lets
// go when the queue is empty. An idle connection therefore holds no writer
// and no write buffer. A push that would go past the limits fails, and the
// caller closes the connection as a slow consumer.
//
// The queued slices are shared: the same encoded event sits in the queues
// of every local subscriber, so nobody may modify them.
//
// Bytes count from the push until the writer has written them (or the
// queue dropped them): what a writer took stays counted while it writes,
// so a client that never reads holds at most maxBytes of the node's
// memory, not maxBytes queued plus a frame being written. Every queue of a
// node also counts in the node's total (nodeBytes), in slices of
// nodeCredit bytes so that most pushes touch no shared counter.
type sendQueue struct {
	maxItems int
	maxBytes int
	node     *nodeBytes
	taken    chan struct{} // capacity 1: "the writer took what was queued"
	// writers counts the writers running (at most one at a time): Add in
	// startLocked, under mu, so that after done Wait is safe; Done in
	// the take that says stop, or in writerDone.
	writers sync.WaitGroup

	mu    sync.Mutex
	items [][]byte // guarded by mu
	// bytes is the sum of len(items[i]) plus inflight. Guarded by mu.
	bytes int
	// inflight is what the running writer took and is writing; it is
	// released at the writer's next take, or when it ends. Guarded by mu.
	inflight int
	// credit is what q holds of the node's total beyond bytes: the queue
	// counts bytes+credit there. Guarded by mu.
	credit int
	done   bool // guarded by mu; no pushes accepted any more
	// writing is set while a writer runs: from the push that started it
	// until its take finds nothing left. Guarded by mu.
	writing bool
	dead    bool        // guarded by mu; the client is gone: nothing more is written
	box     *itemsArray // guarded by mu; see itemsPool
	// guarded by mu; when done, the close code and reason the writer sends
	// after it has written what is queued
	closeCode   int
	closeReason string
}

// nodeBytes is the node's total of queued bytes, across connections,
// against its cap (Config.NodeQueueBytes). A queue reserves from it a
// slice (nodeCredit) more than it needs and pushes from that credit until
// it runs out; a queue going idle hands its credit back. So the total is
// what is queued plus at most nodeCredit per busy connection, and a push
// touches the shared counter about once per nodeCredit bytes.
type nodeBytes struct {
	n   atomic.Int64
	max int64
}

// nodeCredit is the slice of the node's total a queue reserves at once.
const nodeCredit = 8 << 10

// reserve takes n bytes of the node's total for q: from its credit when
// that is enough, else from the node (with a slice more as credit, when
// the node has room for it). It reports false when the node is full.
// q.mu must be held.
func (q *sendQueue) reserve(n int) bool {
	if q.credit < n {
		need := int64(n - q.credit)
		if q.node.n.Add(need+nodeCredit) <= q.node.max {
			q.credit += int(need) + nodeCredit
		} else {
			// No room for a slice: just what is needed, if that fits.
			if q.node.n.Add(-nodeCredit) > q.node.max {
				q.node.n.Add(-need)
				return false
			}
			q.credit += int(need)
		}
	}
	q.credit -= n
	return true
}

// unreserve returns n bytes to q's credit, handing what goes past two
// slices back to the node. q.mu must be held.
func (q *sendQueue) unreserve(n int) {
	q.credit += n
	if q.credit > 2*nodeCredit {
		q.node.n.Add(-int64(q.credit - nodeCredit))
		q.credit = nodeCredit
	}
}

// returnCredit hands all of q's credit back to the node: q is idle or
// gone. q.mu must be held.
func (q *sendQueue) returnCredit() {
	if q.credit > 0 {
		q.node.n.Add(-int64(q.credit))
		q.credit = 0
	}
}

func newSendQueue(maxItems, maxBytes int, node *nodeBytes) *sendQueue {
	return &sendQueue{maxItems: maxItems, maxBytes: maxBytes, node: node, taken: make(chan struct{}, 1)}
}

// push queues b. It reports false when the queue is closed or full; full
// means the consumer is too slow, or the node holds NodeQueueBytes
// already. An item larger than the queue's byte limit never fits. start
// reports that no writer was running: the caller must start one
// (session.startWriter).
func (q *sendQueue) push(b []byte) (ok, full, start bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.done {
		return false, false, false
	}
	if len(q.items) >= q.maxItems || q.bytes+len(b) > q.maxBytes {
		return false, true, false
	}
	if !q.reserve(len(b)) {
		return false, true, false
	}
	if q.items == nil {
		q.items = q.pooledItems()
	}
	q.items = append(q.items, b)
	q.bytes += len(b)
	return true, false, q.startLocked()
}

// dropLocked forgets the queued items (not what the writer is writing).
// q.mu must be held.
func (q *sendQueue) dropLocked() {
	clear(q.items)
	q.items = q.items[:0]
	q.unreserve(q.bytes - q.inflight)
	q.bytes = q.inflight
}

// releaseLocked forgets what the writer took: it is written, or will
// never be. q.mu must be held.
func (q *sendQueue) releaseLocked() {
	if q.inflight > 0 {
		q.unreserve(q.inflight)
		q.bytes -= q.inflight
		q.inflight = 0
	}
}

// writerDone ends a writer that stops without a take that said stop
// (a write failed, or it closed the connection). A writer ends once,
// either way: shut waits for it.
func (q *sendQueue) writerDone() {
	q.mu.Lock()
	q.releaseLocked()
	q.mu.Unlock()
	q.writers.Done()
}

// startLocked marks a writer as running, reporting whether the caller must
// start it. q.mu must be held.
func (q *sendQueue) startLocked() bool {
	if q.writing || q.dead {
		return false
	}
	q.writing = true
	q.writers.Add(1)
	return true
}

// shut ends the queue once the connection's reader has ended: pushes fail
// from now on. When gone (the client went away), whatever is queued is
// dropped and a running writer writes nothing more; otherwise the writer
// finishes the close that was asked for. It returns once no writer runs.
func (q *sendQueue) shut(gone bool) {
	q.mu.Lock()
	q.done = true
	if gone {
		q.dead = true
		q.dropLocked()
		q.items = nil
	}
	q.mu.Unlock()
	q.writers.Wait() // no Add after done: safe
	// What a writer that failed left queued (the disconnect of a client
	// that stopped reading) will never be written.
	q.mu.Lock()
	q.dropLocked()
	q.items = nil
	q.returnCredit()
	q.mu.Unlock()
}

// finished reports whether the queue takes no more pushes: a close was
// asked for (finish), or the connection ended (shut).
func (q *sendQueue) finished() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.done
}

// finish stops further pushes and asks the writer to close the connection
// with code once it has written last (if not nil) after what is queued.
// When discard is true, whatever is queued is dropped first (a slow
// consumer gets no more backlog). Only the first call has an effect; it
// reports whether it was the first, and start as push does.
func (q *sendQueue) finish(code int, reason string, last []byte, discard bool) (first, start bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.done {
		return false, false
	}
	q.done = true
	q.closeCode, q.closeReason = code, reason
	if discard {
		q.dropLocked()
	}
	if last != nil {
		// The disconnect message passes the caps: it is what closes.
		q.items = append(q.items, last)
		q.bytes += len(last)
		q.node.n.Add(int64(len(last)))
	}
	return true, q.startLocked()
}

// pushWait queues b like push, but when the queue is full it waits for the
// writer to make room instead of failing, until ctx ends. It is for bulk
// sends that the session itself paces (recovered history), never for the
// fan-out path. It fails with errQueueFull when waiting cannot help: b is
// larger than the queue's limit, or the node is full while this queue's
// writer has nothing to free.
func (q *sendQueue) pushWait(ctx context.Context, b []byte, startWriter func(start bool)) error {
	if len(b) > q.maxBytes {
		return errQueueFull
	}
	for {
		ok, full, start := q.push(b)
		startWriter(start)
		switch {
		case ok:
			return nil
		case !full:
			return errQueueClosed
		}
		q.mu.Lock()
		idle := q.bytes == 0
		q.mu.Unlock()
		if idle {
			return errQueueFull
		}
		select {
		case <-q.taken:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

var (
	errQueueClosed = errors.New("gateway: connection closing")
	errQueueFull   = errors.New("gateway: outbox full")
)

// batch is what a writer takes from its queue at once (take).
type batch struct {
	items [][]byte // the messages queued, in order
	// stop: there was nothing to do. The writer has ended (the queue
	// counts it gone) and must not touch the queue again; the queue is
	// idle, and the next push starts a new writer.
	stop bool
	// close: the queue has finished. The writer writes items, then
	// closes the connection with code and reason, and ends (writerDone).
	close  bool
	code   int
	reason string
}

// take moves everything queued into dst (returned in the batch, grown as
// needed) for the running writer; what the writer took before is written
// by now, and no longer counts.
func (q *sendQueue) take(dst [][]byte) batch {
	q.mu.Lock()
	freed := q.inflight > 0
	q.releaseLocked()
	if q.dead || len(q.items) == 0 && !q.done {
		q.writing = false
		if cap(q.items) > idleItemsCap {
			q.poolItems() // an idle connection keeps no large backlog array
		}
		q.returnCredit()
		q.mu.Unlock()
		if freed {
			q.signalTaken()
		}
		q.writers.Done()
		return batch{items: dst, stop: true}
	}
	dst = append(dst, q.items...)
	clear(q.items)
	q.items, q.inflight = q.items[:0], q.bytes
	b := batch{items: dst, close: q.done, code: q.closeCode, reason: q.closeReason}
	q.mu.Unlock()
	q.signalTaken()
	return b
}

// signalTaken tells a pushWait that room was made.
func (q *sendQueue) signalTaken() {
	select {
	case q.taken <- struct{}{}:
	default:
	}
}

// idleItemsCap is the largest queue array an idle connection keeps.
const idleItemsCap = 16

// itemsPool holds the queue arrays of connections that went idle, so that
// the next burst on any connection takes one instead of growing a new array
// from nothing (a burst of a hundred messages to a thousand connections was
// 50 MB/s of garbage). Each holds its array in an itemsArray, which moves
// with it: a queue keeps the one it last took out, to put the next array
// back in without allocating.
var itemsPool sync.Pool // of *itemsArray

type itemsArray struct{ a [][]byte }

// poolItems puts q's (empty) array into itemsPool. q.mu must be held.
func (q *sendQueue) poolItems() {
	box := q.box
	if box == nil {
		box = new(itemsArray)
	}
	box.a, q.items, q.box = q.items[:0], nil, nil
	itemsPool.Put(box)
}

// pooledItems returns an array from itemsPool, or nil. q.mu must be held.
func (q *sendQueue) pooledItems() [][]byte {
	box, _ := itemsPool.Get().(*itemsArray)
	if box == nil {
		return nil
	}
	a := box.a
	box.a, q.box = nil, box
	return a
}
