package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/updraft/updraft/internal/testenv"
	"github.com/updraft/updraft/protocol"
)

// membersServer answers GET /api/v1/presence with status and answer and
// records the requests.
type membersServer struct {
	url string

	mu   sync.Mutex
	reqs []*http.Request // guarded by mu
}

func newMembersServer(t *testing.T, status int, answer string) *membersServer {
	t.Helper()
	s := &membersServer{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.reqs = append(s.reqs, r.Clone(context.Background()))
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		io.WriteString(w, answer)
	}))
	t.Cleanup(srv.Close)
	s.url = srv.URL
	return s
}

func (s *membersServer) requests() []*http.Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*http.Request(nil), s.reqs...)
}

const twoMembers = `{"members":[` +
	`{"key":"user-7","conn":"s_abc","state":{ "name": "<Sarah>", "typing": true },"joined":1764170000000},` +
	`{"key":"user-8","conn":"s_def","joined":1764170061000}]}`

func TestPresenceListsMembers(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		args       []string
		wantStdout string
		wantStderr string
	}{
		{"table", []string{"doc/42"},
			"KEY     CONN   JOINED                STATE\n" +
				`user-7  s_abc  2025-11-26T15:13:20Z  {"name":"<Sarah>","typing":true}` + "\n" +
				"user-8  s_def  2025-11-26T15:14:21Z  -\n",
			"2 members\n"},
		{"json", []string{"doc/42", "--json"},
			`{"key":"user-7","conn":"s_abc","state":{"name":"<Sarah>","typing":true},"joined":1764170000000}` + "\n" +
				`{"key":"user-8","conn":"s_def","joined":1764170061000}` + "\n",
			""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newMembersServer(t, http.StatusOK, twoMembers)
			var stdout, stderr bytes.Buffer
			args := append([]string{"--url", s.url + "/base/", "--api-key", "k1"}, tt.args...)
			if err := runPresence(context.Background(), args, &stdout, &stderr); err != nil {
				t.Fatal(err)
			}
			if stdout.String() != tt.wantStdout {
				t.Errorf("stdout\n%s\nwant\n%s", stdout.String(), tt.wantStdout)
			}
			if stderr.String() != tt.wantStderr {
				t.Errorf("stderr %q, want %q", stderr.String(), tt.wantStderr)
			}
			reqs := s.requests()
			if len(reqs) != 1 {
				t.Fatalf("%d requests", len(reqs))
			}
			r := reqs[0]
			if r.Method != http.MethodGet || r.URL.Path != "/base/api/v1/presence" || r.URL.Query().Get("topic") != "doc/42" || r.Header.Get("Authorization") != "Bearer k1" {
				t.Errorf("request %s %s, Authorization %q", r.Method, r.URL, r.Header.Get("Authorization"))
			}
		})
	}
}

func TestPresenceNoMembers(t *testing.T) {
	t.Parallel()
	for _, answer := range []string{`{"members":[]}`, `{"members":null}`} {
		s := newMembersServer(t, http.StatusOK, answer)
		var stdout, stderr bytes.Buffer
		if err := runPresence(context.Background(), []string{"--url", s.url, "doc/42"}, &stdout, &stderr); err != nil {
			t.Fatalf("%s: %v", answer, err)
		}
		if stdout.Len() != 0 || stderr.String() != "0 members\n" {
			t.Errorf("%s: stdout %q, stderr %q", answer, stdout.String(), stderr.String())
		}
	}
}

func TestPresenceServerErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		status int
		answer string
		key    bool
		want   []string
		code   string
	}{
		{"forbidden", http.StatusForbidden, `{"error":{"code":"forbidden","message":"key may not read presence of doc/42"}}`, true,
			[]string{"403 Forbidden", "key may not read presence of doc/42"}, protocol.CodeForbidden},
		{"unavailable", http.StatusServiceUnavailable, `{"error":{"code":"unavailable","message":"presence is not configured on this server"}}`, true,
			[]string{"503", "presence is not configured"}, protocol.CodeUnavailable},
		{"unauthorized without key", http.StatusUnauthorized, `{"error":{"code":"unauthorized","message":"missing API key"}}`, false,
			[]string{"401", "missing API key", "UPDRAFT_API_KEY"}, protocol.CodeUnauthorized},
		{"not JSON", http.StatusBadGateway, `<html>bad gateway</html>`, true, []string{"502", "bad gateway"}, ""},
		{"unexpected success body", http.StatusOK, `{"ok":true}`, true, []string{"unexpected answer"}, ""},
		{"members not a list", http.StatusOK, `{"members":{}}`, true, []string{"unexpected answer"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newMembersServer(t, tt.status, tt.answer)
			args := []string{"--url", s.url}
			if tt.key {
				args = append(args, "--api-key", "k")
			}
			var stdout bytes.Buffer
			err := runPresence(context.Background(), append(args, "doc/42"), &stdout, io.Discard)
			if err == nil {
				t.Fatalf("no error; printed %q", stdout.String())
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			var perr *protocol.Error
			if tt.code != "" && (!errors.As(err, &perr) || perr.Code != tt.code) {
				t.Errorf("error %v does not carry the server's %s *protocol.Error", err, tt.code)
			}
			if stdout.Len() != 0 {
				t.Errorf("printed %q", stdout.String())
			}
		})
	}
}

func TestPresenceBadInput(t *testing.T) {
	t.Parallel()
	s := newMembersServer(t, http.StatusOK, `{"members":[]}`)
	tests := []struct {
		name  string
		args  []string
		usage bool
		want  string
	}{
		{"no topic", nil, true, "want one TOPIC"},
		{"two topics", []string{"doc/1", "doc/2"}, true, "want one TOPIC"},
		{"bad topic", []string{"doc//1"}, false, "invalid topic"},
		{"bad url", []string{"--url", "ftp://example.com", "doc/1"}, false, "http://"},
		{"bad url with --watch", []string{"--watch", "--url", "ftp://example.com", "doc/1"}, false, "ws://"},
		{"negative timeout", []string{"--timeout", "-1s", "doc/1"}, true, "--timeout"},
		{"unknown flag", []string{"--nope", "doc/1"}, true, "flag provided but not defined"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			args := append([]string{"--url", s.url}, tt.args...)
			var stdout, stderr bytes.Buffer
			err := runPresence(context.Background(), args, &stdout, &stderr)
			checkRefused(t, err, stderr.String(), tt.usage, tt.want)
		})
	}
	if n := len(s.requests()); n != 0 {
		t.Errorf("bad input reached the server %d times", n)
	}
}

