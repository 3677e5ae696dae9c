package broker_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/updraft/updraft/broker"
	"github.com/updraft/updraft/broker/brokertest"
	"github.com/updraft/updraft/internal/testenv"
)

const redisWait = 15 * time.Second

func startRedis(tb testing.TB) *testenv.Redis { return testenv.StartRedis(tb) }

// redisFactory makes Redis nodes on srv: every node made shares it. Their
// periodic check runs often, so that the suite also finds any duplicate or
// disorder it would cause.
func redisFactory(tb testing.TB, srv *testenv.Redis) brokertest.Factory {
	admin := srv.Client(tb)
	return brokertest.Factory{
		Coordinator: true,
		New: func(tb testing.TB, cfg brokertest.Config) broker.Broker {
			return newRedisNode(tb, srv, broker.RedisConfig{
				Retention: cfg.Retention, CheckInterval: 20 * time.Millisecond,
			}, nil)
		},
		MultiNode: true,
		Subscriptions: func(tb testing.TB, topic string) int {
			return numSub(tb, admin, topic)
		},
	}
}

// newRedisNode starts a Redis broker on srv; cfg.URL and a test logger are
// filled in. The caller closes it.
// newRedisNode makes a node on srv whose messages go to h (nil discards
// them).
func newRedisNode(tb testing.TB, srv *testenv.Redis, cfg broker.RedisConfig, h broker.Handler) *broker.Redis {
	tb.Helper()
	cfg.URL = srv.URL()
	if cfg.Logger == nil {
		cfg.Logger = zaptest.NewLogger(tb, zaptest.Level(zap.InfoLevel))
	}
	ctx, cancel := context.WithTimeout(context.Background(), redisWait)
	defer cancel()
	r, err := broker.NewRedis(ctx, cfg)
	if err != nil {
		tb.Fatalf("NewRedis: %v", err)
	}
	r.RegisterEventHandler(h, nil)
	return r
}

// numSub is PUBSUB NUMSUB of topic's channel: its subscriptions across
// every node.
func numSub(tb testing.TB, admin *redis.Client, topic string) int {
	tb.Helper()
	ch := broker.ChannelName(topic)
	res, err := admin.PubSubNumSub(context.Background(), ch).Result()
	if err != nil {
		tb.Fatalf("PUBSUB NUMSUB %s: %v", ch, err)
	}
	return int(res[ch])
}

// pubsubClients counts the connections in pub/sub mode.
func pubsubClients(tb testing.TB, admin *redis.Client) int {
	tb.Helper()
	list, err := admin.Do(context.Background(), "CLIENT", "LIST", "TYPE", "pubsub").Text()
	if err != nil {
		tb.Fatalf("CLIENT LIST TYPE pubsub: %v", err)
	}
	return strings.Count(list, "\n")
}

func TestRedis(t *testing.T) {
	t.Parallel()
	brokertest.Run(t, redisFactory(t, startRedis(t)))
}

// collector is a Handler keeping what it receives.
type collector struct {
	mu   sync.Mutex
	msgs []broker.Message // guarded by mu
}

func (c *collector) handle(m broker.Message) {
	c.mu.Lock()
	c.msgs = append(c.msgs, m)
	c.mu.Unlock()
}

// has reports whether a message of topic satisfying ok was received.
func (c *collector) has(topic string, ok func(broker.Message) bool) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, m := range c.msgs {
		if m.Topic == topic && ok(m) {
			return true
		}
	}
	return false
}

func (c *collector) waitFor(t *testing.T, topic string, what string, ok func(broker.Message) bool) {
	t.Helper()
	testenv.Eventually(t, redisWait, func() bool { return c.has(topic, ok) }, "topic %q: no message %s", topic, what)
}

func position(p broker.Position) func(broker.Message) bool {
	return func(m broker.Message) bool { return m.Position == p }
}

func mustPublish(t *testing.T, b broker.Broker, topic string) broker.Position {
	t.Helper()
	pos, err := b.Publish(context.Background(), topic, broker.Publication{Event: "e", Data: json.RawMessage(`{}`)})
	if err != nil {
		t.Fatalf("Publish(%q): %v", topic, err)
	}
	return pos
}

