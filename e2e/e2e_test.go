// Package e2e tests Updraft as it runs: real `updraft serve` processes built
// from this tree, a real redis-server, real WebSocket clients, all started
// by the tests on free loopback ports.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/updraft/updraft/client"
	"github.com/updraft/updraft/internal/testenv"
	"github.com/updraft/updraft/protocol"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

const (
	apiKey    = "test-api-key"
	jwtSecret = "test-jwt-secret"
)

// nodeEnv is the environment of a test node; extra entries override.
func nodeEnv(redisURL string, extra map[string]string) map[string]string {
	env := map[string]string{
		"UPDRAFT_API_KEY":         apiKey,
		"UPDRAFT_JWT_SECRET":      jwtSecret,
		"UPDRAFT_ALLOW_ANONYMOUS": "true",
		"UPDRAFT_REDIS_URL":       redisURL,
		"UPDRAFT_LOG_LEVEL":       "warn",
	}
	for k, v := range extra {
		env[k] = v
	}
	return env
}

// startCluster starts one redis-server and n gateways joined by it.
func startCluster(t *testing.T, n int, extra map[string]string) (*testenv.Redis, []*testenv.Node) {
	t.Helper()
	return cluster(t, n, extra, testenv.StartNode)
}

// startLoadCluster is startCluster with gateways built without -race, for
// tests whose point is sustained load (see testenv.StartLoadNode).
func startLoadCluster(t *testing.T, n int, extra map[string]string) (*testenv.Redis, []*testenv.Node) {
	t.Helper()
	return cluster(t, n, extra, testenv.StartLoadNode)
}

func cluster(t *testing.T, n int, extra map[string]string, start func(testing.TB, map[string]string) *testenv.Node) (*testenv.Redis, []*testenv.Node) {
	t.Helper()
	r := testenv.StartRedis(t)
	nodes := make([]*testenv.Node, n)
	for i := range nodes {
		env := nodeEnv(r.URL(), extra)
		env["UPDRAFT_NODE_ID"] = fmt.Sprintf("node-%d", i+1)
		nodes[i] = start(t, env)
	}
	return r, nodes
}

// token mints a JWT for sub with the given patterns.
func token(t *testing.T, sub string, ttl time.Duration, subscribe, publish []string) string {
	t.Helper()
	claims := jwt.MapClaims{"sub": sub, "exp": time.Now().Add(ttl).Unix(), "subscribe": subscribe, "publish": publish}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(jwtSecret))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// dial connects a Go client and closes it when the test ends.
func dial(t *testing.T, url string, opts client.Options) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if opts.MaxBackoff == 0 {
		opts.MinBackoff, opts.MaxBackoff = 50*time.Millisecond, 500*time.Millisecond
	}
	c, err := client.Dial(ctx, url, opts)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// collector records the events a client receives, per topic, in arrival
// order.
type collector struct {
	mu     sync.Mutex
	seqs   map[string][]uint64
	epochs map[string]map[string]bool
	froms  map[string]int
}

func newCollector() *collector {
	return &collector{seqs: map[string][]uint64{}, epochs: map[string]map[string]bool{}, froms: map[string]int{}}
}

func (c *collector) handle(ev protocol.Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seqs[ev.Topic] = append(c.seqs[ev.Topic], ev.Seq)
	if c.epochs[ev.Topic] == nil {
		c.epochs[ev.Topic] = map[string]bool{}
	}
	c.epochs[ev.Topic][ev.Epoch] = true
	if ev.From != "" {
		c.froms[ev.From]++
	}
}

func (c *collector) count(topic string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.seqs[topic])
}

func (c *collector) snapshot(topic string) []uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]uint64(nil), c.seqs[topic]...)
}

