// Package brokertest is the conformance suite of broker.Broker. Every
// implementation runs the same suite, so the in-memory and Redis brokers
// keep one contract:
//
//	func TestMemory(t *testing.T) {
//		brokertest.Run(t, brokertest.Factory{New: ...})
//	}
package brokertest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/updraft/updraft/broker"
	"github.com/updraft/updraft/internal/testenv"
)

// Config is what the suite asks a Factory to make a node with.
// The suite registers its own handlers on the node with
// RegisterEventHandler, as a gateway does.
type Config struct {
	Retention broker.Retention
}

// Factory makes the nodes under test.
type Factory struct {
	// New returns a new node with cfg, failing tb if it cannot. The suite
	// closes every node it makes.
	New func(tb testing.TB, cfg Config) broker.Broker

	// MultiNode is a capability: the nodes New makes share one store, so
	// that a publish on one reaches the subscribers of another. Without it
	// the multi-node cases are not run (an in-memory broker is one node).
	MultiNode bool

	// Coordinator is a capability: the brokers implement
	// broker.Coordinator, whose cases then run too.
	Coordinator bool

	// Subscriptions, when set, returns the number of store-side
	// subscriptions of topic across all nodes (Redis: PUBSUB NUMSUB). The
	// suite then checks that a node holds exactly one while its reference
	// count is positive and none after.
	Subscriptions func(tb testing.TB, topic string) int
}

// waitFor bounds every wait of the suite for an asynchronous effect.
const waitFor = 10 * time.Second

// Run runs the conformance suite against f. Its cases run in parallel on
// distinct topics.
func Run(t *testing.T, f Factory) {
	t.Helper()
	if f.New == nil {
		t.Fatal("brokertest: Factory.New is nil")
	}
	cases := []struct {
		name      string
		multiNode bool
		run       func(*testing.T, Factory)
	}{
		{"Positions", false, testPositions},
		{"HandlerOrder", false, testHandlerOrder},
		{"ExactlyOnceInOrder", false, testExactlyOnceInOrder},
		{"DeliveryOnlyWhileSubscribed", false, testDeliveryOnlyWhileSubscribed},
		{"SubscribeActiveOnReturn", false, testSubscribeActiveOnReturn},
		{"RefCount", false, testRefCount},
		{"SubscribeStorm", false, testSubscribeStorm},
		{"RoundTrip", false, testRoundTrip},
		{"HistoryCap", false, testHistoryCap},
		{"HistoryQuery", false, testHistoryQuery},
		{"TTLStartsNewEpoch", false, testTTL},
		{"CanceledContext", false, testCanceledContext},
		{"Close", false, testClose},
		{"Signal", false, testSignal},
		{"PublishBatch", false, testPublishBatch},
		{"MultiNodeSignal", true, testMultiNodeSignal},
		{"MultiNodeDelivery", true, testMultiNodeDelivery},
		{"MultiNodeOrder", true, testMultiNodeOrder},
		{"MultiNodeSubscribeActiveOnReturn", true, testMultiNodeSubscribeActiveOnReturn},
	}
	if f.Coordinator {
		cases = append(cases, coordinatorCases...)
	}
	for _, c := range cases {
		if c.multiNode && !f.MultiNode {
			continue // a capability the implementation does not have
		}
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			c.run(t, f)
		})
	}
}

// node is a broker under test with the recorder behind its Handler.
type node struct {
	broker.Broker
	rec *recorder
}

func newNode(t testing.TB, f Factory, ret broker.Retention) *node {
	t.Helper()
	rec := &recorder{byTopic: make(map[string][]broker.Message)}
	// Registered before Close's cleanup, so it runs after it: every
	// delivery has been seen.
	t.Cleanup(func() {
		if v := rec.violations(); len(v) > 0 {
			t.Errorf("the Handler saw %d duplicate or out-of-order messages, first: %s", len(v), v[0])
		}
	})
	b := f.New(t, Config{Retention: ret})
	b.RegisterEventHandler(rec.handle, rec.signal)
	t.Cleanup(func() { _ = b.Close() })
	return &node{Broker: b, rec: rec}
}

// recorder keeps every message a Handler received, by topic, and notes any
// message that does not come after the topic's previous one: a seq at or
// below it in the same epoch (a duplicate, or out of order).
type recorder struct {
	mu      sync.Mutex
	byTopic map[string][]broker.Message // guarded by mu
	signals map[string][]string         // guarded by mu: payloads by topic
	bad     []string                    // guarded by mu
}

func (r *recorder) signal(topic string, payload []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.signals == nil {
		r.signals = map[string][]string{}
	}
	r.signals[topic] = append(r.signals[topic], string(payload))
}

func (r *recorder) signalsOf(topic string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.signals[topic]...)
}

