package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/updraft/updraft/internal/testenv"
	"github.com/updraft/updraft/protocol"
)

const tailWait = 5 * time.Second

// tailServer accepts WebSocket connections and hands the test each one's
// requests; the test answers through the connection.
type tailServer struct {
	url   string
	conns chan *tailConn
}

type tailConn struct {
	ws     *websocket.Conn
	origin string
	reqs   chan protocol.Request
}

func newTailServer(t *testing.T) *tailServer {
	t.Helper()
	s := &tailServer{conns: make(chan *tailConn, 4)}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{protocol.Subprotocol}, InsecureSkipVerify: true})
		if err != nil {
			return
		}
		tc := &tailConn{ws: ws, origin: r.Header.Get("Origin"), reqs: make(chan protocol.Request, 64)}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(tc.reqs)
			for {
				_, frame, err := ws.Read(ctx)
				if err != nil {
					return
				}
				protocol.Lines(frame, func(line []byte) {
					if req, err := protocol.DecodeRequest(line); err == nil {
						tc.reqs <- req
					}
				})
			}
		}()
		s.conns <- tc
	}))
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		srv.Close()
	})
	s.url = "ws" + strings.TrimPrefix(srv.URL, "http") + "/api/realtime"
	return s
}

func (s *tailServer) accept(t *testing.T) *tailConn {
	t.Helper()
	select {
	case tc := <-s.conns:
		return tc
	case <-time.After(tailWait):
		t.Fatal("no connection")
		return nil
	}
}

func (tc *tailConn) expect(t *testing.T, typ string) protocol.Request {
	t.Helper()
	select {
	case r, ok := <-tc.reqs:
		if !ok || r.Type != typ {
			t.Fatalf("got %+v (open %v), want a %s request", r, ok, typ)
		}
		return r
	case <-time.After(tailWait):
		t.Fatalf("no %s request", typ)
		return protocol.Request{}
	}
}

func (tc *tailConn) send(t *testing.T, msgs ...[]byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), tailWait)
	defer cancel()
	if err := tc.ws.Write(ctx, websocket.MessageText, bytes.Join(msgs, []byte("\n"))); err != nil {
		t.Fatal(err)
	}
}

func TestTailPrintsEventsAsJSONLines(t *testing.T) {
	t.Parallel()
	s := newTailServer(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr testenv.SyncBuffer
	done := make(chan error, 1)
	go func() {
		done <- runTail(ctx, []string{"--url", s.url, "--token", "tok-1", "--origin", "https://app.example.com",
			"--filter", "status=eq.paid", "orders", "chat/general"}, &stdout, &stderr)
	}()

	tc := s.accept(t)
	if tc.origin != "https://app.example.com" {
		t.Errorf("Origin %q", tc.origin)
	}
	r := tc.expect(t, protocol.TypeConnect)
	if r.Token != "tok-1" {
		t.Errorf("token %q", r.Token)
	}
	tc.send(t, protocol.EncodeReply(r.Ref, protocol.ConnectResult{Session: "s_1", Node: "node-1", Heartbeat: 25, MaxMessage: 65536}))
	for _, want := range []struct{ topic, filter string }{{"orders", "status=eq.paid"}, {"chat/general", "status=eq.paid"}} { // the server judges the filter
		r := tc.expect(t, protocol.TypeSubscribe)
		if r.Topic != want.topic || r.Filter != want.filter {
			t.Errorf("subscribe %+v, want topic %s filter %q", r, want.topic, want.filter)
		}
		tc.send(t, protocol.EncodeReply(r.Ref, protocol.SubscribeResult{Epoch: "e1", Seq: 0}))
	}
	evs := []protocol.Event{
		{Topic: "orders", Event: "UPDATE", Epoch: "e1", Seq: 1, TS: 1764170000456, Data: json.RawMessage(`{"id":7,"status":"paid","total":12.3400000000000000001}`), Old: json.RawMessage(`{"id":7,"status":"new"}`)},
		{Topic: "chat/general", Event: "message", Epoch: "e1", Seq: 1, TS: 1764170000123, From: "user-7", Data: json.RawMessage(`{"text":"<b>hi</b> & bye"}`)},
	}
	tc.send(t, protocol.AppendEvent(nil, &evs[0]), protocol.AppendEvent(nil, &evs[1]))

	testenv.Eventually(t, tailWait, func() bool { return strings.Count(stdout.String(), "\n") == 2 }, "two lines on stdout; got %q", stdout.String())
	lines := strings.Split(strings.TrimSuffix(stdout.String(), "\n"), "\n")
	for i, ev := range evs {
		want := string(protocol.AppendEvent(nil, &ev))
		if lines[i] != want {
			t.Errorf("line %d:\n got %s\nwant %s", i, lines[i], want)
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("runTail after cancel: %v", err)
		}
	case <-time.After(tailWait):
		t.Fatal("runTail did not return after cancel")
	}
	for _, want := range []string{"connected", "subscribed to orders, chat/general (session s_1 on node node-1)", "disconnected"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr %q does not mention %q", stderr.String(), want)
		}
	}
}

