package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/updraft/updraft/protocol"
)

// presenceMsg returns the wire form of a presence event.
func presenceMsg(topic, event string, m protocol.Member) []byte {
	b, err := json.Marshal(protocol.PresenceEvent{Type: protocol.TypePresence, Topic: topic, Event: event, Member: m})
	if err != nil {
		panic(err)
	}
	return b
}

func member(conn, state string) protocol.Member {
	m := protocol.Member{Key: "user-" + conn, Conn: conn, Joined: 1764170000000}
	if state != "" {
		m.State = json.RawMessage(state)
	}
	return m
}

// reply reads the next request, checks its type and answers it ok with data.
func (sc *serverConn) reply(t *testing.T, typ string, data any) protocol.Request {
	t.Helper()
	r := sc.expect(t, typ)
	sc.send(t, protocol.EncodeReply(r.Ref, data))
	return r
}

// pingThrough makes a ping round trip on sc: everything the server sent
// before the reply has been handled by the client when it returns, and
// the ping must be the client's next request.
func pingThrough(t *testing.T, c *Client, sc *serverConn) {
	t.Helper()
	ch := async(func() error { return c.Ping(context.Background()) })
	sc.reply(t, protocol.TypePing, nil)
	if err := await(t, ch, "ping"); err != nil {
		t.Fatal(err)
	}
}

// subscribePresence subscribes c to topic with WithPresence, checks that the
// request asks for presence and answers with res.
func subscribePresence(t *testing.T, c *Client, sc *serverConn, topic string, h func(protocol.Event), res protocol.SubscribeResult, opts ...SubscribeOption) *Subscription {
	t.Helper()
	ch := make(chan *Subscription, 1)
	go func() {
		sub, err := c.Subscribe(context.Background(), topic, h, opts...)
		if err != nil {
			t.Errorf("Subscribe %s: %v", topic, err)
		}
		ch <- sub
	}()
	r := sc.expect(t, protocol.TypeSubscribe)
	if r.Topic != topic || !r.Presence {
		t.Fatalf("subscribe %+v, want %s with presence", r, topic)
	}
	sc.send(t, protocol.EncodeReply(r.Ref, res))
	sub := await(t, ch, "subscription")
	if sub == nil {
		t.FailNow()
	}
	return sub
}

// calls records the handler calls of a test in order and fails it when two
// run at once.
type calls struct {
	t       *testing.T
	running atomic.Bool
	mu      sync.Mutex
	got     []string // guarded by mu
	changed chan struct{}
}

func newCalls(t *testing.T) *calls { return &calls{t: t, changed: make(chan struct{}, 1)} }

func (c *calls) add(s string) {
	if !c.running.CompareAndSwap(false, true) {
		c.t.Errorf("handlers called concurrently (at %s)", s)
	}
	defer c.running.Store(false)
	c.mu.Lock()
	c.got = append(c.got, s)
	c.mu.Unlock()
	select {
	case c.changed <- struct{}{}:
	default:
	}
}

func (c *calls) event(ev protocol.Event) { c.add(fmt.Sprintf("event %s %d", ev.Topic, ev.Seq)) }

func (c *calls) presence(ev protocol.PresenceEvent) {
	c.add(fmt.Sprintf("presence %s %s %s %s", ev.Topic, ev.Event, ev.Member.Conn, ev.Member.State))
}

func (c *calls) retrack(err error) { c.add(fmt.Sprintf("retrack %v", err)) }

// wait waits until n calls were recorded and returns them.
func (c *calls) wait(n int) []string {
	c.t.Helper()
	rec := &recorder{changed: c.changed}
	rec.until(c.t, fmt.Sprintf("%d handler calls", n), func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.got) >= n
	})
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.got)
}