// TestRedisOneSubscriptionPerNode: however many local subscribers, a node
// holds one Redis subscription per topic and one pub/sub connection.
func TestRedisOneSubscriptionPerNode(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := startRedis(t)
	admin := srv.Client(t)
	const callers = 50
	topics := []string{"one/a", "one/b", "one/c"}
	var nodes []*broker.Redis
	for range 2 {
		n := newRedisNode(t, srv, broker.RedisConfig{}, nil)
		t.Cleanup(func() { _ = n.Close() })
		nodes = append(nodes, n)
	}

	var wg sync.WaitGroup
	for _, n := range nodes {
		for _, topic := range topics {
			for range callers {
				wg.Go(func() {
					if err := n.Subscribe(ctx, topic); err != nil {
						t.Errorf("Subscribe: %v", err)
					}
				})
			}
		}
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	for _, topic := range topics {
		if got := numSub(t, admin, topic); got != len(nodes) {
			t.Fatalf("PUBSUB NUMSUB %s = %d, want %d (one per node)", topic, got, len(nodes))
		}
	}
	if got := pubsubClients(t, admin); got != len(nodes) {
		t.Fatalf("%d pub/sub connections, want %d (one per node)", got, len(nodes))
	}

	// All but one of node 0's callers leave: still subscribed.
	topic := topics[0]
	for range callers - 1 {
		if err := nodes[0].Unsubscribe(ctx, topic); err != nil {
			t.Fatal(err)
		}
	}
	if got := numSub(t, admin, topic); got != 2 {
		t.Fatalf("PUBSUB NUMSUB %s = %d with one caller left on each node, want 2", topic, got)
	}
	if err := nodes[0].Unsubscribe(ctx, topic); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, redisWait, func() bool { return numSub(t, admin, topic) == 1 },
		"PUBSUB NUMSUB %s = %d after node 0's last caller left, want 1", topic, numSub(t, admin, topic))
}

// TestRedisRestart: Redis stops and comes back empty on the same port; the
// node reconnects and resubscribes by itself, delivery resumes, and the
// topic moves to a new epoch since its history was lost.
func TestRedisRestart(t *testing.T) {
	t.Parallel()
	for _, stop := range []struct {
		name string
		stop func(*testenv.Redis)
	}{
		{"SIGTERM", (*testenv.Redis).Stop},
		{"SIGKILL", (*testenv.Redis).Kill},
	} {
		t.Run(stop.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			srv := startRedis(t)
			var col collector
			reg := prometheus.NewRegistry()
			n := newRedisNode(t, srv, broker.RedisConfig{
				Metrics: broker.NewMetrics(reg),
			}, col.handle)
			t.Cleanup(func() { _ = n.Close() })
			topic := "restart/" + stop.name
			if err := n.Subscribe(ctx, topic); err != nil {
				t.Fatal(err)
			}
			before := mustPublish(t, n, topic)
			col.waitFor(t, topic, "before the restart", position(before))

			stop.stop(srv)
			if _, err := n.Publish(ctx, topic, broker.Publication{Data: json.RawMessage(`{}`)}); !errors.Is(err, broker.ErrUnavailable) {
				t.Fatalf("Publish with Redis down = %v, want ErrUnavailable", err)
			}
			if err := n.Ping(ctx); !errors.Is(err, broker.ErrUnavailable) {
				t.Fatalf("Ping with Redis down = %v, want ErrUnavailable", err)
			}
			srv.Restart(t)

			// Publish until one arrives: those published before the node
			// resubscribed are lost (delivery is at most once).
			var after broker.Position
			testenv.Eventually(t, redisWait, func() bool {
				if pos, err := n.Publish(ctx, topic, broker.Publication{Data: json.RawMessage(`{}`)}); err == nil {
					after = pos
				}
				return col.has(topic, func(m broker.Message) bool { return m.Epoch != before.Epoch })
			}, "no delivery after Redis restarted")
			if after.Epoch == before.Epoch || after.Epoch == "" {
				t.Fatalf("epoch after the restart %q, before %q: want a new one", after.Epoch, before.Epoch)
			}
			// The delivery may have come from history, filled by the
			// periodic check, which then subscribes the topic again.
			admin := srv.Client(t)
			testenv.Eventually(t, redisWait, func() bool { return numSub(t, admin, topic) == 1 },
				"PUBSUB NUMSUB after the restart is not 1")
			last := mustPublish(t, n, topic)
			col.waitFor(t, topic, "published after recovery", position(last))
			if broker.MetricValue(reg, "updraft_redis_errors_total") == 0 {
				t.Fatal("no error was counted while Redis was down")
			}
		})
	}
}

