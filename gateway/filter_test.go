package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"

	"github.com/updraft/updraft/broker"
	"github.com/updraft/updraft/protocol"
)

const filterSecret = "filter-secret"

// filterServer runs a gateway over an in-memory broker (retaining size
// messages per topic) behind an httptest server. It accepts anonymous
// connects and tokens signed with filterSecret.
func filterServer(t *testing.T, size int) (*httptest.Server, *broker.Memory) {
	t.Helper()
	b := broker.NewMemory(broker.MemoryConfig{Retention: broker.Retention{Size: size}})
	t.Cleanup(func() { b.Close() })
	s := testServer(t, Config{Broker: b, AllowAnonymous: true, JWTSecret: []byte(filterSecret)})
	b.RegisterEventHandler(s.Deliver, s.DeliverSignal)
	hs := httptest.NewServer(s)
	t.Cleanup(hs.Close)
	return hs, b
}

// wsConn is a bare protocol connection to a test gateway.
type wsConn struct {
	t         *testing.T
	c         *websocket.Conn
	pending   []json.RawMessage // read but not yet consumed
	refs      int
	presences []protocol.PresenceEvent // presence events read so far, in order
}

// dialWS connects to hs with token ("" for anonymous) and fails the test
// unless the connect succeeds.
func dialWS(t *testing.T, hs *httptest.Server, token string) *wsConn {
	t.Helper()
	c := dialWSRaw(t, hs)
	if rep := c.request(map[string]any{"type": "connect", "token": token}); !rep.OK {
		t.Fatalf("connect refused: %+v", rep.Error)
	}
	return c
}

func dialWSRaw(t *testing.T, hs *httptest.Server) *wsConn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), streamWait)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(hs.URL, "http")+"/api/realtime",
		&websocket.DialOptions{Subprotocols: []string{protocol.Subprotocol}})
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadLimit(-1)
	t.Cleanup(func() { c.CloseNow() })
	return &wsConn{t: t, c: c}
}

func (w *wsConn) next() json.RawMessage {
	w.t.Helper()
	for len(w.pending) == 0 {
		ctx, cancel := context.WithTimeout(context.Background(), streamWait)
		_, b, err := w.c.Read(ctx)
		cancel()
		if err != nil {
			w.t.Fatalf("read: %v", err)
		}
		protocol.Lines(b, func(l []byte) { w.pending = append(w.pending, append(json.RawMessage(nil), l...)) })
	}
	m := w.pending[0]
	w.pending = w.pending[1:]
	return m
}

// request sends req (a ref is added) and returns its reply, failing the
// test on any event that comes before it.
func (w *wsConn) request(req map[string]any) protocol.Reply {
	w.t.Helper()
	rep, events := w.requestEvents(req)
	if len(events) > 0 {
		w.t.Fatalf("unexpected events before the reply to %v: %+v", req, events)
	}
	return rep
}

// requestEvents sends req and returns its reply and the events that came
// before it.
func (w *wsConn) requestEvents(req map[string]any) (protocol.Reply, []protocol.Event) {
	w.t.Helper()
	w.refs++
	ref := fmt.Sprint(w.refs)
	req["ref"] = ref
	b, _ := json.Marshal(req)
	ctx, cancel := context.WithTimeout(context.Background(), streamWait)
	defer cancel()
	if err := w.c.Write(ctx, websocket.MessageText, b); err != nil {
		w.t.Fatal(err)
	}
	var events []protocol.Event
	for {
		m := w.next()
		var env struct{ Type string }
		json.Unmarshal(m, &env)
		switch env.Type {
		case protocol.TypeReply:
			var rep protocol.Reply
			if err := json.Unmarshal(m, &rep); err != nil || rep.Ref != ref {
				w.t.Fatalf("reply %s, want the one to ref %s", m, ref)
			}
			return rep, events
		case protocol.TypeEvent:
			var ev protocol.Event
			if err := json.Unmarshal(m, &ev); err != nil {
				w.t.Fatal(err)
			}
			events = append(events, ev)
		case protocol.TypePresence:
			var pe protocol.PresenceEvent
			if err := json.Unmarshal(m, &pe); err != nil {
				w.t.Fatal(err)
			}
			w.presences = append(w.presences, pe)
		default:
			w.t.Fatalf("unexpected message %s", m)
		}
	}
}

