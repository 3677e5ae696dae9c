package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/updraft/updraft/client"
	"github.com/updraft/updraft/internal/testenv"
	"github.com/updraft/updraft/protocol"
)

// wsRequester is a bare WebSocket connection that sends requests and reads
// their replies in turn; anything else read meanwhile goes to onOther.
type wsRequester struct {
	c       *websocket.Conn
	refs    int
	onOther func(line []byte)
}

func dialRequester(ctx context.Context, url string) (*wsRequester, error) {
	c, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{Subprotocols: []string{protocol.Subprotocol}})
	if err != nil {
		return nil, err
	}
	c.SetReadLimit(16 << 20)
	return &wsRequester{c: c, onOther: func([]byte) {}}, nil
}

// do sends req and returns its reply, failing on an error reply.
func (w *wsRequester) do(ctx context.Context, req map[string]any) (json.RawMessage, error) {
	w.refs++
	ref := fmt.Sprint(w.refs)
	req["ref"] = ref
	b, _ := json.Marshal(req)
	if err := w.c.Write(ctx, websocket.MessageText, b); err != nil {
		return nil, err
	}
	for {
		_, frame, err := w.c.Read(ctx)
		if err != nil {
			return nil, err
		}
		var reply *protocol.Reply
		protocol.Lines(frame, func(line []byte) {
			var r protocol.Reply
			if json.Unmarshal(line, &r) == nil && r.Type == protocol.TypeReply && r.Ref == ref {
				reply = &r
				return
			}
			w.onOther(line)
		})
		if reply == nil {
			continue
		}
		if !reply.OK {
			return nil, fmt.Errorf("%s: %s", req["type"], reply.Error.Message)
		}
		return reply.Data, nil
	}
}

// member is a connection tracked on a presence topic.
type member struct {
	*wsRequester
	conn string // the session id: the member's conn
}

// joinPresence connects to node with tok ("" for anonymous), subscribes to
// topic and tracks state.
func joinPresence(node *testenv.Node, topic, tok string, state any) (*member, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	w, err := dialRequester(ctx, node.WSURL())
	if err != nil {
		return nil, err
	}
	data, err := w.do(ctx, map[string]any{"type": "connect", "token": tok})
	if err != nil {
		return nil, err
	}
	var cr protocol.ConnectResult
	json.Unmarshal(data, &cr)
	if _, err := w.do(ctx, map[string]any{"type": "subscribe", "topic": topic}); err != nil {
		return nil, err
	}
	if _, err := w.do(ctx, map[string]any{"type": "track", "topic": topic, "state": state}); err != nil {
		return nil, err
	}
	// Nothing reads it from now on but do: its pings go unanswered, which
	// the gateway tolerates for two heartbeats (50 s by default), longer
	// than the tests that use it.
	return &member{wsRequester: w, conn: cr.Session}, nil
}

// observer watches a topic's presence from one node.
type observer struct {
	mu      sync.Mutex
	initial []protocol.Member
	events  []protocol.PresenceEvent
}

func observe(t testing.TB, node *testenv.Node, topic string) *observer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	w, err := dialRequester(ctx, node.WSURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.c.CloseNow() })
	o := &observer{}
	w.onOther = o.line
	if _, err := w.do(ctx, map[string]any{"type": "connect"}); err != nil {
		t.Fatal(err)
	}
	data, err := w.do(ctx, map[string]any{"type": "subscribe", "topic": topic, "presence": true})
	if err != nil {
		t.Fatal(err)
	}
	var res protocol.SubscribeResult
	json.Unmarshal(data, &res)
	o.initial = res.Members
	go func() { // read until the connection ends
		for {
			_, frame, err := w.c.Read(context.Background())
			if err != nil {
				return
			}
			protocol.Lines(frame, o.line)
		}
	}()
	return o
}

