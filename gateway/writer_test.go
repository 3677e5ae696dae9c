package gateway

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/updraft/updraft/broker"
	"github.com/updraft/updraft/internal/testenv"
	"github.com/updraft/updraft/protocol"
)

// readFrame parses one unmasked server frame from r: its first byte and
// payload.
func readFrame(t *testing.T, r io.Reader) (byte, []byte) {
	t.Helper()
	var h [2]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		t.Fatal(err)
	}
	n := uint64(h[1])
	switch {
	case h[1]&0x80 != 0:
		t.Fatalf("server frame masked: %x", h)
	case n == 126:
		var b [2]byte
		io.ReadFull(r, b[:])
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case n == 127:
		var b [8]byte
		io.ReadFull(r, b[:])
		n = binary.BigEndian.Uint64(b[:])
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(r, p); err != nil {
		t.Fatal(err)
	}
	return h[0], p
}

// writerServer runs a gateway over an in-memory broker behind an httptest
// server, anonymous connects allowed.
func writerServer(t *testing.T, cfg Config) (*Server, *httptest.Server, *broker.Memory) {
	t.Helper()
	s, b := writerGateway(t, cfg)
	hs := httptest.NewServer(s)
	t.Cleanup(hs.Close)
	return s, hs, b
}

// writerGateway is a gateway over an in-memory broker, anonymous connects
// allowed.
func writerGateway(t *testing.T, cfg Config) (*Server, *broker.Memory) {
	t.Helper()
	b := broker.NewMemory(broker.MemoryConfig{})
	t.Cleanup(func() { b.Close() })
	cfg.Broker, cfg.AllowAnonymous = b, true
	s := testServer(t, cfg)
	b.RegisterEventHandler(s.Deliver, s.DeliverSignal)
	return s, b
}

// subscribedClient connects the server's only client, subscribed to
// topic, and returns it and its session.
func subscribedClient(t *testing.T, s *Server, hs *httptest.Server, topic string) (*wsConn, *session) {
	t.Helper()
	reader := dialWS(t, hs, "")
	if rep := reader.request(map[string]any{"type": "subscribe", "topic": topic}); !rep.OK {
		t.Fatal(rep.Error)
	}
	sessions := s.liveSessions()
	if len(sessions) != 1 {
		t.Fatalf("%d sessions, want 1", len(sessions))
	}
	return reader, sessions[0]
}