// subscribe subscribes and returns the reply's data and the replayed
// events. It fails the test on an error reply.
func (w *wsConn) subscribe(req map[string]any) (protocol.SubscribeResult, []protocol.Event) {
	w.t.Helper()
	req["type"] = protocol.TypeSubscribe
	rep := w.request(req)
	if !rep.OK {
		w.t.Fatalf("subscribe %v: %+v", req, rep.Error)
	}
	var res protocol.SubscribeResult
	json.Unmarshal(rep.Data, &res)
	return res, w.events()
}

// events returns every event queued for the client so far: a ping's reply
// comes after them. The memory broker delivers before Publish returns.
func (w *wsConn) events() []protocol.Event {
	w.t.Helper()
	rep, events := w.requestEvents(map[string]any{"type": protocol.TypePing})
	if !rep.OK {
		w.t.Fatalf("ping: %+v", rep.Error)
	}
	return events
}

// expectError fails unless rep is an error with code whose message
// contains want.
func expectError(t *testing.T, rep protocol.Reply, code, want string) {
	t.Helper()
	if rep.OK || rep.Error == nil || rep.Error.Code != code || !strings.Contains(rep.Error.Message, want) {
		t.Fatalf("reply %+v (error %+v), want %s saying %q", rep, rep.Error, code, want)
	}
}

// publishRows publishes each row as an INSERT on topic.
func publishRows(t *testing.T, b broker.Broker, topic string, rows ...string) {
	t.Helper()
	for _, r := range rows {
		if _, err := b.Publish(context.Background(), topic, broker.Publication{Event: protocol.EventInsert, Data: json.RawMessage(r)}); err != nil {
			t.Fatal(err)
		}
	}
}

// seqs lists the events' seqs.
func seqs(events []protocol.Event) []uint64 {
	out := make([]uint64, len(events))
	for i, e := range events {
		out[i] = e.Seq
	}
	return out
}

func historySeqs(msgs []protocol.HistoryMessage) []uint64 {
	out := make([]uint64, len(msgs))
	for i, m := range msgs {
		out[i] = m.Seq
	}
	return out
}

func checkSeqs(t *testing.T, what string, got []uint64, want ...uint64) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Fatalf("%s: seqs %v, want %v", what, got, want)
	}
}

// orderRows are seqs 1 to 6 of "orders": paid are 2, 3 and 5; customer 7
// owns 1, 2 and 6.
var orderRows = []string{
	`{"id":1,"status":"new","customer_id":7}`,
	`{"id":2,"status":"paid","customer_id":7}`,
	`{"id":3,"status":"paid","customer_id":8}`,
	`{"id":4,"status":"new","customer_id":8}`,
	`{"id":5,"status":"paid","customer_id":8}`,
	`{"id":6,"status":"new","customer_id":7}`,
}

func TestSubscribeFilterLive(t *testing.T) {
	hs, b := filterServer(t, 0)
	filtered := dialWS(t, hs, "")
	all := dialWS(t, hs, "")
	filtered.subscribe(map[string]any{"topic": "orders", "filter": "status=eq.paid"})
	all.subscribe(map[string]any{"topic": "orders"})

	publishRows(t, b, "orders", orderRows...)
	publishRows(t, b, "orders", `[1,2]`, `"paid"`, `null`, `{"id":7,"status":"paid"}`) // seqs 7 to 10

	events := filtered.events()
	checkSeqs(t, "filtered subscriber", seqs(events), 2, 3, 5, 10)
	if string(events[0].Data) != orderRows[1] || events[0].Event != protocol.EventInsert {
		t.Fatalf("event passed through changed: %+v", events[0])
	}
	checkSeqs(t, "unfiltered subscriber", seqs(all.events()), 1, 2, 3, 4, 5, 6, 7, 8, 9, 10)
}