func (r *recorder) handle(m broker.Message) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ms := r.byTopic[m.Topic]
	if n := len(ms); n > 0 && ms[n-1].Epoch == m.Epoch && ms[n-1].Seq >= m.Seq {
		r.bad = append(r.bad, fmt.Sprintf("topic %q: seq %d after seq %d in epoch %q", m.Topic, m.Seq, ms[n-1].Seq, m.Epoch))
	}
	r.byTopic[m.Topic] = append(ms, m)
}

func (r *recorder) violations() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.bad...)
}

func (r *recorder) messages(topic string) []broker.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]broker.Message(nil), r.byTopic[topic]...)
}

func (r *recorder) count(topic string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.byTopic[topic])
}

// wait returns topic's messages once there are at least n.
func (r *recorder) wait(t testing.TB, topic string, n int) []broker.Message {
	t.Helper()
	testenv.Eventually(t, waitFor, func() bool { return r.count(topic) >= n },
		"topic %q: want %d messages delivered, have %d", topic, n, r.count(topic))
	return r.messages(topic)
}

var topicSeq atomic.Uint64

// newTopic returns a topic name no other test uses, valid in the protocol's
// topic grammar.
func newTopic(t testing.TB) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	name := t.Name()
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		name = name[i+1:]
	}
	return fmt.Sprintf("brokertest/%s/%s-%d", name, hex.EncodeToString(b[:]), topicSeq.Add(1))
}

func publish(t testing.TB, b broker.Broker, topic string, data string) broker.Position {
	t.Helper()
	pos, err := b.Publish(context.Background(), topic, broker.Publication{Event: "e", Data: json.RawMessage(data)})
	if err != nil {
		t.Fatalf("Publish(%q): %v", topic, err)
	}
	return pos
}

func subscribe(t testing.TB, b broker.Broker, topic string) {
	t.Helper()
	if err := b.Subscribe(context.Background(), topic); err != nil {
		t.Fatalf("Subscribe(%q): %v", topic, err)
	}
}

func unsubscribe(t testing.TB, b broker.Broker, topic string) {
	t.Helper()
	if err := b.Unsubscribe(context.Background(), topic); err != nil {
		t.Fatalf("Unsubscribe(%q): %v", topic, err)
	}
}

// assertDelivered checks that recv's Handler has received exactly want
// messages of topic, after every message published through pub so far has
// had the time to arrive. It publishes a fence on a fresh topic that recv
// subscribes to, and waits for it: a store delivers one node's messages in
// the order they were published, so anything of topic published before the
// fence has been handled once the fence is.
func assertDelivered(t testing.TB, pub broker.Broker, recv *node, topic string, want int) {
	t.Helper()
	fence := newTopic(t) + "-fence"
	subscribe(t, recv, fence)
	publish(t, pub, fence, `"fence"`)
	recv.rec.wait(t, fence, 1)
	unsubscribe(t, recv, fence)
	if got := recv.rec.count(topic); got != want {
		t.Fatalf("topic %q: %d messages delivered, want %d: %v", topic, got, want, seqs(recv.rec.messages(topic)))
	}
}

// assertSubscriptions checks the store's subscription count of topic, when
// the factory can tell it. A positive count is checked at once (Subscribe
// returned, so the store confirmed it); zero is awaited, since nothing
// forces an unsubscription to be confirmed before Unsubscribe returns.
func assertSubscriptions(t testing.TB, f Factory, topic string, want int) {
	t.Helper()
	if f.Subscriptions == nil {
		return
	}
	if want > 0 {
		if got := f.Subscriptions(t, topic); got != want {
			t.Fatalf("topic %q: store has %d subscriptions, want %d", topic, got, want)
		}
		return
	}
	testenv.Eventually(t, waitFor, func() bool { return f.Subscriptions(t, topic) == want },
		"topic %q: store has %d subscriptions, want %d", topic, f.Subscriptions(t, topic), want)
}

func seqs(ms []broker.Message) []uint64 {
	out := make([]uint64, len(ms))
	for i, m := range ms {
		out[i] = m.Seq
	}
	return out
}

// testPositions: a topic's positions count 1..n in one epoch; topics are
// independent; an unknown topic has the zero position.
func testPositions(t *testing.T, f Factory) {
	ctx := context.Background()
	n := newNode(t, f, broker.Retention{})
	topic, other := newTopic(t), newTopic(t)

	if pos, err := n.Latest(ctx, topic); err != nil || pos != (broker.Position{}) {
		t.Fatalf("Latest of an unknown topic = %+v, %v; want the zero Position", pos, err)
	}
	if page, err := n.History(ctx, topic, broker.HistoryQuery{}); err != nil || page.Latest != (broker.Position{}) || len(page.Messages) != 0 {
		t.Fatalf("History of an unknown topic = %+v, %v; want an empty page", page, err)
	}

	var epoch string
	for i := uint64(1); i <= 20; i++ {
		pos := publish(t, n, topic, fmt.Sprintf(`{"i":%d}`, i))
		if i == 1 {
			epoch = pos.Epoch
			if epoch == "" {
				t.Fatal("first Publish returned an empty epoch")
			}
		}
		if pos != (broker.Position{Epoch: epoch, Seq: i}) {
			t.Fatalf("Publish #%d = %+v, want {%s %d}", i, pos, epoch, i)
		}
	}
	if pos, err := n.Latest(ctx, topic); err != nil || pos != (broker.Position{Epoch: epoch, Seq: 20}) {
		t.Fatalf("Latest = %+v, %v; want {%s 20}", pos, err, epoch)
	}
	if pos := publish(t, n, other, `{}`); pos.Seq != 1 || pos.Epoch == "" {
		t.Fatalf("first Publish on another topic = %+v, want seq 1 with an epoch", pos)
	}
	if err := n.Ping(ctx); err != nil {
		t.Fatalf("Ping: %v", err)
	}
}