func (o *observer) line(line []byte) {
	var ev protocol.PresenceEvent
	if json.Unmarshal(line, &ev) != nil || ev.Type != protocol.TypePresence {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.events = append(o.events, ev)
}

// count returns how many events of kind the observer saw, and for how
// many distinct conns.
func (o *observer) count(kind string) (events, conns int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	seen := map[string]bool{}
	for _, e := range o.events {
		if e.Event == kind {
			events++
			seen[e.Member.Conn] = true
		}
	}
	return events, len(seen)
}

// presenceList lists topic's members through node's HTTP API, as sorted
// conns.
func presenceList(t *testing.T, node *testenv.Node, topic string) []string {
	t.Helper()
	req, _ := http.NewRequest("GET", node.URL()+"/api/v1/presence?topic="+topic, nil)
	req.Header.Set("Authorization", "Bearer "+apiKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var mr protocol.MembersResult
	if resp.StatusCode != 200 || json.Unmarshal(body, &mr) != nil {
		t.Fatalf("GET /api/v1/presence on %s: %s %s", node.Addr(), resp.Status, body)
	}
	out := make([]string, len(mr.Members))
	for i, m := range mr.Members {
		out[i] = m.Conn
	}
	slices.Sort(out)
	return out
}

func conns(ms []*member) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.conn
	}
	slices.Sort(out)
	return out
}