func TestTailStopsWhenForbidden(t *testing.T) {
	t.Parallel()
	s := newTailServer(t)
	done := make(chan error, 1)
	go func() {
		done <- runTail(context.Background(), []string{"--url", s.url, "doc/42"}, &testenv.SyncBuffer{}, &testenv.SyncBuffer{})
	}()
	tc := s.accept(t)
	r := tc.expect(t, protocol.TypeConnect)
	if r.Token != "" {
		t.Errorf("anonymous tail sent token %q", r.Token)
	}
	tc.send(t, protocol.EncodeReply(r.Ref, protocol.ConnectResult{Session: "s_1", Node: "n"}))
	r = tc.expect(t, protocol.TypeSubscribe)
	tc.send(t, protocol.EncodeError(r.Ref, protocol.CodeForbidden, "not allowed to subscribe to doc/42"))
	select {
	case err := <-done:
		var perr *protocol.Error
		if !errors.As(err, &perr) || perr.Code != protocol.CodeForbidden {
			t.Errorf("runTail: %v, want the forbidden error", err)
		}
	case <-time.After(tailWait):
		t.Fatal("runTail did not return")
	}
}

func TestTailBadInput(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		args  []string
		usage bool
		want  string
	}{
		{"no topic", []string{"--url", "ws://127.0.0.1:1/api/realtime"}, true, "at least one TOPIC"},
		{"bad topic", []string{"chat//x"}, false, "invalid topic"},
		{"twice", []string{"chat/x", "chat/x"}, true, "given twice"},
		{"bad scheme", []string{"--url", "ftp://h/x", "chat/x"}, false, "ws://"},
		{"no server", []string{"--url", "ws://127.0.0.1:1/api/realtime", "chat/x"}, false, "dial"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var stderr testenv.SyncBuffer
			err := runTail(context.Background(), tt.args, &testenv.SyncBuffer{}, &stderr)
			checkRefused(t, err, stderr.String(), tt.usage, tt.want)
		})
	}
}