// TestRedisPubSubConnectionKilled: Redis kills the node's pub/sub
// connection; the node resubscribes every topic and delivery resumes.
func TestRedisPubSubConnectionKilled(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := startRedis(t)
	admin := srv.Client(t)
	var col collector
	n := newRedisNode(t, srv, broker.RedisConfig{}, col.handle)
	t.Cleanup(func() { _ = n.Close() })
	topics := []string{"killed/a", "killed/b", "killed/c"}
	for _, topic := range topics {
		if err := n.Subscribe(ctx, topic); err != nil {
			t.Fatal(err)
		}
		col.waitFor(t, topic, "before the kill", position(mustPublish(t, n, topic)))
	}

	for round := range 3 {
		killed, err := admin.ClientKillByFilter(ctx, "TYPE", "pubsub").Result()
		if err != nil || killed != 1 {
			t.Fatalf("round %d: CLIENT KILL TYPE pubsub = %d, %v; want 1 connection killed", round, killed, err)
		}
		for _, topic := range topics {
			testenv.Eventually(t, redisWait, func() bool {
				return numSub(t, admin, topic) == 1
			}, "round %d: topic %q not resubscribed", round, topic)
			col.waitFor(t, topic, "after the kill", position(mustPublish(t, n, topic)))
		}
	}
}

