package e2e

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/updraft/updraft/internal/testenv"
)

// TestMetricsAddr: with UPDRAFT_METRICS_ADDR, /metrics and the profiler
// are served on that private address and no longer beside the public
// WebSocket; the public endpoints stay where they were.
func TestMetricsAddr(t *testing.T) {
	t.Parallel()
	private := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	node := testenv.StartNode(t, nodeEnv("", map[string]string{"UPDRAFT_METRICS_ADDR": private, "UPDRAFT_PPROF": "true"}))
	get := func(url string) (int, string) {
		t.Helper()
		resp, err := http.Get(url)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, path := range []string{"/metrics", "/debug/pprof/", "/debug/pprof/cmdline"} {
		if status, _ := get(node.URL() + path); status != http.StatusNotFound {
			t.Errorf("public %s: %d, want 404", path, status)
		}
	}
	if status, body := get("http://" + private + "/metrics"); status != http.StatusOK || !strings.Contains(body, "updraft_connections") {
		t.Errorf("private /metrics: %d %.200s", status, body)
	}
	if status, _ := get("http://" + private + "/debug/pprof/cmdline"); status != http.StatusOK {
		t.Errorf("private /debug/pprof/cmdline: %d", status)
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		if status, _ := get(node.URL() + path); status != http.StatusOK {
			t.Errorf("public %s: %d, want 200", path, status)
		}
	}
	if status, _ := get("http://" + private + "/api/realtime"); status != http.StatusNotFound {
		t.Errorf("private /api/realtime: %d, want 404: the private address serves metrics only", status)
	}
}
