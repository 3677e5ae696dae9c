package gateway

import (
	"context"
	"errors"
	"sync"
)

// sendQueue is a connection's bounded outbox. The hub and the session push
// encoded messages without ever blocking; one writer goroutine takes
// everything queued at once and packs it into frames. A push that would go
// past the limits fails, and the caller closes the connection as a slow
// consumer.
//
// The queued slices are shared: the same encoded event sits in the queues
// of every local subscriber, so nobody may modify them.
type sendQueue struct {
	maxItems int
	maxBytes int
	ready    chan struct{} // capacity 1: "there is something to take"
	taken    chan struct{} // capacity 1: "the writer took what was queued"

	mu    sync.Mutex
	items [][]byte // guarded by mu
	bytes int      // guarded by mu; sum of len(items[i])
	done  bool     // guarded by mu; no pushes accepted any more
	// guarded by mu; when done, the close code and reason the writer sends
	// after it has written what is queued
	closeCode   int
	closeReason string
}

func newSendQueue(maxItems, maxBytes int) *sendQueue {
	return &sendQueue{maxItems: maxItems, maxBytes: maxBytes, ready: make(chan struct{}, 1), taken: make(chan struct{}, 1)}
}

// push queues b. It reports false when the queue is closed or full; full
// means the consumer is too slow.
func (q *sendQueue) push(b []byte) (ok, full bool) {
	q.mu.Lock()
	if q.done {
		q.mu.Unlock()
		return false, false
	}
	if len(q.items) >= q.maxItems || q.bytes+len(b) > q.maxBytes && len(q.items) > 0 {
		q.mu.Unlock()
		return false, true
	}
	q.items = append(q.items, b)
	q.bytes += len(b)
	q.mu.Unlock()
	q.signal()
	return true, false
}

// finish stops further pushes and asks the writer to close the connection
// with code once it has written last (if not nil) after what is queued.
// When discard is true, whatever is queued is dropped first (a slow
// consumer gets no more backlog). Only the first call has an effect; it
// reports whether it was the first.
func (q *sendQueue) finish(code int, reason string, last []byte, discard bool) bool {
	q.mu.Lock()
	if q.done {
		q.mu.Unlock()
		return false
	}
	q.done = true
	q.closeCode, q.closeReason = code, reason
	if discard {
		clear(q.items)
		q.items, q.bytes = q.items[:0], 0
	}
	if last != nil {
		q.items = append(q.items, last)
		q.bytes += len(last)
	}
	q.mu.Unlock()
	q.signal()
	return true
}

// pushWait queues b like push, but when the queue is full it waits for the
// writer to make room instead of failing, until ctx ends. It is for bulk
// sends that the session itself paces (recovered history), never for the
// fan-out path.
func (q *sendQueue) pushWait(ctx context.Context, b []byte) error {
	for {
		ok, full := q.push(b)
		switch {
		case ok:
			return nil
		case !full:
			return errQueueClosed
		}
		select {
		case <-q.taken:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

var errQueueClosed = errors.New("gateway: connection closing")

func (q *sendQueue) signal() {
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

// take moves everything queued into dst (which it returns, grown as
// needed) and reports whether the queue has finished: then the writer
// sends code and reason after writing the items.
func (q *sendQueue) take(dst [][]byte) (items [][]byte, done bool, code int, reason string) {
	q.mu.Lock()
	dst = append(dst, q.items...)
	clear(q.items)
	q.items, q.bytes = q.items[:0], 0
	done, code, reason = q.done, q.closeCode, q.closeReason
	q.mu.Unlock()
	select {
	case q.taken <- struct{}{}:
	default:
	}
	return dst, done, code, reason
}
