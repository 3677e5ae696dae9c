// Package testenv starts the real servers that Updraft's tests talk to:
// throwaway redis-server and updraft processes on free loopback ports,
// stopped by PID when the test ends. A server that cannot start fails the
// test loudly; nothing here ever skips.
package testenv

import (
	"net"
	"testing"
	"time"
)

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testenv: finding a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Eventually polls cond every 10 ms until it returns true or the deadline
// passes, then fails the test with msg. It replaces sleeps that only hope.
func Eventually(t testing.TB, within time.Duration, cond func() bool, msg string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("testenv: after %v: "+msg, append([]any{within}, args...)...)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
