package gateway

import (
	"encoding/json"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/updraft/updraft/broker"
	"github.com/updraft/updraft/protocol"
)

// newTestBroker is the in-memory broker for unit tests; h may be nil.
func newTestBroker(t testing.TB, h broker.Handler) *broker.Memory {
	b := broker.NewMemory(broker.MemoryConfig{})
	b.RegisterEventHandler(h, nil)
	t.Cleanup(func() { b.Close() })
	return b
}

// busyQueue is an outbox whose writer counts as running, so that pushes
// start none: the tests of connection-less sessions read it with take.
func busyQueue(items int) *sendQueue {
	q := newSendQueue(items, DefaultSendQueueBytes, unlimitedNode())
	q.startLocked() // no one else has q yet
	return q
}

// drain empties the outboxes of connection-less sessions as their writer
// would, and leaves the writer counted as running (see busyQueue): an
// empty take would otherwise let the next push start a real writer.
func drain(sessions []*session, spare [][]byte) [][]byte {
	for _, sess := range sessions {
		spare = sess.queue.take(spare[:0]).items
		sess.queue.mu.Lock()
		sess.queue.startLocked() // again, if the take stopped the writer
		sess.queue.mu.Unlock()
	}
	return spare
}

// fakeSessions subscribes n connection-less sessions to topic in s's hub;
// their outboxes are inspected directly.
func fakeSessions(s *Server, topic string, n, queue int) []*session {
	out := make([]*session, n)
	for i := range out {
		sess := &session{srv: s, id: fmt.Sprintf("s_%d", i), queue: busyQueue(queue)}
		s.hub.add(&subscription{sess: sess, topic: topic})
		out[i] = sess
	}
	return out
}

func TestDeliverEncodesOnceForAll(t *testing.T) {
	s := testServer(t, Config{AllowAnonymous: true})
	sessions := fakeSessions(s, "chat/x", 3, 10)
	fakeSessions(s, "chat/other", 1, 10)
	s.Deliver(broker.Message{Topic: "chat/x", Position: broker.Position{Epoch: "e", Seq: 5},
		Publication: broker.Publication{Event: "m", Data: json.RawMessage(`{"a":1}`), TS: 7, From: "u"}})
	var first []byte
	for i, sess := range sessions {
		items := sess.queue.take(nil).items
		if len(items) != 1 {
			t.Fatalf("session %d got %d items", i, len(items))
		}
		if i == 0 {
			first = items[0]
			var ev protocol.Event
			if err := json.Unmarshal(first, &ev); err != nil || ev.Seq != 5 || ev.From != "u" || string(ev.Data) != `{"a":1}` {
				t.Fatalf("event %s: %+v %v", first, ev, err)
			}
		} else if &items[0][0] != &first[0] {
			t.Fatal("subscribers got different copies: the event must be encoded once per node")
		}
	}
}

func TestDeliverClosesOnlyTheSlowConsumer(t *testing.T) {
	s := testServer(t, Config{AllowAnonymous: true})
	slow := fakeSessions(s, "chat/x", 1, 2)[0]
	fast := fakeSessions(s, "chat/x", 1, 100)[0]
	for i := 1; i <= 5; i++ {
		s.Deliver(broker.Message{Topic: "chat/x", Position: broker.Position{Epoch: "e", Seq: uint64(i)}, Publication: broker.Publication{Event: "m"}})
	}
	b := slow.queue.take(nil)
	items, done, code := b.items, b.close, b.code
	if !done || code != protocol.CloseSlowConsumer || len(items) != 1 {
		t.Fatalf("slow consumer: done=%v code=%d items=%d, want closed with 4008 and only the disconnect queued", done, code, len(items))
	}
	var d protocol.Disconnect
	if err := json.Unmarshal(items[0], &d); err != nil || d.Code != 4008 || !d.Reconnect {
		t.Fatalf("disconnect message %s", items[0])
	}
	b = fast.queue.take(nil)
	items, done = b.items, b.close
	if done || len(items) != 5 {
		t.Fatalf("fast consumer: done=%v items=%d, want all 5", done, len(items))
	}
}

// BenchmarkFanout delivers one message to 1,000 local subscribers per
// iteration: the hub's hot path (encode once, queue the shared bytes for
// each). It reports ns and allocations per delivery; the one allocation per
// message (the encoded event) amortises to ~0 per delivery.
func BenchmarkFanout(b *testing.B) {
	const subscribers = 1000
	s := testServer(b, Config{AllowAnonymous: true})
	sessions := fakeSessions(s, "chat/bench", subscribers, 16)
	msg := broker.Message{Topic: "chat/bench", Position: broker.Position{Epoch: "e1", Seq: 1},
		Publication: broker.Publication{Event: "message", Data: json.RawMessage(`{"text":"hello, world","user":"user-7"}`), TS: time.Now().UnixMilli()}}
	spare := make([][]byte, 0, 16)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		msg.Seq = uint64(i + 1)
		s.Deliver(msg)
		b.StopTimer()
		spare = drain(sessions, spare)
		b.StartTimer()
	}
	b.StopTimer()
	runtime.ReadMemStats(&after)
	deliveries := float64(b.N) * subscribers
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/deliveries, "ns/delivery")
	b.ReportMetric(float64(after.Mallocs-before.Mallocs)/deliveries, "allocs/delivery")
}

// BenchmarkFanoutFiltered is BenchmarkFanout on a table topic where every
// subscriber has a filter (customer_id=eq.N, N from 0 to 9): the row is
// decoded once per message and each filter evaluated on it, and a tenth
// of the subscribers get the message.
func BenchmarkFanoutFiltered(b *testing.B) {
	const subscribers = 1000
	s := testServer(b, Config{AllowAnonymous: true})
	var sessions []*session
	for i := 0; i < subscribers; i++ {
		f, err := protocol.ParseFilter(fmt.Sprintf("customer_id=eq.%d", i%10))
		if err != nil {
			b.Fatal(err)
		}
		sess := &session{srv: s, id: fmt.Sprintf("s_%d", i), queue: busyQueue(16)}
		s.hub.add(&subscription{sess: sess, topic: "orders", filter: f})
		sessions = append(sessions, sess)
	}
	msg := broker.Message{Topic: "orders", Position: broker.Position{Epoch: "e1", Seq: 1},
		Publication: broker.Publication{Event: "UPDATE", Data: json.RawMessage(`{"id":42,"customer_id":3,"status":"paid","amount":"12.50","note":null}`), TS: time.Now().UnixMilli()}}
	spare := make([][]byte, 0, 16)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		msg.Seq = uint64(i + 1)
		s.Deliver(msg)
		b.StopTimer()
		spare = drain(sessions, spare)
		b.StartTimer()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/(float64(b.N)*subscribers), "ns/subscriber")
}
