package gateway

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/updraft/updraft/broker"
	"github.com/updraft/updraft/presence"
	"github.com/updraft/updraft/protocol"
)

// presenceServer runs a gateway with an in-memory broker and presence
// store behind an httptest server (anonymous access, the API key "key").
// Its heartbeat and sweep loop does not run: tests call them.
func presenceServer(t *testing.T, cfg Config) (*Server, *httptest.Server, *presence.Memory) {
	t.Helper()
	b := broker.NewMemory(broker.MemoryConfig{})
	t.Cleanup(func() { b.Close() })
	store := presence.NewMemory(presence.MemoryConfig{})
	cfg.Broker, cfg.Presence, cfg.AllowAnonymous, cfg.APIKey = b, store, true, "key"
	cfg.JWTSecret = []byte(filterSecret)
	s := testServer(t, cfg)
	b.RegisterEventHandler(s.Deliver, s.DeliverSignal)
	hs := httptest.NewServer(s)
	t.Cleanup(hs.Close)
	return s, hs, store
}

// presenceEvents flushes w and returns the presence events it got so far,
// clearing them.
func (w *wsConn) presenceEvents() []protocol.PresenceEvent {
	w.t.Helper()
	w.events()
	out := w.presences
	w.presences = nil
	return out
}

// describe renders presence events as "join:conn", for comparisons.
func describe(evs []protocol.PresenceEvent) string {
	var parts []string
	for _, e := range evs {
		parts = append(parts, e.Event+":"+e.Member.Conn)
	}
	return strings.Join(parts, " ")
}

func TestPresenceJoinUpdateLeave(t *testing.T) {
	_, hs, _ := presenceServer(t, Config{})
	const topic = "doc/42"
	watcher := dialWS(t, hs, "")
	res, _ := watcher.subscribe(map[string]any{"topic": topic, "presence": true})
	if len(res.Members) != 0 {
		t.Fatalf("members of an empty topic: %+v", res.Members)
	}
	blind := dialWS(t, hs, "") // subscribed without presence: gets none
	blind.subscribe(map[string]any{"topic": topic})

	a := dialWS(t, hs, "")
	a.subscribe(map[string]any{"topic": topic})
	if rep := a.request(map[string]any{"type": "track", "topic": topic, "state": map[string]any{"name": "Sarah"}}); !rep.OK {
		t.Fatalf("track: %+v", rep.Error)
	}
	if rep := a.request(map[string]any{"type": "track", "topic": topic, "state": map[string]any{"name": "Sarah", "typing": true}}); !rep.OK {
		t.Fatalf("track again: %+v", rep.Error)
	}
	evs := watcher.presenceEvents()
	if len(evs) != 2 || evs[0].Event != "join" || evs[1].Event != "update" || evs[0].Member.Conn != evs[1].Member.Conn ||
		string(evs[1].Member.State) != `{"name":"Sarah","typing":true}` || evs[0].Member.Joined == 0 || evs[0].Topic != topic {
		t.Fatalf("presence events %+v", evs)
	}
	conn := evs[0].Member.Conn

	// A late subscriber gets the list in its reply.
	late := dialWS(t, hs, "")
	res, _ = late.subscribe(map[string]any{"topic": topic, "presence": true})
	if len(res.Members) != 1 || res.Members[0].Conn != conn || string(res.Members[0].State) != `{"name":"Sarah","typing":true}` {
		t.Fatalf("members in the subscribe reply: %+v", res.Members)
	}
	rep := late.request(map[string]any{"type": "members", "topic": topic})
	var mr protocol.MembersResult
	if json.Unmarshal(rep.Data, &mr); !rep.OK || len(mr.Members) != 1 || mr.Members[0].Key != conn {
		t.Fatalf("members: %+v %s", rep.Error, rep.Data)
	}

	// untrack leaves; tracking again joins; unsubscribe leaves; so does
	// closing the connection.
	a.request(map[string]any{"type": "untrack", "topic": topic})
	a.request(map[string]any{"type": "track", "topic": topic})
	a.request(map[string]any{"type": "unsubscribe", "topic": topic})
	b := dialWS(t, hs, "")
	b.subscribe(map[string]any{"topic": topic})
	b.request(map[string]any{"type": "track", "topic": topic})
	evs = watcher.presenceEvents()
	bConn := evs[len(evs)-1].Member.Conn
	b.c.Close(1000, "bye")
	var all []protocol.PresenceEvent
	deadline := time.Now().Add(streamWait)
	for all = evs; len(all) < 5 && time.Now().Before(deadline); {
		all = append(all, watcher.presenceEvents()...)
	}
	if got, want := describe(all), "leave:"+conn+" join:"+conn+" leave:"+conn+" join:"+bConn+" leave:"+bConn; got != want {
		t.Errorf("presence events %q, want %q", got, want)
	}
	if got := blind.presenceEvents(); len(got) != 0 {
		t.Errorf("a subscriber without presence got %+v", got)
	}
	if got := late.presenceEvents(); len(got) != 5 {
		t.Errorf("the late presence subscriber got %d events, want 5", len(got))
	}
	// The HTTP API lists nobody now.
	if ms := apiMembers(t, hs, topic); len(ms) != 0 {
		t.Errorf("GET /api/v1/presence: %+v", ms)
	}
}