// TestPresenceCluster: 300 members on one topic over three nodes, with
// keys shared by several connections; every node lists the same members;
// joins, updates and leaves reach every presence subscriber once; a node
// killed with 100 members makes exactly 100 leaves within the timeout;
// 50 clean closes leave within a second; after a Redis restart the
// gateways register their members again.
func TestPresenceCluster(t *testing.T) {
	const topic, total, timeout = "doc/presence", 300, 3 * time.Second
	r, nodes := startCluster(t, 3, map[string]string{"UPDRAFT_PRESENCE_TIMEOUT": timeout.String()})
	observers := []*observer{observe(t, nodes[0], topic), observe(t, nodes[1], topic), observe(t, nodes[2], topic)}

	// Member i is on node i%3, with key user-(i%250): 50 keys have two
	// connections.
	tokens := make([]string, 250)
	for i := range tokens {
		tokens[i] = token(t, fmt.Sprintf("user-%d", i), time.Hour, []string{"**"}, nil)
	}
	members := connectAll(t, total, func(i int) (*member, error) {
		return joinPresence(nodes[i%3], topic, tokens[i%250], map[string]int{"i": i})
	})
	for _, m := range members {
		t.Cleanup(func() { m.c.CloseNow() })
	}
	all := conns(members)
	for i, o := range observers {
		testenv.Eventually(t, 10*time.Second, func() bool { n, _ := o.count("join"); return n >= total },
			"observer %d saw %d joins, want %d", i, func() int { n, _ := o.count("join"); return n }(), total)
		if n, distinct := o.count("join"); n != total || distinct != total {
			t.Errorf("observer %d: %d joins for %d conns, want %d each once", i, n, distinct, total)
		}
	}
	for i, n := range nodes {
		if got := presenceList(t, n, topic); !slices.Equal(got, all) {
			t.Errorf("node %d lists %d members, want the %d joined", i, len(got), len(all))
		}
	}

	// 30 updates reach every observer once.
	for _, m := range members[:30] {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := m.do(ctx, map[string]any{"type": "track", "topic": topic, "state": map[string]bool{"typing": true}})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
	for i, o := range observers {
		testenv.Eventually(t, 10*time.Second, func() bool { n, _ := o.count("update"); return n >= 30 }, "observer %d: updates missing", i)
		if n, distinct := o.count("update"); n != 30 || distinct != 30 {
			t.Errorf("observer %d: %d updates for %d conns, want 30", i, n, distinct)
		}
	}

	// kill -9 node 3: its 100 members leave, once each, within the timeout.
	nodes[2].Kill()
	killed := time.Now()
	var alive []*member
	for i, m := range members {
		if i%3 != 2 {
			alive = append(alive, m)
		}
	}
	for i, o := range observers[:2] {
		testenv.Eventually(t, timeout+2*time.Second, func() bool { n, _ := o.count("leave"); return n >= 100 },
			"observer %d: leaves of the dead node's members missing", i)
	}
	t.Logf("100 leaves after kill -9 within %v (timeout %v)", time.Since(killed).Round(time.Millisecond), timeout)
	for i, n := range nodes[:2] {
		if got := presenceList(t, n, topic); !slices.Equal(got, conns(alive)) {
			t.Errorf("node %d lists %d members after the kill, want %d", i, len(got), len(alive))
		}
	}

	// 50 clean closes (25 on each live node) leave within a second.
	closing, alive := alive[:50], alive[50:]
	closed := time.Now()
	for _, m := range closing {
		m.c.Close(websocket.StatusNormalClosure, "bye")
	}
	for i, o := range observers[:2] {
		testenv.Eventually(t, time.Second+time.Since(closed), func() bool { n, _ := o.count("leave"); return n >= 150 },
			"observer %d: the clean closes' leaves did not arrive within a second", i)
	}
	t.Logf("50 leaves after clean closes within %v", time.Since(closed).Round(time.Millisecond))
	// Exactly once each, the dead node's included. A second leave would
	// come from another sweep of an expired member; let two more sweep
	// rounds (a sixth of the timeout each) pass before counting. Waiting
	// out a window is the only way to see that something did not happen.
	time.Sleep(time.Until(killed.Add(timeout + time.Second)))
	for i, o := range observers[:2] {
		if n, distinct := o.count("leave"); n != 150 || distinct != 150 {
			t.Errorf("observer %d: %d leaves for %d conns, want 150 each once", i, n, distinct)
		}
	}

	// Redis restarted (its data gone): the gateways register their members
	// again, and the list converges to the truth by itself.
	r.Restart(t)
	want := conns(alive)
	for i, n := range nodes[:2] {
		var got []string
		testenv.Eventually(t, 20*time.Second, func() bool { got = presenceList(t, n, topic); return slices.Equal(got, want) },
			"node %d lists %d members after the Redis restart, want %d", i, len(got), len(want))
	}
}

// TestPresenceBadInput: every bad presence request gets a clear error and
// the connection carries on.
func TestPresenceBadInput(t *testing.T) {
	_, nodes := startCluster(t, 1, map[string]string{"UPDRAFT_PRESENCE_RATE": "2", "UPDRAFT_ALLOW_ANONYMOUS": "false"})
	c := dialRaw(t, nodes[0].WSURL(), nil)
	c.connect(token(t, "user-1", time.Hour, []string{"doc/*"}, nil))
	c.expectError(c.replyTo("1", `{"type":"track","ref":"1","topic":"doc/1","state":{}}`), protocol.CodeBadRequest)
	if rep := c.replyTo("2", `{"type":"subscribe","ref":"2","topic":"doc/1"}`); !rep.OK {
		t.Fatalf("subscribe: %+v", rep.Error)
	}
	c.expectError(c.replyTo("3", `{"type":"track","ref":"3","topic":"doc/1","state":"typing"}`), protocol.CodeBadRequest)
	c.expectError(c.replyTo("4", `{"type":"track","ref":"4","topic":"doc/1","state":[1,2]}`), protocol.CodeBadRequest)
	big := fmt.Sprintf(`{"type":"track","ref":"5","topic":"doc/1","state":{"x":"%02000d"}}`, 0)
	c.expectError(c.replyTo("5", big), protocol.CodeTooLarge)
	// Rate 2 per second, burst 4: a fast fifth update is refused.
	for i := 6; i < 10; i++ {
		ref := fmt.Sprint(i)
		if rep := c.replyTo(ref, `{"type":"track","ref":"`+ref+`","topic":"doc/1","state":{"n":`+ref+`}}`); !rep.OK {
			t.Fatalf("track %d: %+v", i, rep.Error)
		}
	}
	c.expectError(c.replyTo("10", `{"type":"track","ref":"10","topic":"doc/1"}`), protocol.CodeRateLimited)
	c.expectError(c.replyTo("11", `{"type":"members","ref":"11","topic":"secret/1"}`), protocol.CodeForbidden)
	c.expectError(c.replyTo("12", `{"type":"subscribe","ref":"12","topic":"secret/1","presence":true}`), protocol.CodeForbidden)
	// Still connected, still a member.
	rep := c.replyTo("13", `{"type":"members","ref":"13","topic":"doc/1"}`)
	var mr protocol.MembersResult
	if json.Unmarshal(rep.Data, &mr); !rep.OK || len(mr.Members) != 1 || mr.Members[0].Key != "user-1" || string(mr.Members[0].State) != `{"n":9}` {
		t.Errorf("members: %+v %s", rep.Error, rep.Data)
	}
}

// BenchmarkPresenceJoin measures how long 1,000 members take to join one
// topic across three gateways (built without -race), 16 joining at a
// time, until the presence observer on every gateway has seen all 1,000
// joins. One iteration is one such wave, on a fresh topic:
//
//	go test -run '^$' -bench PresenceJoin -benchtime 3x ./e2e
func BenchmarkPresenceJoin(b *testing.B) {
	const total = 1000
	nodes := benchCluster(b, nil, 3, nil)
	for i := 0; i < b.N; i++ {
		topic := fmt.Sprintf("doc/join-%d", i)
		observers := make([]*observer, len(nodes))
		for j, n := range nodes {
			observers[j] = observe(b, n, topic)
		}
		start := time.Now()
		members := connectAll(b, total, func(k int) (*member, error) {
			return joinPresence(nodes[k%3], topic, "", map[string]int{"k": k})
		})
		for j, o := range observers {
			testenv.Eventually(b, 60*time.Second, func() bool { n, _ := o.count("join"); return n >= total },
				"observer %d saw too few joins", j)
		}
		elapsed := time.Since(start)
		b.ReportMetric(elapsed.Seconds()*1000, "ms/1000-joins")
		for _, m := range members {
			m.c.CloseNow()
		}
	}
}

// TestPresenceClientFailover: a Go client tracked on a gateway that is
// killed reconnects through the load balancer to the other gateway and
// tracks itself again with its last state, by itself; observers see its
// old connection leave and its new one join with that state.
func TestPresenceClientFailover(t *testing.T) {
	const topic, timeout = "doc/failover", 3 * time.Second
	_, nodes := startCluster(t, 2, map[string]string{"UPDRAFT_PRESENCE_TIMEOUT": timeout.String()})
	lb := testenv.StartProxy(t, nodes[0].Addr(), nodes[1].Addr())
	c := dial(t, lb.WSURL(), client.Options{Token: token(t, "sarah", time.Hour, []string{"doc/*"}, nil)})
	ctx := context.Background()
	if _, err := c.Subscribe(ctx, topic, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Track(ctx, topic, map[string]any{"name": "Sarah", "typing": true}); err != nil {
		t.Fatal(err)
	}
	first := c.Session()
	home, other := nodes[0], nodes[1]
	if c.Node() == "node-2" {
		home, other = nodes[1], nodes[0]
	}
	o := observe(t, other, topic)
	if len(o.initial) != 1 || o.initial[0].Conn != first || o.initial[0].Key != "sarah" {
		t.Fatalf("members before the failover: %+v", o.initial)
	}
	home.Kill()
	testenv.Eventually(t, 3*timeout, func() bool {
		o.mu.Lock()
		defer o.mu.Unlock()
		var left, joined bool
		for _, e := range o.events {
			left = left || e.Event == "leave" && e.Member.Conn == first
			joined = joined || e.Event == "join" && e.Member.Conn != first && e.Member.Key == "sarah" &&
				string(e.Member.State) == `{"name":"Sarah","typing":true}`
		}
		return left && joined
	}, "the observer did not see the old connection leave and the new one join with the same state")
	if got := presenceList(t, other, topic); len(got) != 1 || got[0] == first || got[0] != c.Session() {
		t.Errorf("members after the failover %v, want only the new connection %s", got, c.Session())
	}
}