// TestRedisLayout pins the documented key layout and payload format, and
// that a lost meta or history key starts a new epoch.
func TestRedisLayout(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := startRedis(t)
	admin := srv.Client(t)
	const ttl = time.Hour
	n := newRedisNode(t, srv, broker.RedisConfig{Retention: broker.Retention{TTL: ttl, Size: 3}}, nil)
	t.Cleanup(func() { _ = n.Close() })
	topic := "layout/t:1"
	meta, history, channel := broker.MetaKey(topic), broker.HistoryKey(topic), broker.ChannelName(topic)
	if meta != "updraft:{layout/t:1}:meta" || history != "updraft:{layout/t:1}:history" || channel != "updraft:msg:{layout/t:1}" {
		t.Fatalf("keys %q %q %q", meta, history, channel)
	}

	raw := admin.Subscribe(ctx, channel)
	defer raw.Close()
	if _, err := raw.Receive(ctx); err != nil { // the subscription confirmation
		t.Fatal(err)
	}
	first := mustPublish(t, n, topic)
	msg, err := raw.ReceiveMessage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if prefix := first.Epoch + ":1:"; !strings.HasPrefix(msg.Payload, prefix) {
		t.Fatalf("payload %q, want prefix %q", msg.Payload, prefix)
	}
	fields, err := admin.HGetAll(ctx, meta).Result()
	if err != nil || fields["epoch"] != first.Epoch || fields["seq"] != "1" || len(fields) != 2 {
		t.Fatalf("HGETALL meta = %v, %v", fields, err)
	}
	for i := 2; i <= 5; i++ {
		mustPublish(t, n, topic)
	}
	entries, err := admin.XRange(ctx, history, "-", "+").Result()
	if err != nil || len(entries) != 3 || entries[0].ID != "3-0" || entries[2].ID != "5-0" {
		t.Fatalf("XRANGE history = %v, %v; want entries 3-0..5-0", entries, err)
	}
	for _, key := range []string{meta, history} {
		if pttl, err := admin.PTTL(ctx, key).Result(); err != nil || pttl <= 0 || pttl > ttl {
			t.Fatalf("PTTL %s = %v, %v; want within (0, %v]", key, pttl, err, ttl)
		}
	}

	for _, lost := range []string{history, meta} {
		before, err := n.Latest(ctx, topic)
		if err != nil {
			t.Fatal(err)
		}
		if err := admin.Del(ctx, lost).Err(); err != nil {
			t.Fatal(err)
		}
		pos := mustPublish(t, n, topic)
		if pos.Epoch == before.Epoch || pos.Seq != 1 {
			t.Fatalf("after losing %s: publish = %+v, want seq 1 in an epoch other than %q", lost, pos, before.Epoch)
		}
		page, err := n.History(ctx, topic, broker.HistoryQuery{})
		if err != nil || len(page.Messages) != 1 || page.Messages[0].Position != pos {
			t.Fatalf("after losing %s: History = %+v, %v; want only %+v", lost, page, err, pos)
		}
	}

	// A batch starts the new epoch once, at its first message of the
	// topic, and stores the topic's position once, at its end.
	before, err := n.Latest(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	if err := admin.Del(ctx, history).Err(); err != nil {
		t.Fatal(err)
	}
	item := broker.Item{Topic: topic, Publication: broker.Publication{Event: "e", Data: []byte(`{}`)}}
	pos, err := n.PublishBatch(ctx, []broker.Item{item, item, item})
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range pos {
		if p.Epoch == before.Epoch || p.Epoch != pos[0].Epoch || p.Seq != uint64(i+1) {
			t.Fatalf("batch after losing the history: %+v, want seqs 1-3 in one epoch other than %q", pos, before.Epoch)
		}
	}
	fields, err = admin.HGetAll(ctx, meta).Result()
	if err != nil || fields["epoch"] != pos[0].Epoch || fields["seq"] != "3" {
		t.Fatalf("HGETALL meta after the batch = %v, %v", fields, err)
	}
	if pttl, err := admin.PTTL(ctx, history).Result(); err != nil || pttl <= 0 || pttl > ttl {
		t.Fatalf("PTTL history after the batch = %v, %v", pttl, err)
	}
}

// TestRedisScriptFlushed: the script is loaded again when Redis forgot it.
func TestRedisScriptFlushed(t *testing.T) {
	t.Parallel()
	srv := startRedis(t)
	n := newRedisNode(t, srv, broker.RedisConfig{}, nil)
	t.Cleanup(func() { _ = n.Close() })
	mustPublish(t, n, "flush")
	if err := srv.Client(t).ScriptFlush(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	if pos := mustPublish(t, n, "flush"); pos.Seq != 2 {
		t.Fatalf("publish after SCRIPT FLUSH = %+v, want seq 2", pos)
	}
}

func TestNewRedisConfigErrors(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), redisWait)
	defer cancel()
	closed := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	cases := []struct {
		url      string
		want     string
		wantIs   error
		mustHide string
	}{
		{url: "", want: "RedisConfig.URL"},
		{url: "http://localhost:6379", want: "RedisConfig.URL"},
		{url: "redis://:s3cret@" + closed + "/0", want: "RedisConfig.URL", wantIs: broker.ErrUnavailable, mustHide: "s3cret"},
	}
	for _, c := range cases {
		_, err := broker.NewRedis(ctx, broker.RedisConfig{URL: c.url})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("NewRedis(%q) = %v, want an error naming %s", c.url, err, c.want)
			continue
		}
		if c.wantIs != nil && !errors.Is(err, c.wantIs) {
			t.Errorf("NewRedis(%q) = %v, want %v", c.url, err, c.wantIs)
		}
		if c.mustHide != "" && strings.Contains(err.Error(), c.mustHide) {
			t.Errorf("NewRedis(%q) = %v: the password leaks", c.url, err)
		}
	}

	// Lazy does not wait for Redis: calls fail with ErrUnavailable.
	lazy, err := broker.NewRedis(ctx, broker.RedisConfig{URL: "redis://" + closed, Lazy: true})
	if err != nil {
		t.Fatalf("lazy NewRedis of a closed port: %v", err)
	}
	defer lazy.Close()
	if err := lazy.Ping(ctx); !errors.Is(err, broker.ErrUnavailable) {
		t.Errorf("lazy broker's Ping of a closed port = %v, want ErrUnavailable", err)
	}
}

