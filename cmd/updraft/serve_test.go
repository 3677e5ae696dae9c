package main

import (
	"context"
	"io"
	"net"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/updraft/updraft/internal/testenv"
)

// setenv sets the UPDRAFT_* variables of one case, clearing the others
// serve reads.
func setenv(t *testing.T, vars map[string]string) {
	t.Helper()
	for _, name := range []string{"ADDR", "NODE_ID", "REDIS_URL", "JWT_SECRET", "API_KEY", "ALLOW_ANONYMOUS",
		"ALLOWED_ORIGINS", "HISTORY_SIZE", "HISTORY_TTL", "MAX_MESSAGE", "CLIENT_RATE", "MAX_SUBSCRIPTIONS",
		"SEND_QUEUE", "HEARTBEAT", "DRAIN_TIMEOUT", "LOG_LEVEL", "DATABASE_URL", "PERSIST_TOPICS", "PERSIST_RETENTION_DAYS", "STREAM_IDLE",
		"PRESENCE_TIMEOUT", "PRESENCE_RATE", "PRESENCE_MAX_STATE", "HTTP_IDLE_TIMEOUT", "HTTP_BODY_TIMEOUT", "METRICS_ADDR", "PPROF", "MAX_RECOVERY", "NODE_QUEUE_BYTES"} {
		t.Setenv("UPDRAFT_"+name, "") // restores the variable after the test
		os.Unsetenv("UPDRAFT_" + name)
	}
	for k, v := range vars {
		t.Setenv(k, v)
	}
}

func TestServeConfigDefaults(t *testing.T) {
	setenv(t, map[string]string{"UPDRAFT_ALLOW_ANONYMOUS": "true"})
	c, err := loadServeConfig()
	if err != nil {
		t.Fatal(err)
	}
	if c.Addr != ":8080" || c.HistorySize != 1000 || c.HistoryTTL != 24*time.Hour || c.MaxMessage != 65536 ||
		c.ClientRate != 100 || c.MaxSubscriptions != 256 || c.SendQueue != 1024 || c.Heartbeat != 25*time.Second ||
		c.DrainTimeout != 15*time.Second || c.HTTPIdleTimeout != time.Minute || c.HTTPBodyTimeout != 10*time.Second || c.LogLevel != "info" || c.NodeID == "" || c.RedisURL != "" ||
		c.MaxRecovery != 10000 || c.NodeQueueBytes != 1<<30 {
		t.Fatalf("defaults: %+v", c)
	}
}

