package gateway

import (
	"bufio"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/updraft/updraft/broker"
)

// BenchmarkWorkerWrite sends one message at a time to a client over
// loopback and reads it there: a delivery through the write path end to
// end (the push, the worker's take, packing and non-blocking write, and
// the client's read), which a change to the writer or the write path must
// not slow down or make allocate.
func BenchmarkWorkerWrite(b *testing.B) {
	bk := broker.NewMemory(broker.MemoryConfig{})
	b.Cleanup(func() { bk.Close() })
	s := testServer(b, Config{Broker: bk, AllowAnonymous: true, ConnectTimeout: time.Hour})
	hs := httptest.NewServer(s)
	b.Cleanup(hs.Close)
	c, err := net.Dial("tcp", strings.TrimPrefix(hs.URL, "http://"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(time.Minute))
	req := "GET /api/realtime HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: updraft.v1\r\n\r\n"
	if _, err := io.WriteString(c, req); err != nil {
		b.Fatal(err)
	}
	br := bufio.NewReaderSize(c, 64<<10)
	if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		b.Fatalf("handshake: %v %v", resp, err)
	}
	var sessions []*session
	for deadline := time.Now().Add(10 * time.Second); len(sessions) != 1 && time.Now().Before(deadline); {
		sessions = s.liveSessions()
		time.Sleep(time.Millisecond) // polling for the session the handshake made
	}
	if len(sessions) != 1 {
		b.Fatalf("%d sessions, want 1", len(sessions))
	}
	sess := sessions[0]
	msg := []byte(`{"type":"event","topic":"chat/bench","seq":1,"event":"m","data":{"text":"hello, world"}}`)
	payload := make([]byte, 0, 64<<10)
	var h [10]byte
	readFrame := func() {
		if _, err := io.ReadFull(br, h[:2]); err != nil {
			b.Fatal(err)
		}
		n := int(h[1] & 0x7f)
		switch n {
		case 126:
			io.ReadFull(br, h[2:4])
			n = int(binary.BigEndian.Uint16(h[2:4]))
		case 127:
			io.ReadFull(br, h[2:10])
			n = int(binary.BigEndian.Uint64(h[2:10]))
		}
		if _, err := io.ReadFull(br, payload[:n]); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		if !sess.send(msg) {
			b.Fatal("send refused")
		}
		readFrame()
	}
}
