package tracker

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/updraft/updraft/broker"
	"github.com/updraft/updraft/internal/testenv"
)

// waitFor bounds every wait for the tracker to publish.
const waitFor = 20 * time.Second

// harness is a real PostgreSQL and a real Redis, a broker node subscribed
// to table topics that records what the trackers publish, and the trackers
// under test.
type harness struct {
	t     *testing.T
	pg    *testenv.Postgres
	db    *sql.DB
	redis *testenv.Redis
	node  *broker.Redis // the subscriber
	rec   *recorder
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	h := &harness{t: t, pg: testenv.StartPostgres(t), redis: testenv.StartRedis(t), rec: &recorder{byTopic: map[string][]broker.Message{}}}
	h.db = h.pg.DB(t)
	h.node = h.broker(h.rec.handle)
	return h
}

// broker returns a Redis broker node on the harness's Redis.
func (h *harness) broker(handler broker.Handler) *broker.Redis {
	h.t.Helper()
	b, err := broker.NewRedis(context.Background(), broker.RedisConfig{URL: h.redis.URL(), CheckInterval: 50 * time.Millisecond})
	if err != nil {
		h.t.Fatal(err)
	}
	b.RegisterEventHandler(handler, nil)
	h.t.Cleanup(func() { _ = b.Close() })
	return b
}

// exec runs SQL statements, failing the test on error.
func (h *harness) exec(stmts ...string) {
	h.t.Helper()
	for _, s := range stmts {
		if _, err := h.db.Exec(s); err != nil {
			h.t.Fatalf("%s: %v", s, err)
		}
	}
}

func (h *harness) subscribe(topics ...string) {
	h.t.Helper()
	for _, topic := range topics {
		if err := h.node.Subscribe(context.Background(), topic); err != nil {
			h.t.Fatal(err)
		}
	}
}

// running is a tracker started by the harness.
type running struct {
	*Tracker
	cancel context.CancelFunc
	done   chan struct{}
}

// stop cancels the tracker's Run (a clean shutdown) and waits for it.
func (r *running) stop() {
	r.cancel()
	<-r.done
}

// start creates a tracker with cfg (URL and Coordinator filled in, a fast
// poll by default) and runs it until stopped or the test ends.
func (h *harness) start(cfg Config) *running {
	h.t.Helper()
	if cfg.URL == "" {
		cfg.URL = h.pg.URL()
	}
	if cfg.Coordinator == nil {
		cfg.Coordinator = h.broker(nil)
	}
	if cfg.PollInterval == 0 {
		cfg.PollInterval = 20 * time.Millisecond
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	tr, err := New(ctx, cfg)
	if err != nil {
		h.t.Fatalf("tracker.New: %v", err)
	}
	rctx, rcancel := context.WithCancel(context.Background())
	r := &running{Tracker: tr, cancel: rcancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		_ = tr.Run(rctx)
	}()
	h.t.Cleanup(func() {
		r.stop()
		_ = tr.Close()
	})
	h.waitCursor(cfg.Coordinator)
	return r
}

// waitCursor waits until a leader stored its first cursor: changes
// committed from then on are published. (A first start publishes only
// changes committed after it.)
func (h *harness) waitCursor(c broker.Coordinator) {
	h.t.Helper()
	var cur string
	testenv.Eventually(h.t, waitFor, func() bool {
		cur, _ = c.Cursor(context.Background(), DefaultName)
		return cur != ""
	}, "no tracker stored a cursor")
}

// recorder keeps every message the subscriber node received, by topic.
type recorder struct {
	mu      sync.Mutex
	byTopic map[string][]broker.Message // guarded by mu
}

func (r *recorder) handle(m broker.Message) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.byTopic[m.Topic] = append(r.byTopic[m.Topic], m)
}

func (r *recorder) messages(topic string) []broker.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]broker.Message(nil), r.byTopic[topic]...)
}

// wait returns topic's messages once there are at least n.
func (h *harness) wait(topic string, n int) []broker.Message {
	h.t.Helper()
	testenv.Eventually(h.t, waitFor, func() bool { return len(h.rec.messages(topic)) >= n },
		"topic %q: want %d events, have %d", topic, n, len(h.rec.messages(topic)))
	return h.rec.messages(topic)
}

// row decodes an event's JSON object.
func row(t *testing.T, raw json.RawMessage) map[string]json.RawMessage {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("row %s: %v", raw, err)
	}
	return m
}

// field returns the compact JSON text of a row's column.
func field(t *testing.T, raw json.RawMessage, col string) string {
	t.Helper()
	v, ok := row(t, raw)[col]
	if !ok {
		return "<absent>"
	}
	return fmt.Sprint(string(v))
}
