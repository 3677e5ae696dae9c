package main

import (
	"bufio"
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

	"github.com/updraft/updraft/internal/testenv"
	"github.com/updraft/updraft/protocol"
)

// emitServer records the emit requests it gets and answers with status and
// body.
type emitServer struct {
	url string

	mu   sync.Mutex
	reqs []recordedRequest // guarded by mu
}

type recordedRequest struct {
	method, path, auth, contentType string
	body                            map[string]json.RawMessage
}

func newEmitServer(t *testing.T, status int, answer string) *emitServer {
	t.Helper()
	s := &emitServer{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := recordedRequest{method: r.Method, path: r.URL.Path, auth: r.Header.Get("Authorization"), contentType: r.Header.Get("Content-Type")}
		b, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(b, &rec.body); err != nil {
			t.Errorf("server: body %q: %v", b, err)
		}
		s.mu.Lock()
		s.reqs = append(s.reqs, rec)
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		io.WriteString(w, answer)
	}))
	t.Cleanup(srv.Close)
	s.url = srv.URL
	return s
}

func (s *emitServer) requests() []recordedRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]recordedRequest(nil), s.reqs...)
}

func TestEmitPostsTheEvent(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		args      []string
		stdin     string
		wantEvent string
		wantData  string // "" when no data field is expected
		persist   bool
	}{
		{"data argument", []string{"chat/general", "message", `{ "text": "<b>hi</b> & bye", "n": 1.50 }`}, "", "message", `{"text":"<b>hi</b> & bye","n":1.50}`, false},
		{"data from stdin", []string{"--persist", "chat/general", "message", "-"}, "{\"text\":\n\"from stdin\"}\n", "message", `{"text":"from stdin"}`, true},
		{"no data", []string{"chat/general", "ping"}, "", "ping", "", false},
		{"scalar data", []string{"chat/general", "count", "42"}, "", "count", `42`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newEmitServer(t, http.StatusOK, `{"epoch":"e1","seq":59}`)
			var stdout, stderr bytes.Buffer
			args := append([]string{"--url", s.url + "/", "--api-key", "key-1"}, tt.args...)
			if err := emit(context.Background(), args, strings.NewReader(tt.stdin), &stdout, &stderr); err != nil {
				t.Fatalf("emit: %v (stderr %q)", err, stderr.String())
			}
			if got := stdout.String(); got != `{"epoch":"e1","seq":59}`+"\n" {
				t.Errorf("output %q", got)
			}
			reqs := s.requests()
			if len(reqs) != 1 {
				t.Fatalf("%d requests", len(reqs))
			}
			r := reqs[0]
			if r.method != http.MethodPost || r.path != "/api/v1/emit" {
				t.Errorf("%s %s", r.method, r.path)
			}
			if r.auth != "Bearer key-1" {
				t.Errorf("Authorization %q", r.auth)
			}
			if r.contentType != "application/json" {
				t.Errorf("Content-Type %q", r.contentType)
			}
			if string(r.body["topic"]) != `"chat/general"` || string(r.body["event"]) != `"`+tt.wantEvent+`"` {
				t.Errorf("body %s", bodyString(r.body))
			}
			if got := string(r.body["data"]); got != tt.wantData {
				t.Errorf("data %q, want %q", got, tt.wantData)
			}
			if _, ok := r.body["persist"]; ok != tt.persist {
				t.Errorf("persist present %v, want %v", ok, tt.persist)
			}
		})
	}
}

func bodyString(m map[string]json.RawMessage) string {
	b, _ := json.Marshal(m)
	return string(b)
}

func TestEmitServerErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		status int
		answer string
		key    bool
		want   []string
	}{
		{"forbidden", http.StatusForbidden, `{"error":{"code":"forbidden","message":"key may not publish to chat/general"}}`, true,
			[]string{"403 Forbidden", "forbidden", "key may not publish to chat/general"}},
		{"unauthorized without key", http.StatusUnauthorized, `{"error":{"code":"unauthorized","message":"missing API key"}}`, false,
			[]string{"401", "missing API key", "UPDRAFT_API_KEY"}},
		{"not JSON", http.StatusBadGateway, `<html>bad gateway</html>`, true, []string{"502", "bad gateway"}},
		{"empty", http.StatusServiceUnavailable, ``, true, []string{"503", "empty body"}},
		{"unexpected success body", http.StatusOK, `{"ok":true}`, true, []string{"unexpected answer"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newEmitServer(t, tt.status, tt.answer)
			args := []string{"--url", s.url}
			if tt.key {
				args = append(args, "--api-key", "k")
			}
			args = append(args, "chat/general", "message", `{}`)
			var stdout bytes.Buffer
			err := emit(context.Background(), args, strings.NewReader(""), &stdout, io.Discard)
			if err == nil {
				t.Fatalf("no error; printed %q", stdout.String())
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if tt.status == http.StatusForbidden {
				var perr *protocol.Error
				if !errors.As(err, &perr) || perr.Code != protocol.CodeForbidden {
					t.Errorf("error %v does not carry the server's *protocol.Error", err)
				}
			}
			if stdout.Len() != 0 {
				t.Errorf("printed %q", stdout.String())
			}
			if !tt.key {
				if auth := s.requests()[0].auth; auth != "" {
					t.Errorf("Authorization %q sent without a key", auth)
				}
			}
		})
	}
}

func TestEmitBadInput(t *testing.T) {
	t.Parallel()
	s := newEmitServer(t, http.StatusOK, `{"epoch":"e1","seq":1}`)
	tests := []struct {
		name  string
		args  []string
		stdin string
		usage bool
		want  string
	}{
		{"no arguments", nil, "", true, "want TOPIC EVENT"},
		{"one argument", []string{"chat/a"}, "", true, "want TOPIC EVENT"},
		{"too many", []string{"chat/a", "m", "{}", "extra"}, "", true, "want TOPIC EVENT"},
		{"invalid JSON", []string{"chat/a", "m", `{"text":}`}, "", false, "DATA must be JSON; quote it for the shell: '{\"text\":\"hi\"}'"},
		{"two values", []string{"chat/a", "m", `1 2`}, "", false, "DATA must be JSON"},
		// What the shell leaves of {"text":"hi"} unquoted.
		{"quotes eaten by the shell", []string{"chat/a", "m", `{text:hi}`}, "", false, "quote it for the shell"},
		{"a bare word", []string{"chat/a", "m", `hello`}, "", false, "quote it for the shell"},
		{"invalid JSON on stdin", []string{"chat/a", "m", "-"}, "{oops", false, "DATA on standard input is not valid JSON"},
		{"empty stdin", []string{"chat/a", "m", "-"}, "  \n", false, "DATA on standard input is empty"},
		{"table topic", []string{"orders", "m", "{}"}, "", false, "tracker"},
		{"reserved event", []string{"chat/a", "INSERT", "{}"}, "", false, "reserved"},
		{"bad topic", []string{"chat//a", "m"}, "", false, "invalid topic"},
		{"bad url", []string{"--url", "ftp://example.com", "chat/a", "m"}, "", false, "http://"},
		{"url without host", []string{"--url", "http://", "chat/a", "m"}, "", false, "--url"},
		{"WebSocket url", []string{"--url", "ws://127.0.0.1:8080/api/realtime", "chat/a", "m"}, "", false,
			`"ws://127.0.0.1:8080/api/realtime" is a WebSocket URL; give the gateway's base URL, http://127.0.0.1:8080, and updraft adds /api/v1/emit`},
		{"endpoint url", []string{"--url", "http://127.0.0.1:8080/api/v1/emit", "chat/a", "m"}, "", false,
			`"http://127.0.0.1:8080/api/v1/emit" names an endpoint; give the gateway's base URL, http://127.0.0.1:8080, and updraft adds /api/v1/emit`},
		{"endpoint url behind a prefix", []string{"--url", "https://h.example/rt/api/", "chat/a", "m"}, "", false,
			"give the gateway's base URL, https://h.example/rt, and"},
		{"unknown flag", []string{"--nope", "chat/a", "m"}, "", true, "flag provided but not defined"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			args := append([]string{"--url", s.url}, tt.args...)
			var stdout, stderr bytes.Buffer
			err := emit(context.Background(), args, strings.NewReader(tt.stdin), &stdout, &stderr)
			checkRefused(t, err, stderr.String(), tt.usage, tt.want)
		})
	}
	if n := len(s.requests()); n != 0 {
		t.Errorf("bad input reached the server %d times", n)
	}
}