func TestSubscribeFilterRecovery(t *testing.T) {
	hs, b := filterServer(t, 0)
	publishRows(t, b, "orders", orderRows...)
	c := dialWS(t, hs, "")

	res, events := c.subscribe(map[string]any{"topic": "orders", "filter": "status=eq.paid", "rewind": 4})
	if !res.Recovered || res.Seq != 6 {
		t.Fatalf("rewind reply %+v", res)
	}
	checkSeqs(t, "rewind 4 (seqs 3 to 6), filtered", seqs(events), 3, 5)

	// Subscribing again replaces the filter, and since recovers through it.
	res, events = c.subscribe(map[string]any{"topic": "orders", "filter": "status=eq.new", "since": map[string]any{"epoch": res.Epoch, "seq": 1}})
	if !res.Recovered {
		t.Fatalf("since reply %+v", res)
	}
	checkSeqs(t, "since seq 1, filtered", seqs(events), 4, 6)

	// Live delivery goes on after recovery, through the new filter.
	publishRows(t, b, "orders", `{"id":7,"status":"paid"}`, `{"id":8,"status":"new"}`)
	checkSeqs(t, "live after recovery", seqs(c.events()), 8)

	// Subscribing again without a filter lifts it.
	_, events = c.subscribe(map[string]any{"topic": "orders", "rewind": 2})
	checkSeqs(t, "rewind 2 without filter", seqs(events), 7, 8)
}

func TestSubscribeFilterColumns(t *testing.T) {
	hs, b := filterServer(t, 0)
	tests := []struct {
		filter string
		want   []uint64
	}{
		{"nosuch=eq.1", nil},  // a missing column is NULL: it equals nothing
		{"nosuch=neq.1", nil}, // and neq never matches NULL
		{"nosuch=is.null", []uint64{1, 2, 3, 4}},
		{"eq=eq.1", []uint64{1}}, // a column named like an operator
		{"in=in.(1,2)", []uint64{1, 2}},
		{"note=is.null", []uint64{2, 3, 4}},
		{`name=in.("a,b",c)`, []uint64{1, 3}},
		{"amount=gt.12345678901234567890.123456788", []uint64{1}},
		{"amount=lt.9", []uint64{2}}, // numerically, not as strings
	}
	conns := make([]*wsConn, len(tests))
	for i, tt := range tests {
		conns[i] = dialWS(t, hs, "")
		conns[i].subscribe(map[string]any{"topic": "billing.invoices", "filter": tt.filter})
	}
	publishRows(t, b, "billing.invoices",
		`{"eq":1,"in":1,"note":"x","name":"a,b","amount":12345678901234567890.123456789}`,
		`{"eq":2,"in":2,"note":null,"name":"b","amount":10E-1}`,
		`{"eq":"1x","in":3,"name":"c","amount":12345678901234567890.123456788}`,
		`{}`)
	for i, tt := range tests {
		checkSeqs(t, tt.filter, seqs(conns[i].events()), tt.want...)
	}
}

func TestSubscribeFilterRefused(t *testing.T) {
	hs, b := filterServer(t, 0)
	c := dialWS(t, hs, "")
	tests := []struct {
		topic, filter string
		want          string
	}{
		{"orders", "name=like.x", `unknown operator "like" in "name=like.x"; want eq, neq, gt, gte, lt, lte, in or is`},
		{"orders", "status", `missing '=' in "status"`},
		{"orders", "a=is.maybe", `bad value "maybe" for is`},
		{"orders", "a=in.(1,2", `malformed in list`},
		{"orders", strings.Repeat("a=eq.1&", 17) + "a=eq.1", "more than 16 conditions"},
		{"chat/general", "a=eq.1", "filters apply to table topics only"},
	}
	for _, tt := range tests {
		rep := c.request(map[string]any{"type": protocol.TypeSubscribe, "topic": tt.topic, "filter": tt.filter})
		expectError(t, rep, protocol.CodeBadRequest, tt.want)
	}
	// None of them subscribed.
	publishRows(t, b, "orders", orderRows[0])
	if _, err := b.Publish(context.Background(), "chat/general", broker.Publication{Event: "m", Data: json.RawMessage(`{"a":1}`)}); err != nil {
		t.Fatal(err)
	}
	if ev := c.events(); len(ev) != 0 {
		t.Fatalf("a refused subscribe delivered %+v", ev)
	}
}