func TestPresenceEventsReachTheHandlerInOrder(t *testing.T) {
	t.Parallel()
	s := newScriptServer(t)
	c, sc := dial(t, s, Options{})
	got := newCalls(t)
	alice := member("s_a", `{"name":"Alice"}`)
	sub := subscribePresence(t, c, sc, "doc/42", got.event,
		protocol.SubscribeResult{Epoch: "e1", Members: []protocol.Member{alice}}, WithPresence(got.presence))
	quiet := subscribeOn(t, c, sc, "chat/a", nil, protocol.SubscribeResult{Epoch: "e1"})

	bob := member("s_b", "")
	alice2 := member("s_a", `{"name":"Alice","typing":true}`)
	sc.send(t,
		event("doc/42", "edit", "e1", 1, `{}`),
		presenceMsg("doc/42", protocol.PresenceJoin, bob),
		event("doc/42", "edit", "e1", 2, `{}`),
		presenceMsg("doc/42", protocol.PresenceUpdate, alice2),
		presenceMsg("chat/a", protocol.PresenceJoin, bob),  // subscribed without presence
		presenceMsg("other/1", protocol.PresenceJoin, bob), // not subscribed
		presenceMsg("doc/42", protocol.PresenceLeave, bob),
		event("doc/42", "edit", "e1", 3, `{}`),
	)
	want := []string{
		"event doc/42 1",
		"presence doc/42 join s_b ",
		"event doc/42 2",
		`presence doc/42 update s_a {"name":"Alice","typing":true}`,
		"presence doc/42 leave s_b ",
		"event doc/42 3",
	}
	if calls := got.wait(len(want)); !slices.Equal(calls, want) {
		t.Errorf("handler calls\n got %q\nwant %q", calls, want)
	}
	if res := sub.Result(); !reflect.DeepEqual(res.Members, []protocol.Member{alice}) {
		t.Errorf("Result().Members %+v, want the reply's", res.Members)
	}
	if ms := sub.Members(); !reflect.DeepEqual(ms, []protocol.Member{alice2}) {
		t.Errorf("Members %+v, want the reply's with the events applied", ms)
	}
	if ms := quiet.Members(); ms != nil {
		t.Errorf("Members without presence: %+v", ms)
	}
	pingThrough(t, c, sc)
	if calls := got.wait(len(want)); len(calls) != len(want) {
		t.Errorf("extra handler calls: %q", calls[len(want):])
	}
}

