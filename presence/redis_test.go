package presence_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/updraft/updraft/internal/testenv"
	"github.com/updraft/updraft/presence"
	"github.com/updraft/updraft/presence/presencetest"
)

const redisWait = 15 * time.Second

// newRedis makes a Redis store on srv, closed when the test ends.
func newRedis(tb testing.TB, srv *testenv.Redis, now func() time.Time) *presence.Redis {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), redisWait)
	defer cancel()
	s, err := presence.NewRedis(ctx, presence.RedisConfig{URL: srv.URL(), Now: now})
	if err != nil {
		tb.Fatalf("NewRedis: %v", err)
	}
	tb.Cleanup(func() { _ = s.Close() })
	return s
}

// TestRedis runs the suite on one server: every store made shares it, as
// the nodes of a cluster do; the cases keep apart by topic.
func TestRedis(t *testing.T) {
	t.Parallel()
	srv := testenv.StartRedis(t)
	presencetest.Run(t, presencetest.Factory{
		New: func(tb testing.TB, cfg presencetest.Config) presence.Store {
			return newRedis(tb, srv, cfg.Now)
		},
		MultiNode: true,
	})
}

// roundTrips counts the commands a client sends alone and the pipelines
// it sends, each one round trip, leaving out the set-up of a new
// connection (HELLO, CLIENT SETINFO): dialing is not the caller's doing.
type roundTrips struct {
	singles, pipelines, pipelined atomic.Int64
}

// setup reports whether cmd belongs to a connection's set-up.
func setup(cmd redis.Cmder) bool {
	switch cmd.Name() {
	case "hello", "client", "auth", "select":
		return true
	}
	return false
}

func (*roundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }

func (c *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if !setup(cmd) {
			c.singles.Add(1)
		}
		return next(ctx, cmd)
	}
}

func (c *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if len(cmds) > 0 && !setup(cmds[0]) {
			c.pipelines.Add(1)
			c.pipelined.Add(int64(len(cmds)))
		}
		return next(ctx, cmds)
	}
}

// TestRedisHeartbeatOneRoundTrip checks the cost of a heartbeat: one
// pipeline however many topics and members, with one ZADD, one ZMSCORE and
// one PEXPIRE per key of each topic, as Redis itself counts them.
func TestRedisHeartbeatOneRoundTrip(t *testing.T) {
	t.Parallel()
	const (
		topics   = 40
		perTopic = 25
	)
	srv := testenv.StartRedis(t)
	admin := srv.Client(t)
	clk := presencetest.NewClock()
	s := newRedis(t, srv, clk.Now)
	ctx := context.Background()

	var entries []presence.Entry
	for i := range topics {
		topic := fmt.Sprintf("hb/%d", i)
		for j := range perTopic {
			conn := fmt.Sprintf("c%d", j)
			if _, err := s.Track(ctx, topic, presence.Member{Key: "k", Conn: conn, Joined: int64(j)}, "n1", 10*time.Second); err != nil {
				t.Fatal(err)
			}
			entries = append(entries, presence.Entry{Topic: topic, Conn: conn})
		}
	}
	if err := admin.ConfigResetStat(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	var rt roundTrips
	s.AddHook(&rt)
	clk.Advance(5 * time.Second)
	if missing, err := s.Heartbeat(ctx, "n1", entries, 10*time.Second); err != nil || len(missing) != 0 {
		t.Fatalf("Heartbeat = %v missing, %v", missing, err)
	}
	if rt.singles.Load() != 0 || rt.pipelines.Load() != 1 {
		t.Fatalf("Heartbeat sent %d single commands and %d pipelines, want 0 and 1", rt.singles.Load(), rt.pipelines.Load())
	}
	// Per topic, whatever its number of members: ZADD, ZMSCORE, and two
	// PEXPIREs.
	if want := int64(4 * topics); rt.pipelined.Load() != want {
		t.Errorf("pipeline of %d commands, want %d", rt.pipelined.Load(), want)
	}
	stats := commandStats(t, admin)
	if stats["zadd"] != topics || stats["zmscore"] != topics || stats["pexpire"] != 2*topics {
		t.Errorf("Redis counted %d ZADD, %d ZMSCORE and %d PEXPIRE, want %d, %d and %d",
			stats["zadd"], stats["zmscore"], stats["pexpire"], topics, topics, 2*topics)
	}

	// The heartbeat took: past the Track's expiry every member is live.
	clk.Advance(6 * time.Second)
	for i := range topics {
		ms, err := s.Members(ctx, fmt.Sprintf("hb/%d", i))
		if err != nil {
			t.Fatal(err)
		}
		if len(ms) != perTopic {
			t.Fatalf("topic %d: %d members after the heartbeat, want %d", i, len(ms), perTopic)
		}
	}
}

// commandStats returns the calls of each command since the last CONFIG
// RESETSTAT, by lower-case name.
func commandStats(t *testing.T, admin *redis.Client) map[string]int {
	t.Helper()
	info, err := admin.InfoMap(context.Background(), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]int)
	for k, v := range info["Commandstats"] {
		var calls int
		if _, err := fmt.Sscanf(v, "calls=%d", &calls); err == nil {
			out[k[len("cmdstat_"):]] = calls
		}
	}
	return out
}