func TestRealtimeURL(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"ws://h:8080/api/realtime": "ws://h:8080/api/realtime",
		"http://h:8080":            "ws://h:8080/api/realtime",
		"https://h/":               "wss://h/api/realtime",
		"wss://h/custom":           "wss://h/custom",
	} {
		got, err := realtimeURL(in)
		if err != nil || got != want {
			t.Errorf("realtimeURL(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

// TestTailDefaultURLFromEnv is not parallel: it sets the environment.
func TestTailDefaultURLFromEnv(t *testing.T) {
	t.Setenv("UPDRAFT_URL", "")
	if got := tailDefaultURL(); got != defaultRealtimeURL {
		t.Errorf("without UPDRAFT_URL: %q", got)
	}
	t.Setenv("UPDRAFT_URL", "https://rt.example.com/base/")
	if got := tailDefaultURL(); got != "wss://rt.example.com/base/api/realtime" {
		t.Errorf("from UPDRAFT_URL: %q", got)
	}
}

// --filter reaches the server, which judges it: a filter that does not
// parse, or one on an application topic, ends tail with the server's
// reason instead of being dropped.
func TestTailFilterReachesTheServer(t *testing.T) {
	t.Parallel()
	n := testenv.StartNode(t, map[string]string{"UPDRAFT_ALLOW_ANONYMOUS": "true"})
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"bad filter", []string{"--filter", "status=like.x", "orders"}, `bad_request: protocol: invalid filter: unknown operator "like" in "status=like.x"`},
		{"application topic", []string{"--filter", "status=eq.paid", "chat/general"}, "bad_request: filters apply to table topics only"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), tailWait)
			defer cancel()
			var stderr testenv.SyncBuffer
			err := runTail(ctx, append([]string{"--url", n.WSURL()}, tt.args...), &testenv.SyncBuffer{}, &stderr)
			var perr *protocol.Error
			if !errors.As(err, &perr) || perr.Code != protocol.CodeBadRequest || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("runTail: %v, want the server's bad_request %q (stderr %q)", err, tt.want, stderr.String())
			}
		})
	}
}

// A refused handshake shows the server's reason (here the origin check's),
// not only the status.
func TestTailShowsWhyTheHandshakeWasRefused(t *testing.T) {
	t.Parallel()
	n := testenv.StartNode(t, map[string]string{"UPDRAFT_ALLOW_ANONYMOUS": "true", "UPDRAFT_ALLOWED_ORIGINS": "https://app.example.com"})
	var stdout, stderr bytes.Buffer
	code := run([]string{"tail", "--url", n.WSURL(), "--origin", "https://evil.example", "chat/general"}, &stdout, &stderr)
	if code != 1 || !strings.Contains(stderr.String(), "server answered 403 Forbidden: ") ||
		!strings.Contains(stderr.String(), `origin "https://evil.example"`) || strings.Contains(stderr.String(), "expected handshake response") {
		t.Errorf("exit %d, stderr %q: want 1 and the server's reason for the 403", code, stderr.String())
	}
}

// tail says why and when it reconnects: when its gateway dies, while it is
// gone, and until it is back.
func TestTailSaysWhyAndWhenItReconnects(t *testing.T) {
	t.Parallel()
	env := map[string]string{"UPDRAFT_ALLOW_ANONYMOUS": "true"}
	n := testenv.StartNode(t, env)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr testenv.SyncBuffer
	done := make(chan error, 1)
	go func() { done <- runTail(ctx, []string{"--url", n.WSURL(), "chat/general"}, &stdout, &stderr) }()
	testenv.Eventually(t, tailWait, func() bool { return strings.Contains(stderr.String(), "subscribed to chat/general") },
		"tail subscribed; stderr %q", stderr.String())

	n.Kill()
	reconnect := regexp.MustCompile(`updraft tail: connection lost: closed with \d+[^\n]*; reconnecting (now|in [0-9.]+m?s)\n`)
	failed := regexp.MustCompile(`updraft tail: reconnect failed: dial tcp ` + regexp.QuoteMeta(n.Addr()) + `: connect: connection refused; reconnecting (now|in [0-9.]+m?s) \(attempt 2\)\n`)
	testenv.Eventually(t, tailWait, func() bool { return reconnect.MatchString(stderr.String()) && failed.MatchString(stderr.String()) },
		"notes of the lost connection and the failed attempt; stderr %q", stderr.String())

	// The gateway comes back on its address; tail is back on it.
	env["UPDRAFT_ADDR"] = n.Addr()
	testenv.StartNode(t, env)
	testenv.Eventually(t, 15*time.Second, func() bool { return strings.Count(stderr.String(), "updraft tail: connected\n") == 2 },
		"tail connected again; stderr %q", stderr.String())
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("runTail after cancel: %v", err)
		}
	case <-time.After(tailWait):
		t.Fatal("runTail did not return after cancel")
	}
}
