package bench

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"syscall"
)

// Poller reads the messages of many Conns from one goroutine. It takes
// each connection's socket over from Go's runtime (a duplicate of its file
// descriptor, the original closed) and waits on an epoll set of its own:
// one epoll_wait for all the sockets that became readable, then one
// read(2) each. A goroutine per connection, parked in Go's netpoller,
// costs a failed read, a park, the netpoller's own epoll_wait and a
// wake-up per frame besides the read that gets it: at a hundred thousand
// frames a second the load generator competed for the cores it measures.
//
// Once added, a Conn belongs to the Poller: its onMsg and onEnd run on the
// Poller's goroutine, pings are answered there, and Remove ends it.
type Poller struct {
	epfd   int
	events []syscall.EpollEvent

	mu    sync.Mutex      // held while a batch of events is handled
	conns []*polled       // guarded by mu; indexed by slot
	slots map[*Conn]int32 // guarded by mu
	free  []int32         // guarded by mu; unused slots
	gen   int32           // guarded by mu; tells a slot's successive conns apart
}

// polled is one connection on a Poller; only the Poller's goroutine (or
// Remove, under mu) touches it.
type polled struct {
	c     *Conn
	fd    int
	gen   int32
	buf   []byte // bytes read and not yet taken as frames
	msg   []byte // a fragmented message's parts so far
	onMsg func(msg []byte)
	onEnd func(error)
}

// fdWriter writes to a socket the Poller owns. Only control frames go
// there (pongs, the close reply): a few bytes the socket takes at once.
type fdWriter int

func (w fdWriter) Write(b []byte) (int, error) {
	for {
		n, err := syscall.Write(int(w), b)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return max(n, 0), err
		}
		return n, nil
	}
}

// NewPoller starts a Poller's goroutine, which lives as long as the
// process.
func NewPoller() (*Poller, error) {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("bench: epoll_create1: %w", err)
	}
	p := &Poller{epfd: epfd, events: make([]syscall.EpollEvent, 256), slots: map[*Conn]int32{}}
	go p.run()
	return p, nil
}

// Add hands c to the poller: onMsg gets each text message (the slice is
// valid only during the call), onEnd the error that ends the connection
// (a *CloseError when the server closed it; net.ErrClosed after Remove),
// once. Both run on the Poller's goroutine.
func (p *Poller) Add(c *Conn, onMsg func(msg []byte), onEnd func(error)) error {
	sc, ok := c.c.(syscall.Conn)
	if !ok {
		return errors.New("bench: the connection has no file descriptor to poll")
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	fd := -1
	var dupErr error
	if err := rc.Control(func(s uintptr) { fd, dupErr = syscall.Dup(int(s)) }); err != nil {
		return err
	}
	if dupErr != nil {
		return fmt.Errorf("bench: dup: %w", dupErr)
	}
	syscall.CloseOnExec(fd)
	// The duplicate shares the socket and its non-blocking mode; closing
	// the original takes it out of Go's netpoller.
	pc := &polled{c: c, fd: fd, onMsg: onMsg, onEnd: onEnd, buf: make([]byte, 0, 4<<10)}
	if n := c.br.Buffered(); n > 0 { // read with the handshake's answer
		b, _ := c.br.Peek(n)
		pc.buf = append(pc.buf, b...)
	}
	c.c.Close()
	c.out = fdWriter(fd)

	p.mu.Lock()
	defer p.mu.Unlock()
	var slot int32
	if n := len(p.free); n > 0 {
		slot, p.free = p.free[n-1], p.free[:n-1]
	} else {
		slot = int32(len(p.conns))
		p.conns = append(p.conns, nil)
	}
	p.gen++
	pc.gen = p.gen
	p.conns[slot], p.slots[c] = pc, slot
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP, Fd: slot, Pad: pc.gen}
	if err := syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_ADD, fd, &ev); err != nil {
		p.conns[slot] = nil
		delete(p.slots, c)
		p.free = append(p.free, slot)
		syscall.Close(fd)
		return fmt.Errorf("bench: epoll_ctl: %w", err)
	}
	if len(pc.buf) > 0 {
		if err := pc.frames(); err != nil {
			p.end(slot, err)
		}
	}
	return nil
}

// Remove takes c off the poller and closes its socket, ending it with
// net.ErrClosed unless it ended already: onEnd has run when it returns.
func (p *Poller) Remove(c *Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if slot, ok := p.slots[c]; ok {
		p.end(slot, net.ErrClosed)
	}
}

// end takes the connection in slot off the poller, closes its socket and
// reports err. p.mu must be held.
func (p *Poller) end(slot int32, err error) {
	pc := p.conns[slot]
	syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_DEL, pc.fd, nil)
	syscall.Close(pc.fd)
	p.conns[slot] = nil
	delete(p.slots, pc.c)
	p.free = append(p.free, slot)
	pc.onEnd(err)
}

func (p *Poller) run() {
	for {
		n, err := syscall.EpollWait(p.epfd, p.events, -1)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			panic(fmt.Sprintf("bench: epoll_wait: %v", err)) // only a bad epoll descriptor gets here
		}
		p.mu.Lock()
		for _, ev := range p.events[:n] {
			pc := p.conns[ev.Fd]
			if pc == nil || pc.gen != ev.Pad {
				continue // ended since: a stale event
			}
			if err := pc.readable(); err != nil {
				p.end(ev.Fd, err)
			}
		}
		p.mu.Unlock()
	}
}

// readable reads what the socket holds, once, and hands on the whole
// frames it completes.
func (pc *polled) readable() error {
	if len(pc.buf) == cap(pc.buf) {
		pc.buf = grow(pc.buf, cap(pc.buf))[:len(pc.buf)]
	}
	n, err := syscall.Read(pc.fd, pc.buf[len(pc.buf):cap(pc.buf)])
	switch {
	case err == syscall.EAGAIN || err == syscall.EINTR:
		return nil // epoll said readable, the read says not yet: try again
	case err != nil:
		return err
	case n == 0:
		return errors.New("bench: the server closed the connection without a close frame")
	}
	pc.buf = pc.buf[:len(pc.buf)+n]
	return pc.frames()
}

// frames hands on every whole frame in buf and keeps the rest.
func (pc *polled) frames() error {
	b := pc.buf
	for {
		fin, op, hl, size, err := parseHeader(b)
		if err != nil {
			return err
		}
		if hl == 0 || uint64(len(b)-hl) < size {
			break // more to read
		}
		payload := b[hl : hl+int(size)]
		b = b[hl+int(size):]
		switch op {
		case opText, opContinuation:
			if !fin || len(pc.msg) > 0 {
				if len(pc.msg)+len(payload) > MaxMessage {
					return fmt.Errorf("bench: a message over %d bytes", MaxMessage)
				}
				pc.msg = append(pc.msg, payload...)
				if !fin {
					continue
				}
				payload, pc.msg = pc.msg, pc.msg[:0]
			}
			pc.onMsg(payload)
		case opPing, opPong, opClose:
			if err := pc.c.control(op, payload); err != nil {
				return err
			}
		default:
			return fmt.Errorf("bench: unexpected frame opcode %d", op)
		}
	}
	pc.buf = pc.buf[:copy(pc.buf, b)]
	return nil
}
