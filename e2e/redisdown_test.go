package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/updraft/updraft/client"
	"github.com/updraft/updraft/internal/testenv"
)

// TestServeWaitsForRedis starts a gateway while its Redis is down: it
// must not exit, but serve /healthz 200 and /readyz 503, say that it
// waits, and become ready once Redis is up. Then Redis goes away again:
// through all of it, go-redis's own log lines included, the process
// writes only JSON lines.
func TestServeWaitsForRedis(t *testing.T) {
	r := testenv.StartRedis(t)
	r.Stop() // its port, with nothing listening
	node := testenv.StartNodeUnready(t, nodeEnv(r.URL(), map[string]string{"UPDRAFT_LOG_LEVEL": "info"}))

	testenv.Eventually(t, 15*time.Second, func() bool { return strings.Contains(node.Logs(), "waiting for it") },
		"the node never logged that it waits for Redis")
	if status, body := get(t, node, "/readyz"); status != http.StatusServiceUnavailable {
		t.Fatalf("/readyz with Redis down: %d %s, want 503", status, body)
	}
	if status, body := get(t, node, "/healthz"); status != http.StatusOK {
		t.Fatalf("/healthz with Redis down: %d %s, want 200", status, body)
	}
	if exited, err := node.Wait(0); exited {
		t.Fatalf("the node exited with Redis down: %v", err)
	}

	r.Restart(t)
	testenv.Eventually(t, 20*time.Second, func() bool {
		status, _ := get(t, node, "/readyz")
		return status == http.StatusOK
	}, "the node did not become ready once Redis was up")
	watch := newCollector()
	c := dial(t, node.WSURL(), client.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Subscribe(ctx, "chat/up", watch.handle); err != nil {
		t.Fatalf("subscribe once Redis is up: %v", err)
	}
	if status, body := post(t, node, "/api/v1/emit", apiKey, emitItem{Topic: "chat/up", Event: "hi"}); status != http.StatusOK {
		t.Fatalf("emit once Redis is up: %d %s", status, body)
	}
	testenv.Eventually(t, 10*time.Second, func() bool { return watch.count("chat/up") == 1 }, "the subscriber did not receive the emit")
	if !strings.Contains(node.Logs(), "Redis is up") {
		t.Error("the node did not log that Redis is up")
	}

	// Redis goes away: go-redis logs its failed dials, through zap.
	r.Kill()
	testenv.Eventually(t, 20*time.Second, func() bool {
		get(t, node, "/readyz") // dials Redis
		return strings.Contains(node.Logs(), `"logger":"redis"`)
	}, "no go-redis line reached the log once Redis was gone")

	for i, line := range strings.Split(strings.TrimRight(node.Logs(), "\n"), "\n") {
		var entry map[string]any
		if err := json.Unmarshal([]byte(line), &entry); err != nil || entry["msg"] == nil {
			t.Errorf("log line %d is not a zap JSON line: %q", i+1, line)
		}
	}
}