func apiMembers(t *testing.T, hs *httptest.Server, topic string) []protocol.Member {
	t.Helper()
	req, _ := http.NewRequest("GET", hs.URL+"/api/v1/presence?topic="+topic, nil)
	req.Header.Set("Authorization", "Bearer key")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var mr protocol.MembersResult
	if resp.StatusCode != 200 || json.Unmarshal(body, &mr) != nil {
		t.Fatalf("GET /api/v1/presence: %s %s", resp.Status, body)
	}
	return mr.Members
}

func TestPresenceBadInput(t *testing.T) {
	_, hs, _ := presenceServer(t, Config{PresenceRate: 2})
	c := dialWS(t, hs, filterToken(t, nil)) // may subscribe to every table
	expectError(t, c.request(map[string]any{"type": "track", "topic": "doc/1"}), protocol.CodeBadRequest, "subscribe first")
	c2 := dialWS(t, hs, "")
	c2.subscribe(map[string]any{"topic": "doc/1"})
	expectError(t, c2.request(map[string]any{"type": "track", "topic": "doc/1", "state": []int{1}}), protocol.CodeBadRequest, "JSON object")
	expectError(t, c2.request(map[string]any{"type": "track", "topic": "doc/1", "state": "typing"}), protocol.CodeBadRequest, "JSON object")
	expectError(t, c2.request(map[string]any{"type": "track", "topic": "doc/1", "state": map[string]string{"x": strings.Repeat("y", 1100)}}),
		protocol.CodeTooLarge, "at most 1024")
	// Rate 2 per second, burst 4: the fifth update in a row is refused.
	for i := 0; i < 4; i++ {
		if rep := c2.request(map[string]any{"type": "track", "topic": "doc/1", "state": map[string]int{"i": i}}); !rep.OK {
			t.Fatalf("track %d: %+v", i, rep.Error)
		}
	}
	expectError(t, c2.request(map[string]any{"type": "track", "topic": "doc/1"}), protocol.CodeRateLimited, "UPDRAFT_PRESENCE_RATE")
	// members of a topic the token may not subscribe to.
	expectError(t, c.request(map[string]any{"type": "members", "topic": "doc/1"}), protocol.CodeForbidden, "doc/1")
}

// A dead node's member expires and is swept once, whichever node sweeps,
// with exactly one leave; a member the store lost is tracked again by the
// heartbeat, with a join.
func TestPresenceSweepAndHeartbeat(t *testing.T) {
	s, hs, store := presenceServer(t, Config{PresenceTimeout: 3 * time.Second})
	const topic = "room/1"
	watcher := dialWS(t, hs, "")
	watcher.subscribe(map[string]any{"topic": topic, "presence": true})
	ctx := context.Background()
	// A member of a node that died: tracked, never heartbeated.
	if _, err := store.Track(ctx, topic, presence.Member{Key: "ghost", Conn: "s_ghost"}, "dead-node", 50*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	mine := dialWS(t, hs, "")
	mine.subscribe(map[string]any{"topic": topic})
	mine.request(map[string]any{"type": "track", "topic": topic})
	watcher.presenceEvents() // the join of mine
	// Sweep as of a second from now: past the ghost's 50 ms, within this
	// node's members' 2 s.
	later := time.Now().Add(time.Second)
	s.sweep(ctx, later)
	s.sweep(ctx, later) // a second sweep finds nothing more
	if got := describe(watcher.presenceEvents()); got != "leave:s_ghost" {
		t.Errorf("after two sweeps: %q, want one leave of the ghost", got)
	}
	// The store loses this node's member (as after a Redis restart): the
	// heartbeat tracks it again, and observers see it join.
	ms, _ := store.Members(ctx, topic)
	if len(ms) != 1 {
		t.Fatalf("members %+v", ms)
	}
	if _, ok, err := store.Untrack(ctx, topic, ms[0].Conn); err != nil || !ok {
		t.Fatal(err)
	}
	s.heartbeat(ctx)
	if got := describe(watcher.presenceEvents()); got != "join:"+ms[0].Conn {
		t.Errorf("after the heartbeat: %q, want the member to join again", got)
	}
	if back, _ := store.Members(ctx, topic); len(back) != 1 || back[0].Conn != ms[0].Conn || back[0].Joined != ms[0].Joined {
		t.Errorf("members after the heartbeat %+v, want %+v", back, ms)
	}
}