// TestPresenceDefaultsFromEnv is not parallel: it sets the environment.
func TestPresenceDefaultsFromEnv(t *testing.T) {
	s := newMembersServer(t, http.StatusOK, `{"members":[]}`)
	t.Setenv("UPDRAFT_URL", s.url)
	t.Setenv("UPDRAFT_API_KEY", "env-key")
	if err := runPresence(context.Background(), []string{"doc/42"}, io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	if r := s.requests(); len(r) != 1 || r[0].Header.Get("Authorization") != "Bearer env-key" {
		t.Errorf("requests %+v", r)
	}
}

func TestPresenceWatch(t *testing.T) {
	t.Parallel()
	s := newTailServer(t)
	base := "http" + strings.TrimSuffix(strings.TrimPrefix(s.url, "ws"), "/api/realtime")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr testenv.SyncBuffer
	done := make(chan error, 1)
	go func() {
		done <- runPresence(ctx, []string{"--watch", "--url", base, "--token", "tok-1", "doc/42"}, &stdout, &stderr)
	}()

	sarah := protocol.Member{Key: "user-7", Conn: "s_abc", State: json.RawMessage(`{"name":"Sarah"}`), Joined: 1764170000000}
	bob := protocol.Member{Key: "user-8", Conn: "s_def", Joined: 1764170001000}
	presenceLine := func(event string, m protocol.Member) []byte {
		b, _ := json.Marshal(protocol.PresenceEvent{Type: protocol.TypePresence, Topic: "doc/42", Event: event, Member: m})
		return b
	}
	subscribe := func(session string, members []protocol.Member, then ...[]byte) {
		t.Helper()
		tc := s.accept(t)
		r := tc.expect(t, protocol.TypeConnect)
		if r.Token != "tok-1" {
			t.Errorf("token %q", r.Token)
		}
		tc.send(t, protocol.EncodeReply(r.Ref, protocol.ConnectResult{Session: session, Node: "node-1", Heartbeat: 25, MaxMessage: 65536}))
		r = tc.expect(t, protocol.TypeSubscribe)
		if r.Topic != "doc/42" || !r.Presence {
			t.Errorf("subscribe %+v, want doc/42 with presence", r)
		}
		// Events in the reply's frame may reach the handler before
		// Subscribe returns: they still print after the members.
		tc.send(t, append([][]byte{protocol.EncodeReply(r.Ref, protocol.SubscribeResult{Epoch: "e1", Members: members})}, then...)...)
		if session == "s_1" {
			tc.send(t, presenceLine(protocol.PresenceLeave, bob))
			// The server goes away; the watch reconnects.
			if err := tc.ws.Close(websocket.StatusGoingAway, ""); err != nil {
				t.Logf("close: %v", err)
			}
		}
	}
	subscribe("s_1", []protocol.Member{sarah}, presenceLine(protocol.PresenceJoin, bob))
	subscribe("s_2", nil)

	want := []string{
		`{"type":"members","topic":"doc/42","members":[{"key":"user-7","conn":"s_abc","state":{"name":"Sarah"},"joined":1764170000000}]}`,
		`{"type":"presence","topic":"doc/42","event":"join","member":{"key":"user-8","conn":"s_def","joined":1764170001000}}`,
		`{"type":"presence","topic":"doc/42","event":"leave","member":{"key":"user-8","conn":"s_def","joined":1764170001000}}`,
		`{"type":"members","topic":"doc/42","members":[]}`,
	}
	testenv.Eventually(t, 5*time.Second, func() bool { return strings.Count(stdout.String(), "\n") >= len(want) }, "%d lines on stdout; got %q", len(want), stdout.String())
	if got := strings.Split(strings.TrimSuffix(stdout.String(), "\n"), "\n"); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("stdout\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("presence --watch after cancel: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("presence --watch did not return after cancel")
	}
	for _, want := range []string{"updraft presence: connected", "subscribed to doc/42 (session s_1 on node node-1)", "reconnecting"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr %q does not mention %q", stderr.String(), want)
		}
	}
}

// tracker is one `updraft presence --track` running against a gateway.
type presenceTracker struct {
	stdout, stderr testenv.SyncBuffer
	cancel         context.CancelFunc
	done           chan error
	stopped        bool // the test's goroutine only
}

func startPresenceTrack(t *testing.T, args ...string) *presenceTracker {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p := &presenceTracker{cancel: cancel, done: make(chan error, 1)}
	go func() { p.done <- runPresence(ctx, args, &p.stdout, &p.stderr) }()
	t.Cleanup(func() { p.stop(t) })
	return p
}

