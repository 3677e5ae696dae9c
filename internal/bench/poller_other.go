//go:build !linux

package bench

import (
	"net"
	"sync"
)

// Poller reads the messages of many Conns. Without epoll (this is not
// Linux) it runs a goroutine per connection; see poller_linux.go.
type Poller struct {
	mu      sync.Mutex
	removed map[*Conn]bool // guarded by mu
}

// NewPoller returns a Poller.
func NewPoller() (*Poller, error) { return &Poller{removed: map[*Conn]bool{}}, nil }

// Add hands c to the poller: onMsg gets each text message (the slice is
// valid only during the call), onEnd the error that ends the connection
// (a *CloseError when the server closed it; net.ErrClosed after Remove),
// once.
func (p *Poller) Add(c *Conn, onMsg func(msg []byte), onEnd func(error)) error {
	go func() {
		var buf []byte
		for {
			msg, err := c.ReadMessage(buf[:0])
			if err != nil {
				p.mu.Lock()
				if p.removed[c] {
					err = net.ErrClosed
					delete(p.removed, c)
				}
				p.mu.Unlock()
				onEnd(err)
				return
			}
			buf = msg
			onMsg(msg)
		}
	}()
	return nil
}

// Remove takes c off the poller and closes it, ending it with
// net.ErrClosed unless it ended already; onEnd runs on the reading
// goroutine, soon after.
func (p *Poller) Remove(c *Conn) {
	p.mu.Lock()
	p.removed[c] = true
	p.mu.Unlock()
	c.Close()
}
