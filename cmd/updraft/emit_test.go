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
		{"invalid JSON", []string{"chat/a", "m", `{"text":}`}, "", false, "DATA is not valid JSON"},
		{"two values", []string{"chat/a", "m", `1 2`}, "", false, "DATA is not valid JSON"},
		{"invalid JSON on stdin", []string{"chat/a", "m", "-"}, "{oops", false, "DATA on standard input is not valid JSON"},
		{"empty stdin", []string{"chat/a", "m", "-"}, "  \n", false, "DATA on standard input is empty"},
		{"table topic", []string{"orders", "m", "{}"}, "", false, "tracker"},
		{"reserved event", []string{"chat/a", "INSERT", "{}"}, "", false, "reserved"},
		{"bad topic", []string{"chat//a", "m"}, "", false, "invalid topic"},
		{"bad url", []string{"--url", "ftp://example.com", "chat/a", "m"}, "", false, "http://"},
		{"url without host", []string{"--url", "http://", "chat/a", "m"}, "", false, "--url"},
		{"unknown flag", []string{"--nope", "chat/a", "m"}, "", true, "flag provided but not defined"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			args := append([]string{"--url", s.url}, tt.args...)
			var stdout, stderr bytes.Buffer
			err := emit(context.Background(), args, strings.NewReader(tt.stdin), &stdout, &stderr)
			if err == nil {
				t.Fatalf("no error")
			}
			if errors.Is(err, errUsage) != tt.usage {
				t.Errorf("usage error %v, want %v: %v", errors.Is(err, errUsage), tt.usage, err)
			}
			if !strings.Contains(err.Error()+stderr.String(), tt.want) {
				t.Errorf("error %q / stderr %q do not mention %q", err, stderr.String(), tt.want)
			}
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
