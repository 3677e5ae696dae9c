package gateway

import (
	"bufio"
	"encoding/binary"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/updraft/updraft/protocol"
)

// The WebSocket write path: how two writers share one socket.
//
// A connection's data frames are not written through coder/websocket's
// message writer (its locking and writer reset were an eighth of the CPU
// of a delivery): the gateway packs them itself (appendFrames) and writes
// them on the hijacked connection underneath the library (frameConn). The
// library still writes the control frames: pings, pongs and the close.
// This file is the one place that arranges it, and what it relies on:
//
//   - Framing. appendFrames writes final, unmasked text frames, as a server
//     sends them (RFC 6455 section 5.2); the library never writes a data
//     frame on a gateway connection.
//   - The shared lock. Whoever writes to the socket holds frameConn.mu for
//     the whole frame: the gateway's writers (writer.go) for each write,
//     the library through lockedConn, the connection it is handed at the
//     hijack (frameConn.attach), for each of its writes.
//   - The library's side of the bargain, which the lock needs: it writes
//     each control frame in one Write, and only through the connection it
//     was handed. It does so because attach gives it a write buffer the
//     size of the largest control frame (controlFrameSize, 127 bytes) and
//     it flushes after each frame. A library version that split a control
//     frame across writes could put a data frame inside it, and one that
//     wrote around lockedConn could write inside a data frame: the test
//     TestLibraryControlFramesAreWholeAndLocked fails on either, against
//     the version in go.mod.
//   - The raw write. A write worker writes with one non-blocking write(2)
//     (frameConn.tryWrite, in wsconn_unix.go), never waiting for a slow
//     client; what the socket does not take, a goroutine of the connection's
//     own finishes with blocking writes under WriteTimeout (writeBlocking).
//   - The fallback. A connection without a file descriptor (TLS terminated
//     by the gateway's own listener), or any connection on a system without
//     the Unix write(2) (wsconn_other.go), has no rc: every write goes
//     through the connection's own goroutine, with blocking writes.

const (
	// maxFrameOut caps one packed server frame; more queued messages go
	// out in further frames.
	maxFrameOut = 256 << 10
	// controlFrameSize is the largest control frame a server writes: a
	// 2-byte header and 125 bytes (RFC 6455 section 5.5). It is the size
	// of the library's write buffer (see attach).
	controlFrameSize = 127
)

// frameConn is a connection's write side: the socket under the WebSocket
// library and the lock its writers share.
type frameConn struct {
	raw net.Conn        // the hijacked connection: frames are written on it
	rc  syscall.RawConn // raw's system call access for tryWrite; nil: the fallback
	// mu is held while a frame is written to raw, by a writer or by the
	// library (control frames, through lockedConn).
	mu sync.Mutex
	// deadline is raw's write deadline, set by writeBlocking; guarded by mu.
	deadline time.Time
}

// attach makes c, just hijacked, the connection's socket, and returns
// what the library is to write its control frames to: c behind the
// shared lock, and a buffer that holds one control frame exactly.
func (fc *frameConn) attach(c net.Conn) (net.Conn, *bufio.Writer) {
	fc.raw, fc.rc = c, rawConnOf(c)
	lc := lockedConn{Conn: c, fc: fc}
	return lc, bufio.NewWriterSize(lc, controlFrameSize)
}

// lockNow takes mu for a non-blocking write: it reports false when the
// connection has no raw write (the fallback) or someone is writing (the
// library, a control frame), and the caller must not wait.
func (fc *frameConn) lockNow() bool {
	return fc.rc != nil && fc.mu.TryLock()
}

func (fc *frameConn) lock()   { fc.mu.Lock() }
func (fc *frameConn) unlock() { fc.mu.Unlock() }

// tryWrite writes b with a single write(2) that does not wait, using w's
// memory: n is what the socket took (0 when its buffer is full). mu must
// be held (lockNow).
func (fc *frameConn) tryWrite(w *rawWriter, b []byte) (n int, err error) {
	fc.dropStaleDeadline()
	return w.tryWrite(fc.rc, b)
}

// writeBlocking writes b whole, each call within at least half of timeout
// (see armDeadline). mu must be held.
func (fc *frameConn) writeBlocking(b []byte, timeout time.Duration) error {
	if len(b) == 0 {
		return nil
	}
	fc.armDeadline(timeout)
	_, err := fc.raw.Write(b)
	return err
}

// armDeadline makes sure the next blocking write has between half and all
// of timeout: it moves the connection's write deadline only once half of
// it has passed (moving a deadline costs a runtime timer update per
// write). mu must be held. The deadline stays when the blocking writes
// end: see dropStaleDeadline.
func (fc *frameConn) armDeadline(timeout time.Duration) {
	now := time.Now()
	if now.Add(timeout / 2).Before(fc.deadline) {
		return
	}
	fc.deadline = now.Add(timeout)
	fc.raw.SetWriteDeadline(fc.deadline)
}

// dropStaleDeadline lifts the write deadline of blocking writes long done
// once it has passed, so that it does not fail the next write on the
// connection: a worker's (which never waits, so needs none) or a control
// frame of the library's (bounded by the library's own context). Whoever
// writes without a deadline calls it, holding mu.
func (fc *frameConn) dropStaleDeadline() {
	if !fc.deadline.IsZero() && time.Now().After(fc.deadline) {
		fc.deadline = time.Time{}
		fc.raw.SetWriteDeadline(time.Time{})
	}
}

// lockedConn is the connection the WebSocket library writes its control
// frames to: each write takes the shared lock, so a frame of the
// library's never lands inside one of the writers' (given one Write per
// control frame: see the top of this file).
type lockedConn struct {
	net.Conn // fc.raw
	fc       *frameConn
}

func (c lockedConn) Write(b []byte) (int, error) {
	c.fc.mu.Lock()
	defer c.fc.mu.Unlock()
	c.fc.dropStaleDeadline()
	return c.Conn.Write(b)
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
