package client

import (
	"io"
	"net/http"
	"strings"
	"testing"
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
