//go:build !unix

package gateway

import (
	"errors"
	"net"
	"syscall"
)

// The fallback of the write path (see wsconn.go) on systems without the
// Unix write(2): no connection has a raw write, so every write goes
// through the connection's own goroutine, with blocking writes.

// rawConnOf returns nil: see above.
func rawConnOf(net.Conn) syscall.RawConn { return nil }

// rawWriter is never used here: frameConn.lockNow reports false without
// a raw write.
type rawWriter struct{}

func (*rawWriter) tryWrite(syscall.RawConn, []byte) (int, error) {
	return 0, errors.ErrUnsupported
}