// stop interrupts it, as Ctrl-C does, and checks that it ended cleanly.
func (p *presenceTracker) stop(t *testing.T) {
	t.Helper()
	if p.stopped {
		return
	}
	p.stopped = true
	p.cancel()
	select {
	case err := <-p.done:
		if err != nil {
			t.Errorf("presence --track after interrupt: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("presence --track did not return after interrupt")
	}
}

// lastTable returns the last members table printed.
func (p *presenceTracker) lastTable() string {
	tables := strings.Split(p.stdout.String(), "\n\n")
	return tables[len(tables)-1]
}

// The README's presence tour: two terminals each join doc/42 with a name
// and each shows a table with both; when one leaves, the other's table
// shows it alone.
func TestPresenceTrackTwoTerminals(t *testing.T) {
	t.Parallel()
	n := testenv.StartNode(t, map[string]string{"UPDRAFT_ALLOW_ANONYMOUS": "true", "UPDRAFT_API_KEY": "dev-key"})
	ann := startPresenceTrack(t, "--url", n.URL(), "--track", `{ "name": "Ann" }`, "doc/42")
	testenv.Eventually(t, 5*time.Second, func() bool { return strings.Contains(ann.lastTable(), `{"name":"Ann"}`) },
		"Ann's table shows Ann; stdout %q, stderr %q", ann.stdout.String(), ann.stderr.String())
	bob := startPresenceTrack(t, "--url", n.URL(), "--track", `{"name":"Bob"}`, "doc/42")

	both := func(table string) bool {
		lines := strings.Split(strings.TrimSpace(table), "\n")
		return len(lines) == 3 && strings.HasPrefix(lines[0], "KEY") && strings.Contains(lines[0], "STATE") &&
			strings.Contains(table, `{"name":"Ann"}`) && strings.Contains(table, `{"name":"Bob"}`)
	}
	for _, p := range []*presenceTracker{ann, bob} {
		testenv.Eventually(t, 5*time.Second, func() bool { return both(p.lastTable()) },
			"a table with Ann and Bob; stdout %q, stderr %q", p.stdout.String(), p.stderr.String())
	}
	if !strings.Contains(bob.stderr.String(), `tracking doc/42 as {"name":"Bob"}`) || !strings.Contains(bob.stderr.String(), "2 members on doc/42") {
		t.Errorf("Bob's stderr %q", bob.stderr.String())
	}

	// Bob leaves with Ctrl-C: his connection closes and Ann sees him go.
	bob.stop(t)
	testenv.Eventually(t, 5*time.Second, func() bool {
		table := ann.lastTable()
		return strings.Contains(table, `{"name":"Ann"}`) && !strings.Contains(table, "Bob")
	}, "Ann's last table without Bob; stdout %q", ann.stdout.String())

	// What the HTTP API lists agrees.
	members, err := getMembers(context.Background(), n.URL()+"/api/v1/presence?topic=doc%2F42", "dev-key")
	if err != nil || len(members) != 1 || string(members[0].State) != `{"name":"Ann"}` {
		t.Errorf("GET /api/v1/presence: %+v, %v", members, err)
	}
}

// --track --watch joins and prints JSON lines rather than tables.
func TestPresenceTrackWatch(t *testing.T) {
	t.Parallel()
	n := testenv.StartNode(t, map[string]string{"UPDRAFT_ALLOW_ANONYMOUS": "true"})
	p := startPresenceTrack(t, "--url", n.URL(), "--watch", "--track", `{"name":"Ann"}`, "doc/7")
	testenv.Eventually(t, 5*time.Second, func() bool {
		return strings.Contains(p.stdout.String(), `"event":"join"`) && strings.Contains(p.stdout.String(), `"state":{"name":"Ann"}`)
	}, "Ann's own join as a JSON line; stdout %q, stderr %q", p.stdout.String(), p.stderr.String())
	if !strings.HasPrefix(p.stdout.String(), `{"type":"members","topic":"doc/7","members":[]}`) {
		t.Errorf("stdout %q", p.stdout.String())
	}
}

func TestPresenceTrackBadState(t *testing.T) {
	t.Parallel()
	s := newMembersServer(t, http.StatusOK, `{"members":[]}`)
	tests := []struct {
		name, state string
	}{
		{"quotes eaten by the shell", `{name:Ann}`},
		{"a bare word", `Ann`},
		{"empty", ``},
		{"not an object", `["Ann"]`},
		{"null", `null`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var stderr bytes.Buffer
			err := runPresence(context.Background(), []string{"--url", s.url, "--track", tt.state, "doc/1"}, io.Discard, &stderr)
			checkRefused(t, err, stderr.String(), false, `--track STATE must be a JSON object; quote it for the shell: --track '{"name":"Ann"}'`)
		})
	}
	var stderr bytes.Buffer
	err := runPresence(context.Background(), []string{"--url", s.url, "--json", "--track", `{}`, "doc/1"}, io.Discard, &stderr)
	checkRefused(t, err, stderr.String(), true, "--watch prints JSON lines")
	if n := len(s.requests()); n != 0 {
		t.Errorf("bad input reached the server %d times", n)
	}
}