// TestRedisSubscriptionsSurviveReconnects: Subscribe and Unsubscribe run
// while Redis keeps killing the node's pub/sub connection. Once the kills
// stop, Redis holds a subscription exactly for the topics whose count is
// positive, and those receive what is published.
func TestRedisSubscriptionsSurviveReconnects(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := startRedis(t)
	admin := srv.Client(t)
	var col collector
	n := newRedisNode(t, srv, broker.RedisConfig{}, col.handle)
	t.Cleanup(func() { _ = n.Close() })

	var kills, failed atomic.Int64
	stopKills := make(chan struct{})
	killsDone := make(chan struct{})
	go func() {
		defer close(killsDone)
		for i := 0; ; i++ {
			select {
			case <-stopKills:
				return
			default:
			}
			if killed, _ := admin.ClientKillByFilter(ctx, "TYPE", "pubsub").Result(); killed > 0 {
				kills.Add(1)
			}
			// Let some commands through between kills.
			for range i % 5 {
				_ = admin.Ping(ctx).Err()
			}
		}
	}()

	const workers, rounds = 8, 100
	counts := make([]int, workers) // counts[w]: references worker w holds on its topic
	topicOf := func(w int) string { return fmt.Sprintf("reconnects/%d", w) }
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			// Each round takes the count from 0 to 1 and back, a Redis
			// round trip each way; even workers end with one reference.
			for i := range rounds {
				if err := n.Subscribe(ctx, topicOf(w)); err == nil {
					counts[w]++
				} else if failed.Add(1); !errors.Is(err, broker.ErrUnavailable) {
					t.Errorf("Subscribe: %v", err) // failing while connections die is fine, but only so
				}
				if counts[w] > 0 && (w%2 == 1 || i < rounds-1) {
					if err := n.Unsubscribe(ctx, topicOf(w)); err != nil {
						t.Errorf("Unsubscribe: %v", err)
					}
					counts[w]--
				}
			}
		})
	}
	wg.Wait()
	close(stopKills)
	<-killsDone
	if t.Failed() {
		return
	}
	t.Logf("%d pub/sub connections killed, %d of %d Subscribe calls failed", kills.Load(), failed.Load(), workers*rounds)
	if kills.Load() == 0 {
		t.Fatal("no pub/sub connection was killed: the test exercised nothing")
	}
	for w := range workers {
		want := 0
		if counts[w] > 0 {
			want = 1
		}
		testenv.Eventually(t, redisWait, func() bool { return numSub(t, admin, topicOf(w)) == want },
			"topic %q: NUMSUB %d, want %d (count %d)", topicOf(w), numSub(t, admin, topicOf(w)), want, counts[w])
		if want == 1 {
			col.waitFor(t, topicOf(w), "after the kills", position(mustPublish(t, n, topicOf(w))))
		}
	}
}

// TestRedisSubscribeRefused: a Redis user not allowed on a topic's channel
// gets an error from Subscribe, not a silent subscription; allowed topics
// keep working.
func TestRedisSubscribeRefused(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := startRedis(t)
	admin := srv.Client(t)
	if err := admin.Do(ctx, "ACL", "SETUSER", "limited", "on", ">pw", "~*", "&updraft:msg:{ok/*", "+@all").Err(); err != nil {
		t.Fatal(err)
	}
	var col collector
	n, err := broker.NewRedis(ctx, broker.RedisConfig{
		URL:    "redis://limited:pw@" + srv.Addr() + "/0",
		Logger: zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)),
	})
	if err != nil {
		t.Fatal(err)
	}
	n.RegisterEventHandler(col.handle, nil)
	t.Cleanup(func() { _ = n.Close() })

	if err := n.Subscribe(ctx, "denied/x"); err == nil || !strings.Contains(err.Error(), "NOPERM") {
		t.Fatalf("Subscribe to a denied channel = %v, want a NOPERM error", err)
	}
	if err := n.Unsubscribe(ctx, "denied/x"); !errors.Is(err, broker.ErrNotSubscribed) {
		t.Fatalf("Unsubscribe after a refused Subscribe = %v, want ErrNotSubscribed", err)
	}
	if err := n.Subscribe(ctx, "ok/x"); err != nil {
		t.Fatal(err)
	}
	col.waitFor(t, "ok/x", "on the allowed topic", position(mustPublish(t, n, "ok/x")))
}