// stalledClient connects and subscribes to topic over a bare TCP
// connection and then reads nothing more.
func stalledClient(t *testing.T, hs *httptest.Server, topic string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(hs.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	req := "GET /api/realtime HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: updraft.v1\r\n\r\n"
	hello := `{"type":"connect","ref":"c"}` + "\n" + `{"type":"subscribe","ref":"s","topic":"` + topic + `"}`
	mask := [4]byte{7, 7, 7, 7}
	frame := append([]byte{0x81, 0x80 | 126, byte(len(hello) >> 8), byte(len(hello))}, mask[:]...)
	for i := 0; i < len(hello); i++ {
		frame = append(frame, hello[i]^mask[i%4])
	}
	if _, err := c.Write(append([]byte(req), frame...)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake: %v %v", resp, err)
	}
	for replies := 0; replies < 2; {
		_, p := readFrame(t, br)
		replies += bytes.Count(p, []byte(`"ok":true`))
	}
	return c
}

// A client that stops reading fills its socket; the worker that writes for
// it hands it to a goroutine of its own and goes on writing for the
// others. Every worker gets two stalled clients here, so a worker that
// waited for one would starve the reading client, which must get every
// message, in order, while the stalled ones are closed as slow consumers.
func TestStalledClientsDoNotHoldUpTheirWorker(t *testing.T) {
	const topic = "chat/stall"
	s, hs, b := writerServer(t, Config{SendQueue: 16})
	stalled := 2 * len(s.writers.workers)
	for range stalled {
		stalledClient(t, hs, topic)
	}
	reader := dialWS(t, hs, "")
	if rep := reader.request(map[string]any{"type": "subscribe", "topic": topic}); !rep.OK {
		t.Fatal(rep.Error)
	}
	data, _ := json.Marshal(map[string]string{"pad": strings.Repeat("x", 32<<10)})
	// Loopback buffers absorb a few MiB per stalled connection before its
	// outbox of 16 overflows; 3,000 messages (96 MiB) bound the loop.
	seq := 0
	for seq < 3000 && counterValue(s.metrics.slowConsumers) < float64(stalled) {
		if _, err := b.Publish(context.Background(), topic, broker.Publication{Event: "m", Data: data}); err != nil {
			t.Fatal(err)
		}
		seq++
		ev := reader.nextEvent()
		if ev.Seq != uint64(seq) {
			t.Fatalf("the reading client got seq %d, want %d", ev.Seq, seq)
		}
	}
	if n := counterValue(s.metrics.slowConsumers); n != float64(stalled) {
		t.Fatalf("%v of %d stalled clients closed as slow consumers after %d messages", n, stalled, seq)
	}
}

// Pings (the library's control frames) and the writers' frames share the
// socket: pings sent all along while messages of every size go out, some
// written whole by the worker, some too large for the socket and finished
// by flush, must leave every frame intact.
func TestControlFramesDoNotInterleaveWithEvents(t *testing.T) {
	const topic = "chat/pings"
	s, hs, b := writerServer(t, Config{})
	reader, sess := subscribedClient(t, s, hs, topic)
	ctx, stop := context.WithCancel(context.Background())
	pinged := make(chan int)
	go func() {
		n := 0
		for ctx.Err() == nil {
			sess.ping(5 * time.Second) // answered while the client reads
			n++
		}
		pinged <- n
	}()
	publish := func(size int) {
		data, _ := json.Marshal(map[string]string{"pad": strings.Repeat("y", size)})
		if _, err := b.Publish(context.Background(), topic, broker.Publication{Event: "m", Data: data}); err != nil {
			t.Error(err)
		}
	}
	seq := uint64(0)
	expect := func(size int) {
		t.Helper()
		ev := reader.nextEvent()
		if seq++; ev.Seq != seq || len(ev.Data) != len(`{"pad":""}`)+size {
			t.Fatalf("event seq %d with %d bytes of data; want seq %d with a pad of %d", ev.Seq, len(ev.Data), seq, size)
		}
	}

	// 6 MiB while the client reads nothing: more than a fresh loopback
	// connection buffers, less than the outbox holds.
	for range 6 {
		publish(1 << 20)
	}
	testenv.Eventually(t, 10*time.Second, func() bool { return counterValue(s.metrics.writesWaited) > 0 }, "no write waited for the socket")
	for range 6 {
		expect(1 << 20)
	}
	// Then sizes that go by the worker and by flush, the publisher at most
	// 4 messages ahead of the reader.
	sizes := []int{100, 5 << 10, 128 << 10}
	const messages = 150
	read := make(chan struct{}, messages)
	go func() {
		for i := range messages {
			if i >= 4 {
				<-read
			}
			publish(sizes[i%len(sizes)])
		}
	}()
	for i := range messages {
		expect(sizes[i%len(sizes)])
		read <- struct{}{}
	}
	stop()
	reader.c.CloseNow() // ends the ping waiting for a pong
	if n := <-pinged; n < 2 {
		t.Fatalf("only %d pings went out during the test", n)
	}
}

// counterValue reads c.
func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	c.Write(&m)
	return m.GetCounter().GetValue()
}

// nextEvent reads the next event, failing the test on anything else.
func (w *wsConn) nextEvent() protocol.Event {
	w.t.Helper()
	m := w.next()
	var ev protocol.Event
	if err := json.Unmarshal(m, &ev); err != nil || ev.Type != protocol.TypeEvent {
		w.t.Fatalf("want an event, got %s (%v)", m, err)
	}
	return ev
}