func TestApplyPresence(t *testing.T) {
	t.Parallel()
	a, b, a2 := member("s_a", `{}`), member("s_b", ""), member("s_a", `{"x":1}`)
	tests := []struct {
		name  string
		in    []protocol.Member
		event string
		m     protocol.Member
		want  []protocol.Member
	}{
		{"join adds", []protocol.Member{a}, protocol.PresenceJoin, b, []protocol.Member{a, b}},
		{"join of a member replaces it", []protocol.Member{a, b}, protocol.PresenceJoin, a2, []protocol.Member{a2, b}},
		{"update replaces", []protocol.Member{a, b}, protocol.PresenceUpdate, a2, []protocol.Member{a2, b}},
		{"update of an unknown member adds it", []protocol.Member{b}, protocol.PresenceUpdate, a2, []protocol.Member{b, a2}},
		{"leave removes", []protocol.Member{a, b}, protocol.PresenceLeave, a, []protocol.Member{b}},
		{"leave of an unknown member", []protocol.Member{b}, protocol.PresenceLeave, a, []protocol.Member{b}},
		{"unknown event", []protocol.Member{b}, "wave", a, []protocol.Member{b}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := applyPresence(slices.Clone(tt.in), protocol.PresenceEvent{Event: tt.event, Member: tt.m})
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestTrackUntrackMembers(t *testing.T) {
	t.Parallel()
	s := newScriptServer(t)
	c, sc := dial(t, s, Options{})
	ctx := context.Background()
	subscribePresence(t, c, sc, "doc/42", nil, protocol.SubscribeResult{Epoch: "e1"}, WithPresence(nil))

	// Track sends the state as JSON; nil sends none.
	for _, tt := range []struct {
		state any
		want  string
	}{
		{map[string]any{"name": "<Sarah>", "typing": true}, `{"name":"<Sarah>","typing":true}`},
		{json.RawMessage(`{"raw":1}`), `{"raw":1}`},
		{nil, ""},
		{(*struct{})(nil), ""},
	} {
		ch := async(func() error { return c.Track(ctx, "doc/42", tt.state) })
		r := sc.reply(t, protocol.TypeTrack, struct{}{})
		if r.Topic != "doc/42" || string(r.State) != tt.want {
			t.Errorf("track %+v (state %s), want doc/42 with state %q", r, r.State, tt.want)
		}
		if err := await(t, ch, "track"); err != nil {
			t.Errorf("Track(%v): %v", tt.state, err)
		}
	}

	// Refusals surface as *protocol.Error named after the request.
	for _, code := range []string{protocol.CodeTooLarge, protocol.CodeRateLimited, protocol.CodeBadRequest} {
		ch := async(func() error { return c.Track(ctx, "doc/42", map[string]int{"n": 1}) })
		r := sc.expect(t, protocol.TypeTrack)
		sc.send(t, protocol.EncodeError(r.Ref, code, "no"))
		err := await(t, ch, "track")
		var perr *protocol.Error
		if !errors.As(err, &perr) || perr.Code != code || !strings.Contains(err.Error(), "track doc/42") {
			t.Errorf("Track refused with %s: %v", code, err)
		}
	}

	// Bad input fails without a request.
	if err := c.Track(ctx, "doc/7", nil); !errors.Is(err, ErrNotSubscribed) {
		t.Errorf("Track without a subscription: %v", err)
	}
	if err := c.Untrack(ctx, "doc/7"); !errors.Is(err, ErrNotSubscribed) {
		t.Errorf("Untrack without a subscription: %v", err)
	}
	if err := c.Track(ctx, "doc/42", make(chan int)); err == nil || !strings.Contains(err.Error(), "encoding state") {
		t.Errorf("Track with unencodable state: %v", err)
	}
	if _, err := c.Members(ctx, "bad//topic"); !errors.Is(err, protocol.ErrBadTopic) {
		t.Errorf("Members of a bad topic: %v", err)
	}

	ch := async(func() error { return c.Untrack(ctx, "doc/42") })
	if r := sc.reply(t, protocol.TypeUntrack, struct{}{}); r.Topic != "doc/42" {
		t.Errorf("untrack %+v", r)
	}
	if err := await(t, ch, "untrack"); err != nil {
		t.Errorf("Untrack: %v", err)
	}
	ch = async(func() error { return c.Untrack(ctx, "doc/42") })
	r := sc.expect(t, protocol.TypeUntrack)
	sc.send(t, protocol.EncodeError(r.Ref, protocol.CodeUnavailable, "presence store unreachable"))
	var perr *protocol.Error
	if err := await(t, ch, "untrack"); !errors.As(err, &perr) || perr.Code != protocol.CodeUnavailable {
		t.Errorf("Untrack refused: %v", err)
	}

	// Members needs no subscription.
	want := []protocol.Member{member("s_a", `{"name":"Alice"}`), member("s_b", "")}
	type result struct {
		ms  []protocol.Member
		err error
	}
	mch := make(chan result, 1)
	go func() {
		ms, err := c.Members(ctx, "doc/9")
		mch <- result{ms, err}
	}()
	if r := sc.reply(t, protocol.TypeMembers, protocol.MembersResult{Members: want}); r.Topic != "doc/9" {
		t.Errorf("members %+v", r)
	}
	if res := await(t, mch, "members"); res.err != nil || !reflect.DeepEqual(res.ms, want) {
		t.Errorf("Members: %+v, %v", res.ms, res.err)
	}
	go func() {
		ms, err := c.Members(ctx, "doc/9")
		mch <- result{ms, err}
	}()
	r = sc.expect(t, protocol.TypeMembers)
	sc.send(t, protocol.EncodeError(r.Ref, protocol.CodeForbidden, "not allowed to see who is on doc/9"))
	if res := await(t, mch, "members"); !errors.As(res.err, &perr) || perr.Code != protocol.CodeForbidden || !strings.Contains(res.err.Error(), "members doc/9") {
		t.Errorf("Members refused: %v", res.err)
	}
	pingThrough(t, c, sc) // no stray request went out
}

// track calls Track and answers it ok as the server.
func track(t *testing.T, c *Client, sc *serverConn, topic string, state any) {
	t.Helper()
	ch := async(func() error { return c.Track(context.Background(), topic, state) })
	sc.reply(t, protocol.TypeTrack, struct{}{})
	if err := await(t, ch, "track"); err != nil {
		t.Fatalf("Track: %v", err)
	}
}

// resubscribe accepts the reconnect of a client subscribed to topics,
// answers each resubscribe (with members for presence ones) and returns
// the requests by topic.
func resubscribe(t *testing.T, s *scriptServer, session string, members []protocol.Member, topics ...string) (*serverConn, map[string]protocol.Request) {
	t.Helper()
	sc := s.accept(t)
	sc.handshake(t, session)
	got := map[string]protocol.Request{}
	for range topics {
		r := sc.expect(t, protocol.TypeSubscribe)
		got[r.Topic] = r
		res := protocol.SubscribeResult{Epoch: "e1", Recovered: true}
		if r.Presence {
			res.Members = members
		}
		sc.send(t, protocol.EncodeReply(r.Ref, res))
	}
	for _, topic := range topics {
		if _, ok := got[topic]; !ok {
			t.Fatalf("%s not resubscribed: %v", topic, got)
		}
	}
	return sc, got
}

func TestRetrackAfterReconnect(t *testing.T) {
	t.Parallel()
	s := newScriptServer(t)
	c, sc := dial(t, s, fastOptions())
	got := newCalls(t)
	sub := subscribePresence(t, c, sc, "doc/42", nil, protocol.SubscribeResult{Epoch: "e1"},
		WithPresence(got.presence), WithOnRetrack(got.retrack))
	subscribeOn(t, c, sc, "chat/a", nil, protocol.SubscribeResult{Epoch: "e1"})
	track(t, c, sc, "doc/42", map[string]string{"name": "Sarah"})

	// The new connection resubscribes with presence, then tracks again.
	sc.close(t, protocol.CloseGoingAway, "")
	members := []protocol.Member{member("s_x", `{"name":"Xavier"}`)}
	sc2, reqs := resubscribe(t, s, "s_2", members, "doc/42", "chat/a")
	if !reqs["doc/42"].Presence || reqs["chat/a"].Presence {
		t.Errorf("resubscribed with presence %v and %v, want only doc/42", reqs["doc/42"].Presence, reqs["chat/a"].Presence)
	}
	if r := sc2.reply(t, protocol.TypeTrack, struct{}{}); r.Topic != "doc/42" || string(r.State) != `{"name":"Sarah"}` {
		t.Errorf("re-track %+v (state %s)", r, r.State)
	}
	if calls := got.wait(1); calls[0] != "retrack <nil>" {
		t.Errorf("calls %q", calls)
	}
	if ms := sub.Members(); !reflect.DeepEqual(ms, members) {
		t.Errorf("Members after the resubscribe: %+v", ms)
	}

	// The state of the last Track is the one tracked again; a refusal is
	// reported.
	track(t, c, sc2, "doc/42", map[string]bool{"typing": true})
	_ = sc2.ws.CloseNow()
	sc3, _ := resubscribe(t, s, "s_3", nil, "doc/42", "chat/a")
	r := sc3.expect(t, protocol.TypeTrack)
	if string(r.State) != `{"typing":true}` {
		t.Errorf("re-track state %s", r.State)
	}
	sc3.send(t, protocol.EncodeError(r.Ref, protocol.CodeRateLimited, "slow down"))
	if calls := got.wait(2); !strings.HasPrefix(calls[1], "retrack client: track doc/42: rate_limited") {
		t.Errorf("calls %q", calls)
	}
	// rate_limited is transient: tried again after the backoff.
	if r := sc3.reply(t, protocol.TypeTrack, struct{}{}); string(r.State) != `{"typing":true}` {
		t.Errorf("retried re-track state %s", r.State)
	}
	if calls := got.wait(3); calls[2] != "retrack <nil>" {
		t.Errorf("calls %q", calls)
	}

	// After Untrack, a reconnect does not track.
	ch := async(func() error { return c.Untrack(context.Background(), "doc/42") })
	sc3.reply(t, protocol.TypeUntrack, struct{}{})
	if err := await(t, ch, "untrack"); err != nil {
		t.Fatal(err)
	}
	_ = sc3.ws.CloseNow()
	sc4, _ := resubscribe(t, s, "s_4", nil, "doc/42", "chat/a")
	pingThrough(t, c, sc4)
	if calls := got.wait(3); len(calls) != 3 {
		t.Errorf("calls %q", calls)
	}
}

func TestRetrackUsesTheLastStateNotRefused(t *testing.T) {
	t.Parallel()
	s := newScriptServer(t)
	c, sc := dial(t, s, fastOptions())
	ctx := context.Background()
	subscribePresence(t, c, sc, "doc/42", nil, protocol.SubscribeResult{Epoch: "e1"}, WithPresence(nil))
	track(t, c, sc, "doc/42", map[string]int{"v": 1})

	// A refused Track leaves the state before it.
	ch := async(func() error { return c.Track(ctx, "doc/42", map[string]int{"v": 2}) })
	r := sc.expect(t, protocol.TypeTrack)
	sc.send(t, protocol.EncodeError(r.Ref, protocol.CodeTooLarge, "too large"))
	if err := await(t, ch, "track"); err == nil {
		t.Fatal("refused Track returned nil")
	}
	_ = sc.ws.CloseNow()
	sc2, _ := resubscribe(t, s, "s_2", nil, "doc/42")
	if r := sc2.reply(t, protocol.TypeTrack, struct{}{}); string(r.State) != `{"v":1}` {
		t.Errorf("re-track state %s, want the last one accepted", r.State)
	}

	// A Track cut off by a drop is tracked on the next connection.
	ch = async(func() error { return c.Track(ctx, "doc/42", map[string]int{"v": 3}) })
	sc2.expect(t, protocol.TypeTrack)
	_ = sc2.ws.CloseNow()
	var ce *CloseError
	if err := await(t, ch, "track"); !errors.As(err, &ce) {
		t.Errorf("Track cut off: %v, want a *CloseError", err)
	}
	sc3, _ := resubscribe(t, s, "s_3", nil, "doc/42")
	if r := sc3.reply(t, protocol.TypeTrack, struct{}{}); string(r.State) != `{"v":3}` {
		t.Errorf("re-track state %s, want the cut-off one", r.State)
	}
	pingThrough(t, c, sc3)
}

func TestTrackWhileReconnecting(t *testing.T) {
	t.Parallel()
	s := newScriptServer(t)
	rec := newRecorder()
	opts := fastOptions()
	opts.OnDisconnect = rec.disconnect
	c, sc := dial(t, s, opts)
	subscribePresence(t, c, sc, "doc/42", nil, protocol.SubscribeResult{Epoch: "e1"}, WithPresence(nil))
	track(t, c, sc, "doc/42", map[string]int{"v": 1})
	_ = sc.ws.CloseNow()
	rec.until(t, "disconnect", func() bool { return len(rec.disconnects) == 1 })

	// The Track waiting for the connection goes out after the resubscribe,
	// and its state is the one tracked after the next reconnect.
	ch := async(func() error { return c.Track(context.Background(), "doc/42", map[string]int{"v": 2}) })
	sc2 := s.accept(t)
	sc2.handshake(t, "s_2")
	sr := sc2.expect(t, protocol.TypeSubscribe)
	tr := sc2.expect(t, protocol.TypeTrack)
	if string(tr.State) != `{"v":2}` {
		t.Errorf("track state %s", tr.State)
	}
	sc2.send(t, protocol.EncodeReply(sr.Ref, protocol.SubscribeResult{Epoch: "e1"}), protocol.EncodeReply(tr.Ref, struct{}{}))
	if err := await(t, ch, "track"); err != nil {
		t.Fatal(err)
	}
	pingThrough(t, c, sc2)

	_ = sc2.ws.CloseNow()
	sc3, _ := resubscribe(t, s, "s_3", nil, "doc/42")
	if r := sc3.reply(t, protocol.TypeTrack, struct{}{}); string(r.State) != `{"v":2}` {
		t.Errorf("re-track state %s", r.State)
	}
}

func TestUnsubscribeForgetsTheTrackedState(t *testing.T) {
	t.Parallel()
	s := newScriptServer(t)
	c, sc := dial(t, s, fastOptions())
	ctx := context.Background()
	sub := subscribePresence(t, c, sc, "doc/42", nil, protocol.SubscribeResult{Epoch: "e1"}, WithPresence(nil))
	track(t, c, sc, "doc/42", map[string]int{"v": 1})
	ch := async(func() error { return sub.Unsubscribe(ctx) })
	sc.reply(t, protocol.TypeUnsubscribe, nil)
	if err := await(t, ch, "unsubscribe"); err != nil {
		t.Fatal(err)
	}
	if err := c.Track(ctx, "doc/42", nil); !errors.Is(err, ErrNotSubscribed) {
		t.Errorf("Track after Unsubscribe: %v", err)
	}
	subscribePresence(t, c, sc, "doc/42", nil, protocol.SubscribeResult{Epoch: "e1"}, WithPresence(nil))
	_ = sc.ws.CloseNow()
	sc2, _ := resubscribe(t, s, "s_2", nil, "doc/42")
	pingThrough(t, c, sc2) // no track before the ping
}