// seqLog is a Handler for one topic that keeps the seqs it receives and
// can stall: while held, it blocks after recording a message, and so does
// the node's receive loop.
type seqLog struct {
	mu    sync.Mutex
	epoch string        // guarded by mu: of the first message
	seqs  []uint64      // guarded by mu
	wrong []string      // guarded by mu: messages of another topic or epoch
	wait  chan struct{} // guarded by mu: non-nil while held

	stalled chan struct{} // signalled when the Handler starts blocking
}

func newSeqLog() *seqLog { return &seqLog{stalled: make(chan struct{}, 1)} }

func (l *seqLog) handle(m broker.Message) {
	l.mu.Lock()
	if l.epoch == "" {
		l.epoch = m.Epoch
	}
	if m.Epoch != l.epoch {
		l.wrong = append(l.wrong, fmt.Sprintf("%s %+v", m.Topic, m.Position))
	}
	l.seqs = append(l.seqs, m.Seq)
	wait := l.wait
	l.mu.Unlock()
	if wait != nil {
		select {
		case l.stalled <- struct{}{}:
		default:
		}
		<-wait
	}
}

// hold makes the next Handler call block until release.
func (l *seqLog) hold() {
	l.mu.Lock()
	l.wait = make(chan struct{})
	l.mu.Unlock()
}

func (l *seqLog) release() {
	l.mu.Lock()
	if l.wait != nil {
		close(l.wait)
		l.wait = nil
	}
	l.mu.Unlock()
}

// waitStalled returns once the Handler blocks.
func (l *seqLog) waitStalled(t *testing.T) {
	t.Helper()
	select {
	case <-l.stalled:
	case <-time.After(redisWait):
		t.Fatal("the Handler did not block")
	}
}

func (l *seqLog) last() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.seqs) == 0 {
		return 0
	}
	return l.seqs[len(l.seqs)-1]
}

// waitSeq waits until the Handler received seq, or anything after it.
func (l *seqLog) waitSeq(t *testing.T, seq uint64) {
	t.Helper()
	testenv.Eventually(t, redisWait, func() bool { return l.last() >= seq },
		"seq %d not delivered; last delivered %d", seq, l.last())
}

// check fails t unless the Handler received exactly want, in one epoch.
func (l *seqLog) check(t *testing.T, want []uint64) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.wrong) > 0 {
		t.Fatalf("messages of another epoch: %v", l.wrong)
	}
	if !slices.Equal(l.seqs, want) {
		t.Fatalf("delivered %d seqs %s, want %d: %s", len(l.seqs), compact(l.seqs), len(want), compact(want))
	}
}

// span returns lo..hi.
func span(lo, hi uint64) []uint64 {
	var out []uint64
	for s := lo; s <= hi; s++ {
		out = append(out, s)
	}
	return out
}