func filterToken(t *testing.T, filters map[string]string) string {
	return sign(t, filterSecret, &Claims{
		RegisteredClaims: jwt.RegisteredClaims{Subject: "user-7", ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Hour))},
		Subscribe:        []string{"*", "chat/*"},
		Filters:          filters,
	}, jwt.SigningMethodHS256)
}

func TestForcedFilter(t *testing.T) {
	hs, b := filterServer(t, 0)
	publishRows(t, b, "orders", orderRows...)
	token := filterToken(t, map[string]string{"orders": "customer_id=eq.7"})

	// Whatever filter the client sends, customer 8's rows never show.
	tests := []struct {
		name      string
		filter    string
		recovered []uint64 // rewind 6
		live      []uint64 // of seqs 7 (customer 7, paid) and 8 (customer 8, paid)
	}{
		{"no client filter", "", []uint64{1, 2, 6}, []uint64{7}},
		{"asking for customer 8", "customer_id=eq.8", nil, nil},
		{"negating the forced filter", "customer_id=neq.7", nil, nil},
		{"widening", "customer_id=in.(7,8)", []uint64{1, 2, 6}, []uint64{7}},
		{"narrowing", "status=eq.paid", []uint64{2}, []uint64{7}},
	}
	conns := make([]*wsConn, len(tests))
	for i, tt := range tests {
		conns[i] = dialWS(t, hs, token)
		req := map[string]any{"topic": "orders", "rewind": 6}
		if tt.filter != "" {
			req["filter"] = tt.filter
		}
		_, events := conns[i].subscribe(req)
		checkSeqs(t, tt.name+": recovered", seqs(events), tt.recovered...)
	}
	publishRows(t, b, "orders", `{"id":7,"status":"paid","customer_id":7}`, `{"id":8,"status":"paid","customer_id":8}`)
	for i, tt := range tests {
		checkSeqs(t, tt.name+": live", seqs(conns[i].events()), tt.live...)
	}

	// history obeys the forced filter too.
	c := dialWS(t, hs, token)
	rep := c.request(map[string]any{"type": protocol.TypeHistory, "topic": "orders"})
	if !rep.OK {
		t.Fatalf("history: %+v", rep.Error)
	}
	var h protocol.HistoryResult
	json.Unmarshal(rep.Data, &h)
	checkSeqs(t, "history", historySeqs(h.Messages), 1, 2, 6, 7)

	// Other topics the token reaches are not filtered.
	c.subscribe(map[string]any{"topic": "billing.invoices"})
	publishRows(t, b, "billing.invoices", `{"customer_id":8}`)
	checkSeqs(t, "unfiltered table", seqs(c.events()), 1)
}

func TestForcedFilterPatterns(t *testing.T) {
	hs, b := filterServer(t, 0)
	token := filterToken(t, map[string]string{"*": "tenant=eq.a", "orders": "customer_id=eq.7"})
	c := dialWS(t, hs, token)
	c.subscribe(map[string]any{"topic": "orders"})
	c.subscribe(map[string]any{"topic": "billing.invoices"})
	c.subscribe(map[string]any{"topic": "chat/general"}) // no filter on application topics

	publishRows(t, b, "orders", `{"tenant":"a","customer_id":7}`, `{"tenant":"b","customer_id":7}`, `{"tenant":"a","customer_id":8}`)
	publishRows(t, b, "billing.invoices", `{"tenant":"a"}`, `{"tenant":"b"}`, `{}`)
	if _, err := b.Publish(context.Background(), "chat/general", broker.Publication{Event: "m", Data: json.RawMessage(`{"tenant":"b"}`)}); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range c.events() {
		got = append(got, fmt.Sprintf("%s/%d", e.Topic, e.Seq))
	}
	if want := []string{"orders/1", "billing.invoices/1", "chat/general/1"}; !slices.Equal(got, want) {
		t.Fatalf("events %v, want %v", got, want)
	}
}