// TestEmitDefaultsFromEnv is not parallel: it sets the environment.
func TestEmitDefaultsFromEnv(t *testing.T) {
	s := newEmitServer(t, http.StatusOK, `{"epoch":"e1","seq":2}`)
	t.Setenv("UPDRAFT_URL", s.url)
	t.Setenv("UPDRAFT_API_KEY", "env-key")
	var stdout bytes.Buffer
	if err := emit(context.Background(), []string{"chat/a", "m", `{}`}, strings.NewReader(""), &stdout, io.Discard); err != nil {
		t.Fatal(err)
	}
	if r := s.requests(); len(r) != 1 || r[0].auth != "Bearer env-key" {
		t.Errorf("requests %+v", r)
	}
	// The flag beats the environment.
	if err := emit(context.Background(), []string{"--api-key", "flag-key", "chat/a", "m"}, strings.NewReader(""), &stdout, io.Discard); err != nil {
		t.Fatal(err)
	}
	if r := s.requests(); len(r) != 2 || r[1].auth != "Bearer flag-key" {
		t.Errorf("requests %+v", r)
	}
}

// streamServer is an httptest server for `emit --stream`: it reads the
// body line by line as it arrives, recording each line, and answers with
// status and answer once the body ends.
type streamServer struct {
	url string

	mu    sync.Mutex
	req   *http.Request // guarded by mu; the last request, body consumed
	lines []string      // guarded by mu
}

func newStreamServer(t *testing.T, status int, answer string) *streamServer {
	t.Helper()
	s := &streamServer{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.req = r
		s.mu.Unlock()
		sc := bufio.NewScanner(r.Body)
		for sc.Scan() {
			s.mu.Lock()
			s.lines = append(s.lines, sc.Text())
			s.mu.Unlock()
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		io.WriteString(w, answer)
	}))
	t.Cleanup(srv.Close)
	s.url = srv.URL
	return s
}

func (s *streamServer) received() (*http.Request, []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.req, append([]string(nil), s.lines...)
}

type emitResult struct {
	err    error
	stdout string
	stderr string
}

// emitAsync runs emit in the background with stdin.
func emitAsync(args []string, stdin io.Reader) <-chan emitResult {
	out := make(chan emitResult, 1)
	go func() {
		var stdout, stderr bytes.Buffer
		err := emit(context.Background(), args, stdin, &stdout, &stderr)
		out <- emitResult{err, stdout.String(), stderr.String()}
	}()
	return out
}

func waitEmit(t *testing.T, ch <-chan emitResult) emitResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("emit did not return within 10s")
		return emitResult{}
	}
}

