package client

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/updraft/updraft/internal/testenv"
	"github.com/updraft/updraft/protocol"
)

func TestHandshakeReason(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("é", 150) // 300 bytes
	for _, tt := range []struct {
		name, body, want string
	}{
		{"protocol error", `{"error":{"code":"forbidden","message":"origin \"https://evil.example\" is not allowed"}}` + "\n", `origin "https://evil.example" is not allowed`},
		{"text", "  Forbidden by the proxy\n", "Forbidden by the proxy"},
		{"empty", "", ""},
		{"binary", "\x00\x01\x02", ""},
		{"not UTF-8", "\xff\xfe", ""},
		{"long", long, strings.Repeat("é", 100) + "..."},
		{"JSON without a message", `{"error":{"code":"forbidden"}}`, `{"error":{"code":"forbidden"}}`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			resp := &http.Response{Body: io.NopCloser(strings.NewReader(tt.body))}
			if got := handshakeReason(resp); got != tt.want {
				t.Errorf("handshakeReason(%q) = %q, want %q", tt.body, got, tt.want)
			}
		})
	}
	if got := handshakeReason(&http.Response{}); got != "" {
		t.Errorf("no body: %q", got)
	}
}

// OnReconnect hears each attempt before it is made: its number, its delay
// and why: the dropped connection's close, then each failed attempt's error.
func TestOnReconnect(t *testing.T) {
	t.Parallel()
	type call struct {
		attempt int
		delay   time.Duration
		cause   error
	}
	var mu sync.Mutex
	var calls []call
	s := newScriptServer(t)
	opts := fastOptions()
	opts.rand = func(n int64) int64 { return n - 1 } // the backoff ceiling
	opts.OnReconnect = func(attempt int, delay time.Duration, cause error) {
		mu.Lock()
		calls = append(calls, call{attempt, delay, cause})
		mu.Unlock()
	}
	c, sc := dial(t, s, opts)
	sc.close(t, protocol.CloseGoingAway, "bye")
	s.accept(t).close(t, protocol.CloseRateLimited, "not now") // before the connect reply
	s.accept(t).handshake(t, "s_3")
	testenv.Eventually(t, waitFor, func() bool { return c.Status() == StatusConnected && c.Session() == "s_3" }, "reconnected")
	// The callbacks run on the handler goroutine, maybe after the status.
	testenv.Eventually(t, waitFor, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(calls) >= 2
	}, "two calls")

	mu.Lock()
	defer mu.Unlock()
	if len(calls) != 2 {
		t.Fatalf("calls %+v, want 2", calls)
	}
	var ce *CloseError
	if c0 := calls[0]; c0.attempt != 1 || c0.delay != time.Millisecond || !errors.As(c0.cause, &ce) || ce.Code != protocol.CloseGoingAway || ce.Reason != "bye" {
		t.Errorf("first call %+v", c0)
	}
	if c1 := calls[1]; c1.attempt != 2 || c1.delay != 2*time.Millisecond || !errors.As(c1.cause, &ce) || ce.Code != protocol.CloseRateLimited {
		t.Errorf("second call %+v", c1)
	}
}
