//go:build unix

package gateway

import (
	"net"
	"syscall"
)

// The raw write of the write path (see wsconn.go) on systems with write(2).

// rawConnOf returns c's system call access for the workers' non-blocking
// writes, or nil when c has none (then every write goes through the
// connection's own goroutine).
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

// rawWriter is a write worker's memory for non-blocking writes: the
// write's argument and results live here so that handing write to
// syscall.RawConn costs no allocation. Its zero value is ready.
type rawWriter struct {
	write func(fd uintptr) bool // writeOnce, bound once
	out   []byte
	n     int
	errno error
}

// tryWrite writes b to rc with a single write(2) that does not wait: n is
// what the socket took (0 when its buffer is full).
func (w *rawWriter) tryWrite(rc syscall.RawConn, b []byte) (n int, err error) {
	if w.write == nil {
		w.write = w.writeOnce
	}
	w.out, w.n, w.errno = b, 0, nil
	err = rc.Write(w.write)
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

func (w *rawWriter) writeOnce(fd uintptr) bool {
	for {
		n, err := syscall.Write(int(fd), w.out)
		if err == syscall.EINTR {
			continue
		}
		w.n, w.errno = max(n, 0), err
		return true // never wait for the socket here
	}
}
