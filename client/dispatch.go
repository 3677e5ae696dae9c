package client

import (
	"sync"
	"sync/atomic"
)

// dispatcher runs a client's handlers and callbacks one at a time on its
// own goroutine, in the order they were pushed. Pushing never blocks: the
// queue is unbounded, so the connection's reader never waits for a handler.
type dispatcher struct {
	mu sync.Mutex
	// items are the calls waiting to run. Guarded by mu.
	items []dispatchItem
	// stopped is set by stop; afterwards only control items still run.
	stopped atomic.Bool
	// running is set while a call runs.
	running atomic.Bool

	wake chan struct{} // capacity 1: items is not empty, or stop was called
	done chan struct{} // closed when the loop returned
}

// dispatchItem is one call. Control items (status changes, disconnects)
// still run after stop; events do not.
type dispatchItem struct {
	fn      func()
	control bool
}

func newDispatcher() *dispatcher {
	return &dispatcher{wake: make(chan struct{}, 1), done: make(chan struct{})}
}

// push queues fn. After stop it does nothing.
func (d *dispatcher) push(fn func(), control bool) {
	d.mu.Lock()
	if d.stopped.Load() {
		d.mu.Unlock()
		return
	}
	d.items = append(d.items, dispatchItem{fn, control})
	d.mu.Unlock()
	d.signal()
}

func (d *dispatcher) signal() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// loop runs queued calls until stop, then runs the control items still
// queued and returns.
func (d *dispatcher) loop() {
	defer close(d.done)
	var batch []dispatchItem
	for range d.wake {
		d.mu.Lock()
		batch, d.items = d.items, batch[:0]
		d.mu.Unlock()
		for i, it := range batch {
			if it.control || !d.stopped.Load() {
				d.call(it.fn)
			}
			batch[i] = dispatchItem{} // let the closure be collected
		}
		if d.stopped.Load() {
			d.mu.Lock()
			rest := len(d.items)
			d.mu.Unlock()
			if rest == 0 {
				return
			}
			d.signal()
		}
	}
}

func (d *dispatcher) call(fn func()) {
	d.running.Store(true)
	defer d.running.Store(false)
	fn()
}

// stop makes the loop drop queued events, run the remaining control items
// and return. It waits for that unless a call is running at the moment,
// which may be the caller itself (a handler that calls Close).
func (d *dispatcher) stop() {
	d.mu.Lock()
	d.stopped.Store(true)
	d.mu.Unlock()
	d.signal()
	if !d.running.Load() {
		<-d.done
	}
}