// TestEmitStreamSendsStdinAsItIsRead: each line reaches the server before
// the next one is written; the request is a chunked stream with the topic,
// event and rollup in its query; the server's answer is printed.
func TestEmitStreamSendsStdinAsItIsRead(t *testing.T) {
	t.Parallel()
	const final = `{"first_seq":1,"last_seq":3,"count":3,"epoch":"e1"}`
	s := newStreamServer(t, http.StatusOK, final)
	stdin, w := io.Pipe()
	defer w.Close()
	// Flags after TOPIC EVENT work too.
	res := emitAsync([]string{"--url", s.url, "--api-key", "key-1", "--stream", "chat/ai", "answer", "--rollup", "40ms"}, stdin)

	tokens := []string{`{"t":"Hel"}`, `{"t":"lo"}`, `{"t":"!"}`}
	for i, tok := range tokens {
		if _, err := io.WriteString(w, tok+"\n"); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, 5*time.Second, func() bool {
			_, lines := s.received()
			return len(lines) == i+1
		}, "line %d did not reach the server before standard input went on", i+1)
		select {
		case r := <-res:
			t.Fatalf("emit returned before standard input ended: %+v", r)
		default:
		}
	}
	w.Close()
	r := waitEmit(t, res)
	if r.err != nil {
		t.Fatalf("emit: %v (stderr %q)", r.err, r.stderr)
	}
	if r.stdout != final+"\n" {
		t.Errorf("output %q", r.stdout)
	}
	req, lines := s.received()
	if strings.Join(lines, "\n") != strings.Join(tokens, "\n") {
		t.Errorf("server got %q", lines)
	}
	if req.Method != http.MethodPost || req.URL.Path != "/api/v1/stream" {
		t.Errorf("%s %s", req.Method, req.URL.Path)
	}
	q := req.URL.Query()
	if q.Get("topic") != "chat/ai" || q.Get("event") != "answer" || q.Get("rollup") != "40ms" || len(q) != 3 {
		t.Errorf("query %q", req.URL.RawQuery)
	}
	if req.Header.Get("Authorization") != "Bearer key-1" || req.Header.Get("Content-Type") != "application/x-ndjson" {
		t.Errorf("headers %v", req.Header)
	}
	if req.ContentLength != -1 || len(req.TransferEncoding) != 1 || req.TransferEncoding[0] != "chunked" {
		t.Errorf("Content-Length %d, Transfer-Encoding %v: want a chunked body", req.ContentLength, req.TransferEncoding)
	}
}

// TestEmitStreamTimeoutStartsAtEndOfInput: a stream may last longer than
// --timeout; the timeout bounds only the wait for the answer.
func TestEmitStreamTimeoutStartsAtEndOfInput(t *testing.T) {
	t.Parallel()
	s := newStreamServer(t, http.StatusOK, `{"first_seq":1,"last_seq":2,"count":2,"epoch":"e1"}`)
	stdin, w := io.Pipe()
	res := emitAsync([]string{"--url", s.url, "--timeout", "100ms", "--stream", "chat/ai", "answer"}, stdin)
	io.WriteString(w, "1\n")
	time.Sleep(300 * time.Millisecond) // a slow model: pacing the input, not waiting for a condition
	io.WriteString(w, "2\n")
	w.Close()
	if r := waitEmit(t, res); r.err != nil {
		t.Fatalf("emit: %v", r.err)
	}

	// A server that never answers: emit gives up 100ms after the input ended.
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		<-r.Context().Done()
	}))
	defer hang.Close()
	r := waitEmit(t, emitAsync([]string{"--url", hang.URL, "--timeout", "100ms", "--stream", "chat/ai", "answer"}, strings.NewReader("1\n")))
	if r.err == nil || !strings.Contains(r.err.Error(), "no answer within 100ms after standard input ended") {
		t.Fatalf("emit against a silent server: %v", r.err)
	}
}