// testHandlerOrder: concurrent publishers on one topic; the Handler sees
// every message once, in seq order, with the data published at that seq.
func testHandlerOrder(t *testing.T, f Factory) {
	const publishers, each = 8, 40
	n := newNode(t, f, broker.Retention{})
	topic := newTopic(t)
	subscribe(t, n, topic)

	var mu sync.Mutex
	sent := make(map[uint64]string) // guarded by mu: data by seq
	var wg sync.WaitGroup
	for p := range publishers {
		wg.Go(func() {
			for i := range each {
				data := fmt.Sprintf(`{"p":%d,"i":%d}`, p, i)
				pos, err := n.Publish(context.Background(), topic, broker.Publication{Event: "e", Data: json.RawMessage(data)})
				if err != nil {
					t.Errorf("Publish: %v", err)
					return
				}
				mu.Lock()
				sent[pos.Seq] = data
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	msgs := n.rec.wait(t, topic, publishers*each)
	if len(msgs) != publishers*each {
		t.Fatalf("%d messages delivered, want %d", len(msgs), publishers*each)
	}
	for i, m := range msgs {
		if m.Seq != uint64(i+1) || m.Epoch != msgs[0].Epoch || m.Topic != topic {
			t.Fatalf("message #%d: topic %q position %+v; want %q seq %d epoch %q (seqs %v)",
				i, m.Topic, m.Position, topic, i+1, msgs[0].Epoch, seqs(msgs))
		}
		if string(m.Data) != sent[m.Seq] {
			t.Fatalf("seq %d: data %s, published %s", m.Seq, m.Data, sent[m.Seq])
		}
	}
}

// testExactlyOnceInOrder: concurrent publishers, on every node the factory
// can make share a store, on several topics; the subscriber's Handler sees
// each topic's messages exactly once and in seq order, and nothing more.
func testExactlyOnceInOrder(t *testing.T, f Factory) {
	const topics, publishers, each = 3, 4, 40
	sub := newNode(t, f, broker.Retention{})
	pubs := []*node{sub}
	if f.MultiNode {
		pubs = append(pubs, newNode(t, f, broker.Retention{}))
	}
	names := make([]string, topics)
	for i := range names {
		names[i] = newTopic(t)
		subscribe(t, sub, names[i])
	}
	var wg sync.WaitGroup
	for _, topic := range names {
		for p := range publishers {
			pub := pubs[p%len(pubs)]
			wg.Go(func() {
				for i := range each {
					data := fmt.Sprintf(`{"p":%d,"i":%d}`, p, i)
					if _, err := pub.Publish(context.Background(), topic, broker.Publication{Event: "e", Data: json.RawMessage(data)}); err != nil {
						t.Errorf("Publish: %v", err)
						return
					}
				}
			})
		}
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	const want = publishers * each
	for _, topic := range names {
		sub.rec.wait(t, topic, want)
		assertDelivered(t, pubs[len(pubs)-1], sub, topic, want)
		msgs := sub.rec.messages(topic)
		for i, m := range msgs {
			if m.Seq != uint64(i+1) || m.Epoch != msgs[0].Epoch {
				t.Fatalf("topic %q: seqs %v, want 1..%d in one epoch", topic, seqs(msgs), want)
			}
		}
	}
	if v := sub.rec.violations(); len(v) > 0 {
		t.Fatalf("%d duplicate or out-of-order messages, first: %s", len(v), v[0])
	}
}

// testDeliveryOnlyWhileSubscribed: nothing before Subscribe, everything
// while subscribed, nothing after Unsubscribe, again after resubscribing.
func testDeliveryOnlyWhileSubscribed(t *testing.T, f Factory) {
	n := newNode(t, f, broker.Retention{})
	topic := newTopic(t)

	publish(t, n, topic, `1`)
	assertDelivered(t, n, n, topic, 0)

	subscribe(t, n, topic)
	publish(t, n, topic, `2`)
	if got := n.rec.wait(t, topic, 1); got[0].Seq != 2 {
		t.Fatalf("delivered seq %d, want 2", got[0].Seq)
	}

	unsubscribe(t, n, topic)
	publish(t, n, topic, `3`)
	assertDelivered(t, n, n, topic, 1)

	subscribe(t, n, topic)
	publish(t, n, topic, `4`)
	if got := n.rec.wait(t, topic, 2); got[1].Seq != 4 {
		t.Fatalf("delivered seqs %v, want [2 4]", seqs(got))
	}
	assertDelivered(t, n, n, topic, 2)
}

// testSubscribeActiveOnReturn: a message published right after Subscribe
// returns is delivered, every time.
func testSubscribeActiveOnReturn(t *testing.T, f Factory) {
	n := newNode(t, f, broker.Retention{})
	subscribeActiveOnReturn(t, n, n)
}

func testMultiNodeSubscribeActiveOnReturn(t *testing.T, f Factory) {
	pub, sub := newNode(t, f, broker.Retention{}), newNode(t, f, broker.Retention{})
	subscribeActiveOnReturn(t, pub, sub)
}

func subscribeActiveOnReturn(t *testing.T, pub broker.Broker, sub *node) {
	for range 30 {
		topic := newTopic(t)
		subscribe(t, sub, topic)
		publish(t, pub, topic, `{}`)
		sub.rec.wait(t, topic, 1)
		unsubscribe(t, sub, topic)
	}
}

// testRefCount: Subscribe calls are counted; the node stays subscribed
// until the last Unsubscribe; an extra Unsubscribe is ErrNotSubscribed;
// Unsubscribe drops its reference even with a done context.
func testRefCount(t *testing.T, f Factory) {
	ctx := context.Background()
	n := newNode(t, f, broker.Retention{})
	topic := newTopic(t)

	if err := n.Unsubscribe(ctx, topic); !errors.Is(err, broker.ErrNotSubscribed) {
		t.Fatalf("Unsubscribe without Subscribe = %v, want ErrNotSubscribed", err)
	}
	subscribe(t, n, topic)
	subscribe(t, n, topic)
	assertSubscriptions(t, f, topic, 1)
	unsubscribe(t, n, topic)
	assertSubscriptions(t, f, topic, 1)
	publish(t, n, topic, `1`)
	n.rec.wait(t, topic, 1)

	done, cancel := context.WithCancel(ctx)
	cancel()
	if err := n.Unsubscribe(done, topic); err != nil {
		t.Fatalf("Unsubscribe with a done context: %v", err)
	}
	publish(t, n, topic, `2`)
	assertDelivered(t, n, n, topic, 1)
	assertSubscriptions(t, f, topic, 0)
	if err := n.Unsubscribe(ctx, topic); !errors.Is(err, broker.ErrNotSubscribed) {
		t.Fatalf("Unsubscribe after the last one = %v, want ErrNotSubscribed", err)
	}
}

// testSubscribeStorm: concurrent Subscribe and Unsubscribe of one topic
// leave the node subscribed exactly when its count is positive.
func testSubscribeStorm(t *testing.T, f Factory) {
	const goroutines, rounds = 16, 25
	n := newNode(t, f, broker.Retention{})
	topic := newTopic(t)

	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for range rounds {
				if err := n.Subscribe(context.Background(), topic); err != nil {
					t.Errorf("Subscribe: %v", err)
					return
				}
				if err := n.Unsubscribe(context.Background(), topic); err != nil {
					t.Errorf("Unsubscribe: %v", err)
					return
				}
			}
			if g%2 == 0 { // half the goroutines keep one reference
				if err := n.Subscribe(context.Background(), topic); err != nil {
					t.Errorf("Subscribe: %v", err)
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	assertSubscriptions(t, f, topic, 1)
	publish(t, n, topic, `1`)
	n.rec.wait(t, topic, 1)

	// Drop the remaining references concurrently with a second storm.
	for g := range goroutines {
		wg.Go(func() {
			for range rounds {
				if err := n.Subscribe(context.Background(), topic); err != nil {
					t.Errorf("Subscribe: %v", err)
					return
				}
				if err := n.Unsubscribe(context.Background(), topic); err != nil {
					t.Errorf("Unsubscribe: %v", err)
					return
				}
			}
			if g%2 == 0 {
				if err := n.Unsubscribe(context.Background(), topic); err != nil {
					t.Errorf("Unsubscribe: %v", err)
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	if err := n.Unsubscribe(context.Background(), topic); !errors.Is(err, broker.ErrNotSubscribed) {
		t.Fatalf("Unsubscribe after the storm = %v, want ErrNotSubscribed", err)
	}
	publish(t, n, topic, `2`)
	assertDelivered(t, n, n, topic, 1)
	assertSubscriptions(t, f, topic, 0)
}

// testRoundTrip: Event, Data, Old, From and TS come back byte for byte,
// live and from History; a zero TS becomes the publish time; the publisher
// may reuse its buffers.
func testRoundTrip(t *testing.T, f Factory) {
	ctx := context.Background()
	n := newNode(t, f, broker.Retention{})
	topic := newTopic(t)
	subscribe(t, n, topic)

	big := `{"items":[` + strings.Repeat(`{"k":"v\u00e9\"x","n":-1.5e3},`, 4000) + `null]}`
	pubs := []broker.Publication{
		{Event: "e", Data: json.RawMessage(`{"a":1}`)},
		{Event: "UPDATE", Data: json.RawMessage(" { \"id\" : 7,\n\t\"name\":\"x\\u00e9y\" } "), Old: json.RawMessage(`{"id":7,"name":"old"}`), From: "user:42", TS: 1700000000123},
		{Event: "chat.message", Data: json.RawMessage(`"snowman ☃ and a colon : and a brace }"`), From: "ünï-cödé"},
		{Data: json.RawMessage(`[]`), Old: json.RawMessage(`{}`)},
		{Event: "big", Data: json.RawMessage(big), TS: 1},
		{Event: "null", Data: json.RawMessage(`null`), Old: json.RawMessage{}},
	}
	before := time.Now().UnixMilli()
	positions := make([]broker.Position, len(pubs))
	for i, p := range pubs {
		// Publish a copy, then scribble over it: the broker must have
		// taken its own.
		cp := p
		cp.Data = append(json.RawMessage(nil), p.Data...)
		cp.Old = append(json.RawMessage(nil), p.Old...)
		pos, err := n.Publish(ctx, topic, cp)
		if err != nil {
			t.Fatalf("Publish #%d: %v", i, err)
		}
		for j := range cp.Data {
			cp.Data[j] = 'X'
		}
		for j := range cp.Old {
			cp.Old[j] = 'X'
		}
		positions[i] = pos
	}
	after := time.Now().UnixMilli()

	check := func(how string, i int, m broker.Message) {
		t.Helper()
		p := pubs[i]
		if m.Topic != topic || m.Position != positions[i] {
			t.Errorf("%s #%d: topic %q position %+v, want %q %+v", how, i, m.Topic, m.Position, topic, positions[i])
		}
		if m.Event != p.Event || m.From != p.From {
			t.Errorf("%s #%d: event %q from %q, want %q %q", how, i, m.Event, m.From, p.Event, p.From)
		}
		if !bytes.Equal(m.Data, p.Data) {
			t.Errorf("%s #%d: data differs:\n got %.200q\nwant %.200q", how, i, m.Data, p.Data)
		}
		if !bytes.Equal(m.Old, p.Old) {
			t.Errorf("%s #%d: old %q, want %q", how, i, m.Old, p.Old)
		}
		if p.TS != 0 && m.TS != p.TS || p.TS == 0 && (m.TS < before || m.TS > after) {
			t.Errorf("%s #%d: ts %d, want %d (or within [%d, %d] for zero)", how, i, m.TS, p.TS, before, after)
		}
	}
	live := n.rec.wait(t, topic, len(pubs))
	if len(live) != len(pubs) {
		t.Fatalf("%d messages delivered, want %d", len(live), len(pubs))
	}
	for i, m := range live {
		check("live", i, m)
	}
	page, err := n.History(ctx, topic, broker.HistoryQuery{})
	if err != nil {
		t.Fatalf("History: %v", err)
	}
	if len(page.Messages) != len(pubs) {
		t.Fatalf("History has %d messages, want %d", len(page.Messages), len(pubs))
	}
	for i, m := range page.Messages {
		check("history", i, m)
		if m.TS != live[i].TS {
			t.Errorf("history #%d: ts %d, live had %d", i, m.TS, live[i].TS)
		}
	}
}

// testHistoryCap: a topic retains its newest Retention.Size messages.
func testHistoryCap(t *testing.T, f Factory) {
	ctx := context.Background()
	const size = 5
	n := newNode(t, f, broker.Retention{Size: size})
	topic := newTopic(t)
	var last broker.Position
	for i := 1; i <= 3*size+2; i++ {
		last = publish(t, n, topic, fmt.Sprintf(`{"i":%d}`, i))
		page, err := n.History(ctx, topic, broker.HistoryQuery{})
		if err != nil {
			t.Fatalf("History: %v", err)
		}
		want := min(i, size)
		if len(page.Messages) != want || page.Latest != last || page.Messages[want-1].Seq != last.Seq ||
			page.Messages[0].Seq != last.Seq-uint64(want)+1 {
			t.Fatalf("after %d publishes: History latest %+v seqs %v; want latest %+v and the newest %d",
				i, page.Latest, seqs(page.Messages), last, want)
		}
	}
}

// testHistoryQuery: Before, After and Limit select among retained messages,
// always ascending; with After the oldest are kept, otherwise the newest.
func testHistoryQuery(t *testing.T, f Factory) {
	ctx := context.Background()
	n := newNode(t, f, broker.Retention{Size: 10})
	topic := newTopic(t)
	var last broker.Position
	for i := 1; i <= 25; i++ { // retains 16..25
		last = publish(t, n, topic, fmt.Sprintf(`{"i":%d}`, i))
	}
	span := func(lo, hi uint64) []uint64 {
		var out []uint64
		for s := lo; s <= hi; s++ {
			out = append(out, s)
		}
		return out
	}
	cases := []struct {
		q    broker.HistoryQuery
		want []uint64
	}{
		{broker.HistoryQuery{}, span(16, 25)},
		{broker.HistoryQuery{Limit: 3}, span(23, 25)},
		{broker.HistoryQuery{Limit: 100}, span(16, 25)},
		{broker.HistoryQuery{After: 20}, span(21, 25)},
		{broker.HistoryQuery{After: 10}, span(16, 25)},
		{broker.HistoryQuery{After: 16, Limit: 3}, span(17, 19)},
		{broker.HistoryQuery{After: 5, Limit: 2}, span(16, 17)},
		{broker.HistoryQuery{Before: 20}, span(16, 19)},
		{broker.HistoryQuery{Before: 100}, span(16, 25)},
		{broker.HistoryQuery{Before: 20, Limit: 2}, span(18, 19)},
		{broker.HistoryQuery{After: 17, Before: 21}, span(18, 20)},
		{broker.HistoryQuery{After: 17, Before: 21, Limit: 2}, span(18, 19)},
		{broker.HistoryQuery{After: 24}, span(25, 25)},
		{broker.HistoryQuery{After: 25}, nil},
		{broker.HistoryQuery{After: 30}, nil},
		{broker.HistoryQuery{After: ^uint64(0)}, nil},
		{broker.HistoryQuery{Before: 16}, nil},
		{broker.HistoryQuery{Before: 1}, nil},
		{broker.HistoryQuery{After: 19, Before: 20}, nil},
		{broker.HistoryQuery{After: 20, Before: 20}, nil},
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("after=%d,before=%d,limit=%d", c.q.After, c.q.Before, c.q.Limit), func(t *testing.T) {
			page, err := n.History(ctx, topic, c.q)
			if err != nil {
				t.Fatalf("History: %v", err)
			}
			if page.Latest != last {
				t.Errorf("Latest = %+v, want %+v", page.Latest, last)
			}
			if got := seqs(page.Messages); fmt.Sprint(got) != fmt.Sprint(c.want) { // nil and empty print alike
				t.Fatalf("seqs %v, want %v", got, c.want)
			}
			for _, m := range page.Messages {
				if m.Topic != topic || m.Epoch != last.Epoch || string(m.Data) != fmt.Sprintf(`{"i":%d}`, m.Seq) || m.Event != "e" {
					t.Fatalf("message %+v: want topic %q epoch %q data {\"i\":%d}", m, topic, last.Epoch, m.Seq)
				}
			}
		})
	}
}

// testTTL: a topic idle for longer than Retention.TTL loses its history;
// its next publish starts a new epoch at seq 1, delivered to subscribers.
func testTTL(t *testing.T, f Factory) {
	ctx := context.Background()
	const ttl = 300 * time.Millisecond
	n := newNode(t, f, broker.Retention{TTL: ttl})
	topic := newTopic(t)
	subscribe(t, n, topic)
	var first broker.Position
	for i := 1; i <= 3; i++ {
		first = publish(t, n, topic, `{}`)
	}
	testenv.Eventually(t, waitFor, func() bool {
		pos, err := n.Latest(ctx, topic)
		return err == nil && pos == (broker.Position{})
	}, "topic idle for longer than its TTL (%v) still has a position", ttl)
	page, err := n.History(ctx, topic, broker.HistoryQuery{})
	if err != nil || len(page.Messages) != 0 || page.Latest != (broker.Position{}) {
		t.Fatalf("History after expiry = %+v, %v; want an empty page", page, err)
	}

	next := publish(t, n, topic, `{"again":true}`)
	if next.Seq != 1 || next.Epoch == "" || next.Epoch == first.Epoch {
		t.Fatalf("Publish after expiry = %+v; want seq 1 in an epoch other than %q", next, first.Epoch)
	}
	if msgs := n.rec.wait(t, topic, 4); msgs[3].Position != next {
		t.Fatalf("delivered %+v after expiry, want %+v", msgs[3].Position, next)
	}
	page, err = n.History(ctx, topic, broker.HistoryQuery{})
	if err != nil || len(page.Messages) != 1 || page.Messages[0].Position != next || page.Latest != next {
		t.Fatalf("History after the new epoch's first publish = %+v, %v", page, err)
	}
}

// testCanceledContext: a done context fails Publish and Subscribe, which
// then have no effect on subscriptions.
func testCanceledContext(t *testing.T, f Factory) {
	n := newNode(t, f, broker.Retention{})
	topic := newTopic(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := n.Publish(ctx, topic, broker.Publication{Data: json.RawMessage(`{}`)}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Publish with a canceled context = %v, want context.Canceled", err)
	}
	if err := n.Subscribe(ctx, topic); !errors.Is(err, context.Canceled) {
		t.Fatalf("Subscribe with a canceled context = %v, want context.Canceled", err)
	}
	if err := n.Unsubscribe(context.Background(), topic); !errors.Is(err, broker.ErrNotSubscribed) {
		t.Fatalf("Unsubscribe after a failed Subscribe = %v, want ErrNotSubscribed", err)
	}
}

// testClose: once closed, every call fails with ErrClosed.
func testClose(t *testing.T, f Factory) {
	ctx := context.Background()
	n := newNode(t, f, broker.Retention{})
	topic := newTopic(t)
	subscribe(t, n, topic)
	publish(t, n, topic, `{}`)
	if err := n.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	calls := map[string]error{}
	_, calls["Publish"] = n.Publish(ctx, topic, broker.Publication{Data: json.RawMessage(`{}`)})
	calls["Subscribe"] = n.Subscribe(ctx, topic)
	calls["Unsubscribe"] = n.Unsubscribe(ctx, topic)
	_, calls["Latest"] = n.Latest(ctx, topic)
	_, calls["History"] = n.History(ctx, topic, broker.HistoryQuery{})
	calls["Ping"] = n.Ping(ctx)
	calls["Close"] = n.Close()
	for name, err := range calls {
		if !errors.Is(err, broker.ErrClosed) {
			t.Errorf("%s after Close = %v, want ErrClosed", name, err)
		}
	}
}

// testMultiNodeDelivery: a publish on one node reaches the subscribed
// nodes, and only those; all nodes agree on positions.
func testMultiNodeDelivery(t *testing.T, f Factory) {
	ctx := context.Background()
	a, b := newNode(t, f, broker.Retention{}), newNode(t, f, broker.Retention{})
	topic := newTopic(t)

	subscribe(t, b, topic)
	p1 := publish(t, a, topic, `{"from":"a"}`)
	if got := b.rec.wait(t, topic, 1); got[0].Position != p1 || string(got[0].Data) != `{"from":"a"}` {
		t.Fatalf("node b received %+v, want %+v", got[0], p1)
	}
	assertDelivered(t, a, a, topic, 0)

	subscribe(t, a, topic)
	p2 := publish(t, b, topic, `{"from":"b"}`)
	if p2.Epoch != p1.Epoch || p2.Seq != 2 {
		t.Fatalf("publish on node b = %+v, want seq 2 in epoch %q", p2, p1.Epoch)
	}
	a.rec.wait(t, topic, 1)
	b.rec.wait(t, topic, 2)
	for _, nd := range []*node{a, b} {
		if pos, err := nd.Latest(ctx, topic); err != nil || pos != p2 {
			t.Fatalf("Latest = %+v, %v; want %+v", pos, err, p2)
		}
	}
	page, err := a.History(ctx, topic, broker.HistoryQuery{})
	if err != nil || len(page.Messages) != 2 || page.Messages[1].Position != p2 {
		t.Fatalf("History on node a = %+v, %v", page, err)
	}

	unsubscribe(t, b, topic)
	publish(t, a, topic, `{}`)
	a.rec.wait(t, topic, 2)
	assertDelivered(t, a, b, topic, 2)
}

// testMultiNodeOrder: publishers on two nodes, one subscriber on a third:
// it sees every message once, in seq order.
func testMultiNodeOrder(t *testing.T, f Factory) {
	const each = 50
	a, b, c := newNode(t, f, broker.Retention{}), newNode(t, f, broker.Retention{}), newNode(t, f, broker.Retention{})
	topic := newTopic(t)
	subscribe(t, c, topic)
	var wg sync.WaitGroup
	for _, pub := range []*node{a, b} {
		wg.Go(func() {
			for range each {
				if _, err := pub.Publish(context.Background(), topic, broker.Publication{Data: json.RawMessage(`{}`)}); err != nil {
					t.Errorf("Publish: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	msgs := c.rec.wait(t, topic, 2*each)
	for i, m := range msgs {
		if m.Seq != uint64(i+1) || m.Epoch != msgs[0].Epoch {
			t.Fatalf("node c received seqs %v, want 1..%d in one epoch", seqs(msgs), 2*each)
		}
	}
	assertDelivered(t, a, c, topic, 2*each)
}

// testSignal: a signal reaches the subscribed node in order with the
// topic's messages, takes no position and stays out of history; an
// unsubscribed node gets none.
func testSignal(t *testing.T, f Factory) {
	ctx := context.Background()
	n := newNode(t, f, broker.Retention{})
	topic := newTopic(t)
	if err := n.Signal(ctx, topic, []byte("before")); err != nil {
		t.Fatalf("Signal on an unsubscribed topic: %v", err)
	}
	subscribe(t, n, topic)
	for _, p := range []string{"a", "b", `{"x":1}`} {
		if err := n.Signal(ctx, topic, []byte(p)); err != nil {
			t.Fatalf("Signal: %v", err)
		}
	}
	publish(t, n, topic, `1`)
	n.rec.wait(t, topic, 1)
	testenv.Eventually(t, waitFor, func() bool { return len(n.rec.signalsOf(topic)) == 3 }, "signals %q, want a b {\"x\":1}", n.rec.signalsOf(topic))
	if got := strings.Join(n.rec.signalsOf(topic), " "); got != `a b {"x":1}` {
		t.Errorf("signals %q", got)
	}
	if pos, err := n.Latest(ctx, topic); err != nil || pos.Seq != 1 {
		t.Errorf("Latest after three signals and one publish = %+v, %v; want seq 1", pos, err)
	}
	if page, err := n.History(ctx, topic, broker.HistoryQuery{}); err != nil || len(page.Messages) != 1 {
		t.Errorf("History holds %d messages (%v), want 1", len(page.Messages), err)
	}
	unsubscribe(t, n, topic)
	if err := n.Signal(ctx, topic, []byte("after")); err != nil {
		t.Fatal(err)
	}
	assertDelivered(t, n, n, topic, 1)
	if got := n.rec.signalsOf(topic); len(got) != 3 {
		t.Errorf("signals after Unsubscribe: %q", got)
	}
}

// testMultiNodeSignal: a signal sent by one node reaches every node
// subscribed to the topic.
func testMultiNodeSignal(t *testing.T, f Factory) {
	ctx := context.Background()
	a, b, c := newNode(t, f, broker.Retention{}), newNode(t, f, broker.Retention{}), newNode(t, f, broker.Retention{})
	topic := newTopic(t)
	subscribe(t, b, topic)
	subscribe(t, c, topic)
	if err := a.Signal(ctx, topic, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	for i, n := range []*node{b, c} {
		testenv.Eventually(t, waitFor, func() bool { return len(n.rec.signalsOf(topic)) == 1 }, "node %d: signals %q", i, n.rec.signalsOf(topic))
	}
	if got := a.rec.signalsOf(topic); len(got) != 0 {
		t.Errorf("the unsubscribed sender got %q", got)
	}
}

// testPublishBatch: a batch across topics is published in order, each
// message as Publish would, and delivered.
func testPublishBatch(t *testing.T, f Factory) {
	ctx := context.Background()
	n := newNode(t, f, broker.Retention{})
	t1, t2 := newTopic(t), newTopic(t)
	subscribe(t, n, t1)
	subscribe(t, n, t2)
	publish(t, n, t1, `0`)
	items := []broker.Item{
		{Topic: t1, Publication: broker.Publication{Event: "a", Data: json.RawMessage(`1`)}},
		{Topic: t2, Publication: broker.Publication{Event: "b", Data: json.RawMessage(`2`), TS: 7}},
		{Topic: t1, Publication: broker.Publication{Event: "c", Data: json.RawMessage(`3`), From: "u"}},
	}
	pos, err := n.PublishBatch(ctx, items)
	if err != nil {
		t.Fatalf("PublishBatch: %v", err)
	}
	if len(pos) != 3 || pos[0].Seq != 2 || pos[1].Seq != 1 || pos[2].Seq != 3 {
		t.Fatalf("positions %+v: want t1 seq 2 and 3, t2 seq 1", pos)
	}
	got1, got2 := n.rec.wait(t, t1, 3), n.rec.wait(t, t2, 1)
	if got1[1].Event != "a" || got1[2].Event != "c" || got1[2].From != "u" || got1[1].TS == 0 {
		t.Errorf("t1 delivered %+v", got1)
	}
	if got2[0].Event != "b" || got2[0].TS != 7 || string(got2[0].Data) != `2` {
		t.Errorf("t2 delivered %+v", got2)
	}
	// The batch left each topic's position and history as Publish would.
	if latest, err := n.Latest(ctx, t1); err != nil || latest != pos[2] {
		t.Errorf("Latest(t1) = %+v, %v; want %+v", latest, err, pos[2])
	}
	if next := publish(t, n, t1, `4`); next.Epoch != pos[2].Epoch || next.Seq != 4 {
		t.Errorf("the publish after the batch got %+v, want seq 4 in epoch %q", next, pos[2].Epoch)
	}
	page, err := n.History(ctx, t1, broker.HistoryQuery{})
	if err != nil || len(page.Messages) != 4 || string(page.Messages[1].Data) != `1` || string(page.Messages[2].Data) != `3` {
		t.Errorf("History(t1) = %+v, %v; want 0, 1, 3, 4", page, err)
	}
	if pos, err := n.PublishBatch(ctx, nil); err != nil || len(pos) != 0 {
		t.Errorf("empty PublishBatch = %v, %v", pos, err)
	}
}