// TestServeConfigErrorsNameTheVariable: every bad value stops start-up with
// a message naming the variable at fault.
func TestServeConfigErrorsNameTheVariable(t *testing.T) {
	tests := []struct {
		vars map[string]string
		want string
	}{
		{map[string]string{}, "UPDRAFT_JWT_SECRET"},
		{map[string]string{"UPDRAFT_ALLOW_ANONYMOUS": "maybe"}, "UPDRAFT_ALLOW_ANONYMOUS"},
		{map[string]string{"UPDRAFT_ALLOW_ANONYMOUS": "true", "UPDRAFT_HISTORY_SIZE": "lots"}, "UPDRAFT_HISTORY_SIZE"},
		{map[string]string{"UPDRAFT_ALLOW_ANONYMOUS": "true", "UPDRAFT_HISTORY_SIZE": "0"}, "UPDRAFT_HISTORY_SIZE"},
		{map[string]string{"UPDRAFT_ALLOW_ANONYMOUS": "true", "UPDRAFT_HISTORY_TTL": "1 day"}, "UPDRAFT_HISTORY_TTL"},
		{map[string]string{"UPDRAFT_ALLOW_ANONYMOUS": "true", "UPDRAFT_MAX_MESSAGE": "10"}, "UPDRAFT_MAX_MESSAGE"},
		{map[string]string{"UPDRAFT_ALLOW_ANONYMOUS": "true", "UPDRAFT_CLIENT_RATE": "-1"}, "UPDRAFT_CLIENT_RATE"},
		{map[string]string{"UPDRAFT_ALLOW_ANONYMOUS": "true", "UPDRAFT_MAX_SUBSCRIPTIONS": "x"}, "UPDRAFT_MAX_SUBSCRIPTIONS"},
		{map[string]string{"UPDRAFT_ALLOW_ANONYMOUS": "true", "UPDRAFT_SEND_QUEUE": "0"}, "UPDRAFT_SEND_QUEUE"},
		{map[string]string{"UPDRAFT_ALLOW_ANONYMOUS": "true", "UPDRAFT_HEARTBEAT": "10ms"}, "UPDRAFT_HEARTBEAT"},
		{map[string]string{"UPDRAFT_ALLOW_ANONYMOUS": "true", "UPDRAFT_DRAIN_TIMEOUT": "-1s"}, "UPDRAFT_DRAIN_TIMEOUT"},
		{map[string]string{"UPDRAFT_ALLOW_ANONYMOUS": "true", "UPDRAFT_LOG_LEVEL": "loud"}, "UPDRAFT_LOG_LEVEL"},
		{map[string]string{"UPDRAFT_ALLOW_ANONYMOUS": "true", "UPDRAFT_ALLOWED_ORIGINS": "app.example.com"}, "UPDRAFT_ALLOWED_ORIGINS"},
		{map[string]string{"UPDRAFT_ALLOW_ANONYMOUS": "true", "UPDRAFT_ALLOWED_ORIGINS": "http://localhost:*,https://*.example.com"}, "UPDRAFT_ALLOWED_ORIGINS"},
		{map[string]string{"UPDRAFT_ALLOW_ANONYMOUS": "true", "UPDRAFT_PERSIST_TOPICS": "chat/**"}, "UPDRAFT_DATABASE_URL"},
		{map[string]string{"UPDRAFT_ALLOW_ANONYMOUS": "true", "UPDRAFT_DATABASE_URL": "postgres://x", "UPDRAFT_PERSIST_TOPICS": "**/chat"}, "UPDRAFT_PERSIST_TOPICS"},
		{map[string]string{"UPDRAFT_ALLOW_ANONYMOUS": "true", "UPDRAFT_PERSIST_RETENTION_DAYS": "0"}, "UPDRAFT_PERSIST_RETENTION_DAYS"},
		{map[string]string{"UPDRAFT_ALLOW_ANONYMOUS": "true", "UPDRAFT_PRESENCE_TIMEOUT": "100ms"}, "UPDRAFT_PRESENCE_TIMEOUT"},
		{map[string]string{"UPDRAFT_ALLOW_ANONYMOUS": "true", "UPDRAFT_PRESENCE_RATE": "0"}, "UPDRAFT_PRESENCE_RATE"},
		{map[string]string{"UPDRAFT_ALLOW_ANONYMOUS": "true", "UPDRAFT_PRESENCE_MAX_STATE": "100000"}, "UPDRAFT_PRESENCE_MAX_STATE"},
		{map[string]string{"UPDRAFT_ALLOW_ANONYMOUS": "true", "UPDRAFT_STREAM_IDLE": "soon"}, "UPDRAFT_STREAM_IDLE"},
		{map[string]string{"UPDRAFT_ALLOW_ANONYMOUS": "true", "UPDRAFT_HTTP_IDLE_TIMEOUT": "0s"}, "UPDRAFT_HTTP_IDLE_TIMEOUT"},
		{map[string]string{"UPDRAFT_ALLOW_ANONYMOUS": "true", "UPDRAFT_METRICS_ADDR": "9090"}, "UPDRAFT_METRICS_ADDR"},
		{map[string]string{"UPDRAFT_ALLOW_ANONYMOUS": "true", "UPDRAFT_ADDR": ":8080", "UPDRAFT_METRICS_ADDR": ":8080"}, "UPDRAFT_METRICS_ADDR"},
		{map[string]string{"UPDRAFT_ALLOW_ANONYMOUS": "true", "UPDRAFT_HTTP_BODY_TIMEOUT": "-1s"}, "UPDRAFT_HTTP_BODY_TIMEOUT"},
		{map[string]string{"UPDRAFT_ALLOW_ANONYMOUS": "true", "UPDRAFT_MAX_RECOVERY": "0"}, "UPDRAFT_MAX_RECOVERY"},
		{map[string]string{"UPDRAFT_ALLOW_ANONYMOUS": "true", "UPDRAFT_NODE_QUEUE_BYTES": "1000"}, "UPDRAFT_NODE_QUEUE_BYTES"},
		{map[string]string{"UPDRAFT_ALLOW_ANONYMOUS": "true", "UPDRAFT_MAX_MESSAGE": "4194304", "UPDRAFT_NODE_QUEUE_BYTES": "8388608"}, "UPDRAFT_NODE_QUEUE_BYTES"},
	}
	for _, tt := range tests {
		setenv(t, tt.vars)
		_, err := loadServeConfig()
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: error %v, want one naming %s", tt.vars, err, tt.want)
		}
	}
}