// TestForcedFilterHistoryPages: a filtered history request reads past the
// first page to find matching messages, and pages on with before.
func TestForcedFilterHistoryPages(t *testing.T) {
	hs, b := filterServer(t, 5000)
	rows := make([]string, 2500)
	for i := range rows {
		cust := 8
		if i < 3 || i == 1200 || i == 2499 {
			cust = 7 // seqs 1, 2, 3, 1201, 2500
		}
		rows[i] = fmt.Sprintf(`{"id":%d,"customer_id":%d}`, i+1, cust)
	}
	publishRows(t, b, "orders", rows...)
	c := dialWS(t, hs, filterToken(t, map[string]string{"orders": "customer_id=eq.7"}))

	history := func(req map[string]any) []uint64 {
		t.Helper()
		req["type"], req["topic"] = protocol.TypeHistory, "orders"
		rep := c.request(req)
		if !rep.OK {
			t.Fatalf("history %v: %+v", req, rep.Error)
		}
		var h protocol.HistoryResult
		json.Unmarshal(rep.Data, &h)
		return historySeqs(h.Messages)
	}
	checkSeqs(t, "limit 3", history(map[string]any{"limit": 3}), 3, 1201, 2500)
	checkSeqs(t, "limit 2 before 1201", history(map[string]any{"limit": 2, "before": 1201}), 2, 3)
	checkSeqs(t, "all", history(map[string]any{}), 1, 2, 3, 1201, 2500)
	checkSeqs(t, "before 1", history(map[string]any{"before": 1}))
}

func TestForcedFilterRefusesBadTokens(t *testing.T) {
	hs, _ := filterServer(t, 0)
	for _, tt := range []struct {
		filters map[string]string
		want    string
	}{
		{map[string]string{"orders": "customer_id=like.7"}, `token forces an invalid filter on "orders": protocol: invalid filter: unknown operator "like"`},
		{map[string]string{"orders": ""}, `token forces an invalid filter on "orders": protocol: invalid filter: empty`},
		{map[string]string{"chat/*": "a=eq.1"}, "filters apply to table topics only"},
		{map[string]string{"a//b": "a=eq.1"}, "invalid topic pattern"},
	} {
		c := dialWSRaw(t, hs)
		rep := c.request(map[string]any{"type": protocol.TypeConnect, "token": filterToken(t, tt.filters)})
		expectError(t, rep, protocol.CodeUnauthorized, tt.want)
	}
}

// TestDeliverFiltersHeldMessages: a subscription still catching up holds
// only the live messages its filter passes, and filtered and unfiltered
// subscribers share one encoding of each message.
func TestDeliverFiltersHeldMessages(t *testing.T) {
	s := testServer(t, Config{AllowAnonymous: true})
	plain := fakeSessions(s, "orders", 1, 10)[0]
	f, err := protocol.ParseFilter("status=eq.paid")
	if err != nil {
		t.Fatal(err)
	}
	sess := &session{srv: s, id: "s_filtered", queue: busyQueue(10)}
	sub := &subscription{sess: sess, topic: "orders", filter: f}
	sub.holding.Store(true)
	s.hub.add(sub)
	for i, row := range []string{`{"status":"paid"}`, `{"status":"new"}`, `{"status":"paid"}`, `not json`} {
		s.Deliver(broker.Message{Topic: "orders", Position: broker.Position{Epoch: "e", Seq: uint64(i + 1)},
			Publication: broker.Publication{Event: "INSERT", Data: json.RawMessage(row)}})
	}
	if len(sub.held) != 2 {
		t.Fatalf("held %d messages, want the 2 that match", len(sub.held))
	}
	sub.release(broker.Position{Epoch: "e", Seq: 1}) // seq 1 came from history
	items := sess.queue.take(nil).items
	all := plain.queue.take(nil).items
	if len(items) != 1 || len(all) != 4 {
		t.Fatalf("filtered got %d, unfiltered %d; want 1 and 4", len(items), len(all))
	}
	if &items[0][0] != &all[2][0] {
		t.Fatal("a filtered subscriber got its own copy: filters must not change the encoding")
	}
}