// checkExactly fails unless the collector received exactly want's seqs on
// topic, each once, in ascending order.
func (c *collector) checkExactly(t *testing.T, who, topic string, want []uint64) {
	t.Helper()
	got := c.snapshot(topic)
	for i := 1; i < len(got); i++ {
		if got[i] <= got[i-1] {
			t.Fatalf("%s on %s: seq %d arrived after %d (out of order or duplicate)", who, topic, got[i], got[i-1])
		}
	}
	if len(got) != len(want) {
		t.Fatalf("%s on %s: received %d messages, want %d (first missing: %v)", who, topic, len(got), len(want), firstMissing(got, want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("%s on %s: message %d has seq %d, want %d", who, topic, i, got[i], want[i])
		}
	}
}

func firstMissing(got, want []uint64) any {
	have := make(map[uint64]bool, len(got))
	for _, s := range got {
		have[s] = true
	}
	for _, s := range want {
		if !have[s] {
			return s
		}
	}
	return "none"
}

func seqRange(from, to uint64) []uint64 {
	out := make([]uint64, 0, to-from+1)
	for s := from; s <= to; s++ {
		out = append(out, s)
	}
	return out
}

// emitItem is one message of an HTTP batch emit.
type emitItem struct {
	Topic string          `json:"topic"`
	Event string          `json:"event"`
	Data  json.RawMessage `json:"data,omitempty"`
}

type emitResult struct {
	Epoch string          `json:"epoch"`
	Seq   uint64          `json:"seq"`
	Error *protocol.Error `json:"error"`
}

// post sends a JSON body to a node's HTTP API with the given key and
// returns the status and body.
func post(t *testing.T, node *testenv.Node, path, key string, body any) (int, []byte) {
	t.Helper()
	status, b, err := tryPost(node, path, key, body)
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	return status, b
}

// tryPost is post for goroutines other than the test's: it returns errors.
func tryPost(node *testenv.Node, path, key string, body any) (int, []byte, error) {
	raw, err := json.Marshal(body)
	if err != nil {
		return 0, nil, err
	}
	req, _ := http.NewRequest(http.MethodPost, node.URL()+path, bytes.NewReader(raw))
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// emitBatch publishes items through node and returns their positions,
// failing the test on any error.
func emitBatch(t *testing.T, node *testenv.Node, items []emitItem) []emitResult {
	t.Helper()
	res, err := tryEmitBatch(node, items)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// tryEmitBatch is emitBatch for goroutines other than the test's.
func tryEmitBatch(node *testenv.Node, items []emitItem) ([]emitResult, error) {
	status, body, err := tryPost(node, "/api/v1/emit/batch", apiKey, map[string]any{"messages": items})
	if err != nil {
		return nil, err
	}
	if status != http.StatusOK {
		return nil, fmt.Errorf("emit batch: %d %s", status, body)
	}
	var res struct{ Results []emitResult }
	if err := json.Unmarshal(body, &res); err != nil {
		return nil, fmt.Errorf("emit batch answer %s: %v", body, err)
	}
	for i, r := range res.Results {
		if r.Error != nil {
			return nil, fmt.Errorf("emit batch item %d: %v", i, r.Error)
		}
	}
	return res.Results, nil
}

// metric reads one unlabelled (or fully labelled) series from a node's
// /metrics, e.g. `updraft_slow_consumer_closes_total`.
func metric(t testing.TB, node *testenv.Node, series string) float64 {
	t.Helper()
	resp, err := http.Get(node.URL() + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			if err != nil {
				t.Fatalf("metric %s: %q", series, line)
			}
			return v
		}
	}
	return 0
}

// connectAll makes n connections with dial(i), 16 at a time, and returns
// them in order; it fails tb with the first error.
func connectAll[T any](tb testing.TB, n int, dial func(i int) (T, error)) []T {
	tb.Helper()
	out := make([]T, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				c, err := dial(i)
				if err != nil {
					errs <- fmt.Errorf("connection %d: %w", i, err)
					return
				}
				out[i] = c
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		tb.Fatal(err)
	}
	return out
}
