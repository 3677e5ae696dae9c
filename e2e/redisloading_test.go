package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/updraft/updraft/internal/testenv"
	"github.com/updraft/updraft/protocol"
)

// TestRedisLoadingIsUnavailable holds a real Redis in its LOADING state
// (DEBUG RELOAD with a per-key load delay) and checks that the gateway
// answers 503 unavailable, as for an unreachable Redis, never 500
// internal; and that it serves again once Redis has loaded.
func TestRedisLoadingIsUnavailable(t *testing.T) {
	r := testenv.StartRedis(t)
	node := testenv.StartNode(t, nodeEnv(r.URL(), nil))
	const topic = "chat/loading"
	ws := dialRaw(t, node.WSURL(), nil)
	ws.connect("")
	if status, body := post(t, node, "/api/v1/emit", apiKey, emitItem{Topic: topic, Event: "before"}); status != http.StatusOK {
		t.Fatalf("emit before loading: %d %s", status, body)
	}

	// Loading keys*delay takes ~6s: long enough for go-redis's retries of
	// LOADING (well under a second) and the checks, short enough for a test.
	const keys, delayMicros = 6000, 1000
	rc := redis.NewClient(&redis.Options{Addr: r.Addr(), MaxRetries: -1, ReadTimeout: 30 * time.Second}) // DEBUG RELOAD answers once loaded
	t.Cleanup(func() { rc.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, kv := range [][2]any{{"key-load-delay", delayMicros}, {"loading-process-events-interval-bytes", 1024}} {
		if err := rc.ConfigSet(ctx, kv[0].(string), fmt.Sprint(kv[1])).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if err := rc.Eval(ctx, "for i = 1, tonumber(ARGV[1]) do redis.call('SET', 'fill:' .. i, i) end", nil, keys).Err(); err != nil && err != redis.Nil {
		t.Fatal(err)
	}
	reloaded := make(chan error, 1)
	go func() { reloaded <- rc.Do(ctx, "DEBUG", "RELOAD").Err() }()
	probe := redis.NewClient(&redis.Options{Addr: r.Addr(), MaxRetries: -1})
	t.Cleanup(func() { probe.Close() })
	loading := func() bool { return redis.IsLoadingError(probe.Get(ctx, "fill:1").Err()) }
	testenv.Eventually(t, 10*time.Second, loading, "Redis never answered LOADING after DEBUG RELOAD")

	unavailable := func(what string, status int, body []byte) {
		t.Helper()
		var env struct{ Error protocol.Error }
		if status != http.StatusServiceUnavailable || json.Unmarshal(body, &env) != nil || env.Error.Code != protocol.CodeUnavailable {
			t.Errorf("%s while Redis loads: %d %s, want 503 unavailable", what, status, body)
		}
	}
	status, body := post(t, node, "/api/v1/emit", apiKey, emitItem{Topic: topic, Event: "during"})
	unavailable("emit", status, body)
	status, body = get(t, node, "/api/v1/history?topic="+topic)
	unavailable("history", status, body)
	status, body = get(t, node, "/readyz")
	unavailable("readyz", status, body)
	rep := ws.replyTo("p1", `{"type":"publish","ref":"p1","topic":"`+topic+`","event":"during"}`)
	ws.expectError(rep, protocol.CodeUnavailable)
	rep = ws.replyTo("m1", `{"type":"members","ref":"m1","topic":"`+topic+`"}`)
	ws.expectError(rep, protocol.CodeUnavailable) // the presence store
	if !loading() {
		t.Fatal("Redis finished loading before the checks ended: raise keys")
	}

	select {
	case err := <-reloaded:
		if err != nil {
			t.Fatalf("DEBUG RELOAD: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("DEBUG RELOAD did not return")
	}
	if status, body := post(t, node, "/api/v1/emit", apiKey, emitItem{Topic: topic, Event: "after"}); status != http.StatusOK {
		t.Fatalf("emit after loading: %d %s", status, body)
	}
}

// get sends an authorized GET to node and returns the status and body.
func get(t *testing.T, node *testenv.Node, path string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, node.URL()+path, nil)
	req.Header.Set("Authorization", "Bearer "+apiKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}