func TestEmitStreamServerError(t *testing.T) {
	t.Parallel()
	s := newStreamServer(t, http.StatusBadRequest, `{"error":{"code":"bad_request","message":"line 2: invalid JSON: invalid character 'o' in literal null (expecting 'u')"}}`)
	r := waitEmit(t, emitAsync([]string{"--url", s.url, "--api-key", "k", "--stream", "chat/ai", "answer"}, strings.NewReader("1\nnope\n")))
	var perr *protocol.Error
	if r.err == nil || !errors.As(r.err, &perr) || perr.Code != protocol.CodeBadRequest || !strings.Contains(r.err.Error(), "line 2") {
		t.Fatalf("error %v", r.err)
	}
	if r.stdout != "" {
		t.Errorf("printed %q", r.stdout)
	}
	s = newStreamServer(t, http.StatusOK, `{"epoch":"e1","seq":4}`)
	if r := waitEmit(t, emitAsync([]string{"--url", s.url, "--stream", "chat/ai", "answer"}, strings.NewReader("1\n"))); r.err == nil || !strings.Contains(r.err.Error(), "unexpected answer") {
		t.Fatalf("an emit answer to a stream: %v", r.err)
	}
}

func TestEmitStreamBadInput(t *testing.T) {
	t.Parallel()
	s := newStreamServer(t, http.StatusOK, `{"first_seq":0,"last_seq":0,"count":0,"epoch":"e1"}`)
	tests := []struct {
		name  string
		args  []string
		usage bool
		want  string
	}{
		{"DATA with --stream", []string{"--stream", "chat/a", "m", "{}"}, true, "with --stream want TOPIC EVENT"},
		{"one argument", []string{"--stream", "chat/a"}, true, "with --stream want TOPIC EVENT"},
		{"persist", []string{"--stream", "--persist", "chat/a", "m"}, true, "--persist cannot be combined"},
		{"rollup without stream", []string{"--rollup", "40ms", "chat/a", "m", "{}"}, true, "--rollup needs --stream"},
		{"rollup too long", []string{"--stream", "--rollup", "2s", "chat/a", "m"}, false, "--rollup must be between 0 and 1s"},
		{"negative rollup", []string{"--stream", "chat/a", "m", "--rollup", "-1ms"}, false, "--rollup must be between"},
		{"table topic", []string{"--stream", "orders", "m"}, false, "tracker"},
		{"event too long", []string{"--stream", "chat/a", strings.Repeat("e", 59)}, false, "at most 58 bytes"},
		{"late unknown flag", []string{"--stream", "chat/a", "m", "--nope"}, true, "flag provided but not defined"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var stdout, stderr bytes.Buffer
			err := emit(context.Background(), append([]string{"--url", s.url}, tt.args...), strings.NewReader("1\n"), &stdout, &stderr)
			checkRefused(t, err, stderr.String(), tt.usage, tt.want)
		})
	}
	if req, _ := s.received(); req != nil {
		t.Errorf("bad input reached the server")
	}
}

// TestEmitLateFlags: "--name" flags may follow TOPIC EVENT; DATA that
// starts with a single dash stays DATA.
func TestEmitLateFlags(t *testing.T) {
	t.Parallel()
	s := newEmitServer(t, http.StatusOK, `{"epoch":"e1","seq":1}`)
	var stdout bytes.Buffer
	if err := emit(context.Background(), []string{"--url", s.url, "chat/a", "count", "-5", "--api-key", "late"}, strings.NewReader(""), &stdout, io.Discard); err != nil {
		t.Fatal(err)
	}
	r := s.requests()
	if len(r) != 1 || r[0].auth != "Bearer late" || string(r[0].body["data"]) != "-5" {
		t.Fatalf("requests %+v", r)
	}
}

// checkRefused checks that a command refused bad input: an error, a usage
// error exactly when usage, and want in the error or on stderr.
func checkRefused(t *testing.T, err error, stderr string, usage bool, want string) {
	t.Helper()
	if err == nil {
		t.Fatal("no error")
	}
	if errors.Is(err, errUsage) != usage {
		t.Errorf("usage error %v, want %v: %v", errors.Is(err, errUsage), usage, err)
	}
	if !strings.Contains(err.Error()+stderr, want) {
		t.Errorf("error %q / stderr %q do not mention %q", err, stderr, want)
	}
}