// TestRedisLayout checks the keys a topic uses, their hash tag, the stored
// owner and the safety-net TTL.
func TestRedisLayout(t *testing.T) {
	t.Parallel()
	srv := testenv.StartRedis(t)
	admin := srv.Client(t)
	s := newRedis(t, srv, nil)
	ctx := context.Background()
	const topic = "doc/42"
	if _, err := s.Track(ctx, topic, presence.Member{Key: "user-7", Conn: "s_abc", State: json.RawMessage(`{"name":"Sarah"}`), Joined: 1764170000000}, "node-1", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	mk, ek := presence.MembersKey(topic), presence.ExpiryKey(topic)
	if mk != "updraft:{doc/42}:presence" || ek != "updraft:{doc/42}:presence:exp" {
		t.Fatalf("keys %q, %q", mk, ek)
	}
	v, err := admin.HGet(ctx, mk, "s_abc").Result()
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"key":"user-7","conn":"s_abc","node":"node-1","state":{"name":"Sarah"},"joined":1764170000000}`; v != want {
		t.Errorf("stored member %s, want %s", v, want)
	}
	for _, k := range []string{mk, ek} {
		d, err := admin.PTTL(ctx, k).Result()
		if err != nil {
			t.Fatal(err)
		}
		if d <= 20*time.Second || d > 30*time.Second {
			t.Errorf("PTTL %s = %v, want about 3 × 10s", k, d)
		}
	}
	// A heartbeat for a conn that is not a member writes nothing.
	gone := presence.Entry{Topic: topic, Conn: "s_gone"}
	if missing, err := s.Heartbeat(ctx, "node-1", []presence.Entry{gone}, 10*time.Second); err != nil || len(missing) != 1 || missing[0] != gone {
		t.Fatalf("Heartbeat of a non-member = %v missing, %v; want it missing", missing, err)
	}
	if n, err := admin.ZCard(ctx, ek).Result(); err != nil || n != 1 {
		t.Errorf("ZCARD %s = %d, %v after a heartbeat of a non-member, want 1", ek, n, err)
	}
	if _, ok, err := s.Untrack(ctx, topic, "s_abc"); err != nil || !ok {
		t.Fatalf("Untrack = %v, %v", ok, err)
	}
	if n, err := admin.Exists(ctx, mk, ek).Result(); err != nil || n != 0 {
		t.Errorf("keys left after the last member left: %d, %v", n, err)
	}
}

// TestRedisUnavailable checks that a store whose Redis is gone fails with
// ErrUnavailable, that NewRedis refuses an unreachable Redis, and that a
// Lazy one starts without it.
func TestRedisUnavailable(t *testing.T) {
	t.Parallel()
	srv := testenv.StartRedis(t)
	s := newRedis(t, srv, nil)
	srv.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), redisWait)
	defer cancel()
	if _, err := s.Members(ctx, "t/1"); !errors.Is(err, presence.ErrUnavailable) {
		t.Errorf("Members with Redis down = %v, want ErrUnavailable", err)
	}
	if _, err := s.Heartbeat(ctx, "n1", []presence.Entry{{Topic: "t/1", Conn: "c"}}, time.Second); !errors.Is(err, presence.ErrUnavailable) {
		t.Errorf("Heartbeat with Redis down = %v, want ErrUnavailable", err)
	}
	if _, err := presence.NewRedis(ctx, presence.RedisConfig{URL: "redis://" + net.JoinHostPort("127.0.0.1", fmt.Sprint(testenv.FreePort(t)))}); !errors.Is(err, presence.ErrUnavailable) {
		t.Errorf("NewRedis of a closed port = %v, want ErrUnavailable", err)
	}
	if _, err := presence.NewRedis(ctx, presence.RedisConfig{}); err == nil {
		t.Error("NewRedis without a URL succeeded")
	}

	// Lazy: built while Redis is down, failing with ErrUnavailable until
	// Redis is up, then working.
	lazy, err := presence.NewRedis(ctx, presence.RedisConfig{URL: "redis://" + srv.Addr(), Lazy: true})
	if err != nil {
		t.Fatalf("lazy NewRedis with Redis down: %v", err)
	}
	defer lazy.Close()
	if _, err := lazy.Members(ctx, "t/1"); !errors.Is(err, presence.ErrUnavailable) {
		t.Errorf("lazy store's Members with Redis down = %v, want ErrUnavailable", err)
	}
	srv.Restart(t)
	if _, err := lazy.Members(ctx, "t/1"); err != nil {
		t.Errorf("lazy store's Members once Redis is up: %v", err)
	}
}

// BenchmarkRedisHeartbeat measures one node's heartbeat of 1,000 members
// spread over 1, 100 or 1,000 topics: its time, its Redis commands and its
// round trips (always one):
//
//	go test -run '^$' -bench RedisHeartbeat ./presence
func BenchmarkRedisHeartbeat(b *testing.B) {
	srv := testenv.StartRedis(b)
	for _, topics := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("topics=%d", topics), func(b *testing.B) {
			s := newRedis(b, srv, nil)
			ctx := context.Background()
			const members = 1000
			entries := make([]presence.Entry, 0, members)
			for i := 0; i < members; i++ {
				e := presence.Entry{Topic: fmt.Sprintf("bench/%d/%d", topics, i%topics), Conn: fmt.Sprintf("s_%d", i)}
				if _, err := s.Track(ctx, e.Topic, presence.Member{Key: "k", Conn: e.Conn}, "n1", time.Minute); err != nil {
					b.Fatal(err)
				}
				entries = append(entries, e)
			}
			var rt roundTrips
			s.AddHook(&rt)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if missing, err := s.Heartbeat(ctx, "n1", entries, time.Minute); err != nil || len(missing) != 0 {
					b.Fatalf("Heartbeat: %v missing, %v", len(missing), err)
				}
			}
			b.ReportMetric(float64(rt.pipelined.Load()+rt.singles.Load())/float64(b.N), "cmds/heartbeat")
			b.ReportMetric(float64(rt.pipelines.Load()+rt.singles.Load())/float64(b.N), "round-trips/heartbeat")
		})
	}
}