// compact prints seqs as runs: "1-5 7 9-12".
func compact(seqs []uint64) string {
	var b strings.Builder
	for i := 0; i < len(seqs); {
		j := i
		for j+1 < len(seqs) && seqs[j+1] == seqs[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		if j == i {
			fmt.Fprintf(&b, "%d", seqs[i])
		} else {
			fmt.Fprintf(&b, "%d-%d", seqs[i], seqs[j])
		}
		i = j + 1
	}
	return b.String()
}

// gapCounts counts what OnGapFilled and OnGapUnfillable report.
type gapCounts struct {
	filled, unfillable atomic.Int64
}

func (g *gapCounts) config(cfg broker.RedisConfig) broker.RedisConfig {
	cfg.OnGapFilled = func(_ string, n int) { g.filled.Add(int64(n)) }
	cfg.OnGapUnfillable = func(_ string, n int) { g.unfillable.Add(int64(n)) }
	return cfg
}

// killPubSub kills the pub/sub connections, retrying while there is none
// (one being re-established).
func killPubSub(t *testing.T, admin *redis.Client) {
	t.Helper()
	testenv.Eventually(t, redisWait, func() bool {
		killed, err := admin.ClientKillByFilter(context.Background(), "TYPE", "pubsub").Result()
		if err != nil {
			t.Fatalf("CLIENT KILL TYPE pubsub: %v", err)
		}
		return killed > 0
	}, "no pub/sub connection to kill")
}

// TestRedisNoLossPubSubKilled: while a node publishes at a steady rate,
// Redis kills the subscribing node's pub/sub connection again and again;
// its Handler still receives every seq once, in order.
func TestRedisNoLossPubSubKilled(t *testing.T) {
	t.Parallel()
	const total, publishers, kills = 20000, 4, 6
	srv := startRedis(t)
	admin := srv.Client(t)
	topic := "noloss/killed"
	log := newSeqLog()
	var gaps gapCounts
	reg := prometheus.NewRegistry()
	retention := broker.Retention{Size: total + 1} // whatever the timing, nothing is unfillable
	sub := newRedisNode(t, srv, gaps.config(broker.RedisConfig{
		Retention: retention,
		Metrics:   broker.NewMetrics(reg),
	}), log.handle)
	t.Cleanup(func() { _ = sub.Close() })
	pub := newRedisNode(t, srv, broker.RedisConfig{Retention: retention}, nil)
	t.Cleanup(func() { _ = pub.Close() })
	if err := sub.Subscribe(context.Background(), topic); err != nil {
		t.Fatal(err)
	}

	var next, published atomic.Int64
	var wg sync.WaitGroup
	for range publishers {
		wg.Go(func() {
			for next.Add(1) <= total {
				if _, err := pub.Publish(context.Background(), topic, broker.Publication{Event: "e", Data: json.RawMessage(`{"x":1}`)}); err != nil {
					t.Errorf("Publish: %v", err)
					return
				}
				published.Add(1)
			}
		})
	}
	// Kill at evenly spaced points of the stream, while it flows.
	for k := 1; k <= kills; k++ {
		at := int64(k * total / (kills + 1))
		testenv.Eventually(t, redisWait, func() bool { return published.Load() >= at || t.Failed() },
			"kill %d: %d of %d published", k, published.Load(), at)
		killPubSub(t, admin)
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	log.waitSeq(t, total)
	last := mustPublish(t, pub, topic)
	log.waitSeq(t, last.Seq)
	log.check(t, span(1, total+1))
	errs := broker.MetricValue(reg, "updraft_redis_errors_total")
	t.Logf("%d kills: %d messages filled from history, %d unfillable, %v errors counted",
		kills, gaps.filled.Load(), gaps.unfillable.Load(), errs)
	if gaps.unfillable.Load() != 0 {
		t.Fatalf("%d messages reported unfillable, want 0", gaps.unfillable.Load())
	}
	if filled := broker.MetricValue(reg, "updraft_gap_messages_filled_total"); filled != float64(gaps.filled.Load()) {
		t.Fatalf("updraft_gap_messages_filled_total = %v, want the %d reported to OnGapFilled", filled, gaps.filled.Load())
	}
	if errs == 0 {
		t.Fatal("no connection error reported: the kills exercised nothing")
	}
}

// TestRedisNoLossOutputBufferLimit: a subscriber too slow for its pub/sub
// output buffer limit is disconnected by Redis; the node fills what the
// connection lost from history.
func TestRedisNoLossOutputBufferLimit(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const maxMessages, after = 2000, 20
	srv := startRedis(t)
	admin := srv.Client(t)
	limit, err := admin.ConfigGet(ctx, "client-output-buffer-limit").Result()
	if err != nil {
		t.Fatal(err)
	}
	if err := admin.ConfigSet(ctx, "client-output-buffer-limit", "pubsub 64kb 32kb 1").Err(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := admin.ConfigSet(context.Background(), "client-output-buffer-limit", limit["client-output-buffer-limit"]).Err(); err != nil {
			t.Errorf("restoring client-output-buffer-limit: %v", err)
		}
	})

	topic := "noloss/obuf"
	retention := broker.Retention{Size: maxMessages + after + 1}
	log := newSeqLog()
	var gaps gapCounts
	sub := newRedisNode(t, srv, gaps.config(broker.RedisConfig{Retention: retention}), log.handle)
	t.Cleanup(func() { _ = sub.Close() })
	pub := newRedisNode(t, srv, broker.RedisConfig{Retention: retention}, nil)
	t.Cleanup(func() { _ = pub.Close() })
	if err := sub.Subscribe(ctx, topic); err != nil {
		t.Fatal(err)
	}
	log.waitSeq(t, mustPublish(t, pub, topic).Seq)

	// Stall the subscriber and publish large messages until Redis drops
	// it: its subscription disappears.
	log.hold()
	defer log.release()
	big := json.RawMessage(`"` + strings.Repeat("x", 32<<10) + `"`)
	var seq uint64
	for i := 0; numSub(t, admin, topic) > 0; i++ {
		if i == maxMessages {
			t.Fatalf("still subscribed after %d messages of %d bytes", i, len(big))
		}
		pos, err := pub.Publish(ctx, topic, broker.Publication{Event: "big", Data: big})
		if err != nil {
			t.Fatal(err)
		}
		seq = pos.Seq
	}
	for range after { // lost for sure: nobody is subscribed
		seq = mustPublish(t, pub, topic).Seq
	}
	t.Logf("disconnected after %d messages", seq-after-1)
	log.release()

	log.waitSeq(t, seq)
	last := mustPublish(t, pub, topic)
	log.waitSeq(t, last.Seq)
	log.check(t, span(1, last.Seq))
	if gaps.filled.Load() < after || gaps.unfillable.Load() != 0 {
		t.Fatalf("gaps: %d filled, %d unfillable; want at least %d filled, none unfillable",
			gaps.filled.Load(), gaps.unfillable.Load(), after)
	}
}

// TestRedisFillAfterReconnect: messages published while the node's pub/sub
// connection was down, with nothing published after, are filled by the
// check that follows the reconnection, not left for the periodic check
// (here never due). History holds only the newest of them: the rest is
// reported unfillable, and delivery goes on in order.
func TestRedisFillAfterReconnect(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const size, lost = 10, 38
	srv := startRedis(t)
	admin := srv.Client(t)
	topic := "noloss/reconnect"
	retention := broker.Retention{Size: size}
	log := newSeqLog()
	var gaps gapCounts
	sub := newRedisNode(t, srv, gaps.config(broker.RedisConfig{
		Retention: retention, CheckInterval: time.Hour,
	}), log.handle)
	t.Cleanup(func() { _ = sub.Close() })
	pub := newRedisNode(t, srv, broker.RedisConfig{Retention: retention}, nil)
	t.Cleanup(func() { _ = pub.Close() })
	if err := sub.Subscribe(ctx, topic); err != nil {
		t.Fatal(err)
	}
	log.waitSeq(t, mustPublish(t, pub, topic).Seq)

	// Stall the receive loop on seq 2, kill its connection, publish.
	log.hold()
	defer log.release()
	mustPublish(t, pub, topic)
	log.waitStalled(t)
	killPubSub(t, admin)
	testenv.Eventually(t, redisWait, func() bool { return numSub(t, admin, topic) == 0 }, "still subscribed after the kill")
	var seq uint64
	for range lost {
		seq = mustPublish(t, pub, topic).Seq
	}
	log.release()

	log.waitSeq(t, seq)
	want := append([]uint64{1, 2}, span(seq-size+1, seq)...)
	log.check(t, want)
	if f, u := gaps.filled.Load(), gaps.unfillable.Load(); f != size || u != lost-size {
		t.Fatalf("gaps: %d filled, %d unfillable; want %d and %d", f, u, size, lost-size)
	}
	next := mustPublish(t, pub, topic)
	log.waitSeq(t, next.Seq)
	log.check(t, append(want, next.Seq))
}