func TestServeRefusesBadRedisURL(t *testing.T) {
	setenv(t, map[string]string{"UPDRAFT_ALLOW_ANONYMOUS": "true", "UPDRAFT_REDIS_URL": "mysql://nope", "UPDRAFT_ADDR": "127.0.0.1:0"})
	var stderr strings.Builder
	if code := run([]string{"serve"}, &strings.Builder{}, &stderr); code != 1 || !strings.Contains(stderr.String(), "UPDRAFT_REDIS_URL") {
		t.Fatalf("exit %d, stderr %q: want 1 and a message naming UPDRAFT_REDIS_URL", code, stderr.String())
	}
}

func TestServeRefusesTakenMetricsAddr(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	setenv(t, map[string]string{"UPDRAFT_ALLOW_ANONYMOUS": "true", "UPDRAFT_ADDR": "127.0.0.1:0", "UPDRAFT_METRICS_ADDR": taken.Addr().String()})
	var stderr strings.Builder
	if code := run([]string{"serve"}, &strings.Builder{}, &stderr); code != 1 || !strings.Contains(stderr.String(), "UPDRAFT_METRICS_ADDR") {
		t.Fatalf("exit %d, stderr %q: want 1 and a message naming UPDRAFT_METRICS_ADDR", code, stderr.String())
	}
}

// TestServeRefusesWrongRedisSettings: a Redis that answers but refuses the
// URL's password or database is a mistake to name at once, unlike a Redis
// that is down, which a gateway waits for (e2e TestServeWaitsForRedis).
func TestServeRefusesWrongRedisSettings(t *testing.T) {
	r := testenv.StartRedis(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := r.Client(t).ConfigSet(ctx, "requirepass", "s3cret").Err(); err != nil {
		t.Fatal(err)
	}
	for _, url := range []string{"redis://:wrong@" + r.Addr() + "/0", "redis://:s3cret@" + r.Addr() + "/99"} {
		setenv(t, map[string]string{"UPDRAFT_ALLOW_ANONYMOUS": "true", "UPDRAFT_REDIS_URL": url, "UPDRAFT_ADDR": "127.0.0.1:0"})
		var stderr testenv.SyncBuffer
		exit := make(chan int, 1)
		go func() { exit <- run([]string{"serve"}, &strings.Builder{}, &stderr) }()
		select {
		case code := <-exit:
			if code != 1 || !strings.Contains(stderr.String(), "UPDRAFT_REDIS_URL") {
				t.Errorf("%s: exit %d, stderr %q: want 1 and a message naming UPDRAFT_REDIS_URL", url, code, stderr.String())
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("%s: serve still running after 30s; stderr %q", url, stderr.String())
		}
	}
}

// The demo app is told which tables to expect changes of: in embedded mode
// those this node tracks (none without a database), in a cluster those
// UPDRAFT_TRACK_TABLES names.
func TestDemoSiteConfig(t *testing.T) {
	t.Setenv("UPDRAFT_TRACK_TABLES", "orders,items")
	for _, c := range []struct {
		cfg      serveConfig
		embedded bool
		want     string
	}{
		{serveConfig{}, true, `{"mode":"embedded","tables":[]}`},
		{serveConfig{DatabaseURL: "postgres://x"}, true, `{"mode":"embedded","tables":["orders","items"]}`},
		{serveConfig{RedisURL: "redis://x"}, false, `{"mode":"cluster","tables":["orders","items"]}`},
	} {
		rec := httptest.NewRecorder()
		demoSite(c.cfg, c.embedded).ServeHTTP(rec, httptest.NewRequest("GET", "/config.json", nil))
		if got, _ := io.ReadAll(rec.Body); string(got) != c.want {
			t.Errorf("%+v embedded=%v: /config.json %s, want %s", c.cfg, c.embedded, got, c.want)
		}
	}
}
