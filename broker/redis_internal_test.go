package broker

import (
	"context"
	"encoding/json"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/updraft/updraft/internal/testenv"
)

const internalWait = 15 * time.Second

// handled keeps the seqs a Handler receives.
type handled struct {
	mu   sync.Mutex
	seqs []uint64 // guarded by mu
}

func (h *handled) handle(m Message) {
	h.mu.Lock()
	h.seqs = append(h.seqs, m.Seq)
	h.mu.Unlock()
}

func (h *handled) get() []uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.seqs)
}

func (h *handled) last() uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.seqs) == 0 {
		return 0
	}
	return h.seqs[len(h.seqs)-1]
}

func (h *handled) waitSeq(t *testing.T, seq uint64) {
	t.Helper()
	testenv.Eventually(t, internalWait, func() bool { return h.last() >= seq },
		"seq %d not delivered; delivered %v", seq, h.get())
}

func seqRange(lo, hi uint64) []uint64 {
	var out []uint64
	for s := lo; s <= hi; s++ {
		out = append(out, s)
	}
	return out
}

// gapHooks sums what OnGapFilled and OnGapUnfillable report.
type gapHooks struct{ filled, unfillable atomic.Int64 }

func (g *gapHooks) set(cfg *RedisConfig) {
	cfg.OnGapFilled = func(_ string, n int) { g.filled.Add(int64(n)) }
	cfg.OnGapUnfillable = func(_ string, n int) { g.unfillable.Add(int64(n)) }
}

func startNode(t *testing.T, srv *testenv.Redis, cfg RedisConfig, h Handler) *Redis {
	t.Helper()
	cfg.URL = srv.URL()
	ctx, cancel := context.WithTimeout(context.Background(), internalWait)
	defer cancel()
	r, err := NewRedis(ctx, cfg)
	if err != nil {
		t.Fatalf("NewRedis: %v", err)
	}
	r.RegisterEventHandler(h, nil)
	t.Cleanup(func() { _ = r.Close() })
	return r
}

func publishN(t *testing.T, r *Redis, topic string, n int) Position {
	t.Helper()
	var pos Position
	for range n {
		var err error
		pos, err = r.Publish(context.Background(), topic, Publication{Event: "e", Data: json.RawMessage(`{}`)})
		if err != nil {
			t.Fatalf("Publish: %v", err)
		}
	}
	return pos
}

func waitNumSub(t *testing.T, admin *redis.Client, topic string, want int64) {
	t.Helper()
	got := func() int64 {
		res, err := admin.PubSubNumSub(context.Background(), channelName(topic)).Result()
		if err != nil {
			t.Fatalf("PUBSUB NUMSUB: %v", err)
		}
		return res[channelName(topic)]
	}
	testenv.Eventually(t, internalWait, func() bool { return got() == want },
		"topic %q: NUMSUB %d, want %d", topic, got(), want)
}

// dropSubscription makes Redis drop the node's subscription to topic while
// the connection lives on and the node still counts it: messages are
// published, and silently not delivered.
func dropSubscription(t *testing.T, r *Redis, admin *redis.Client, topic string) {
	t.Helper()
	if err := r.ps.Unsubscribe(context.Background(), channelName(topic)); err != nil {
		t.Fatalf("UNSUBSCRIBE: %v", err)
	}
	waitNumSub(t, admin, topic, 0)
}

// TestRedisCheckFillsLostSubscription: the node's subscription disappears
// while publishes succeed; the periodic check delivers the messages from
// history, reports them, and subscribes again. The first time it happens
// right after Subscribe, before any message: the baseline Subscribe read
// is what shows the topic behind.
func TestRedisCheckFillsLostSubscription(t *testing.T) {
	t.Parallel()
	srv := testenv.StartRedis(t)
	admin := srv.Client(t)
	var h handled
	var gaps gapHooks
	cfg := RedisConfig{CheckInterval: 20 * time.Millisecond}
	gaps.set(&cfg)
	r := startNode(t, srv, cfg, h.handle)
	topic := "lost/subscription"
	if err := r.Subscribe(context.Background(), topic); err != nil {
		t.Fatal(err)
	}

	var want []uint64
	for round, n := range []int{20, 30} {
		dropSubscription(t, r, admin, topic)
		before := gaps.filled.Load()
		pos := publishN(t, r, topic, n)
		h.waitSeq(t, pos.Seq)
		want = append(want, seqRange(pos.Seq-uint64(n)+1, pos.Seq)...)
		if got := h.get(); !slices.Equal(got, want) {
			t.Fatalf("round %d: delivered %v, want %v", round, got, want)
		}
		// The first messages, at least, came from history; once the check
		// subscribed again, later ones may have come live.
		if f := gaps.filled.Load() - before; f < 1 || f > int64(n) {
			t.Fatalf("round %d: OnGapFilled reported %d, want 1..%d", round, f, n)
		}
		waitNumSub(t, admin, topic, 1) // the check subscribed again
	}
	pos := publishN(t, r, topic, 1)
	h.waitSeq(t, pos.Seq)
	if got := h.get(); !slices.Equal(got, append(want, pos.Seq)) {
		t.Fatalf("delivered %v after the repair, want %v then %d", got, want, pos.Seq)
	}
	if u := gaps.unfillable.Load(); u != 0 {
		t.Fatalf("OnGapUnfillable reported %d, want 0", u)
	}
}

// TestRedisLiveGapUnfillable: a live message reveals a gap larger than
// history; what history holds is delivered, the rest reported unfillable,
// then the message itself and the ones after.
func TestRedisLiveGapUnfillable(t *testing.T) {
	t.Parallel()
	const size, lost = 10, 30
	srv := testenv.StartRedis(t)
	admin := srv.Client(t)
	var h handled
	var gaps gapHooks
	cfg := RedisConfig{Retention: Retention{Size: size}, CheckInterval: time.Hour}
	gaps.set(&cfg)
	r := startNode(t, srv, cfg, h.handle)
	topic := "lost/unfillable"
	if err := r.Subscribe(context.Background(), topic); err != nil {
		t.Fatal(err)
	}
	h.waitSeq(t, publishN(t, r, topic, 1).Seq)

	dropSubscription(t, r, admin, topic)
	publishN(t, r, topic, lost) // seqs 2..31
	if err := r.ps.Subscribe(context.Background(), channelName(topic)); err != nil {
		t.Fatal(err)
	}
	waitNumSub(t, admin, topic, 1)
	pos := publishN(t, r, topic, 1) // seq 32: history holds 23..32
	h.waitSeq(t, pos.Seq)
	want := append([]uint64{1}, seqRange(pos.Seq-size+1, pos.Seq)...)
	if got := h.get(); !slices.Equal(got, want) {
		t.Fatalf("delivered %v, want %v", got, want)
	}
	if f, u := gaps.filled.Load(), gaps.unfillable.Load(); f != size-1 || u != lost-(size-1) {
		t.Fatalf("gaps: %d filled, %d unfillable; want %d and %d", f, u, size-1, lost-(size-1))
	}
	pos = publishN(t, r, topic, 1)
	h.waitSeq(t, pos.Seq)
	if got := h.get(); !slices.Equal(got, append(want, pos.Seq)) {
		t.Fatalf("delivered %v, want %v then %d", got, want, pos.Seq)
	}
}

// TestRedisAdvance covers the live messages that are dropped or delivered
// without a read from history.
func TestRedisAdvance(t *testing.T) {
	t.Parallel()
	type state struct {
		based      bool
		epoch      string
		last       uint64
		retired    string
		fillFailed bool
	}
	cases := []struct {
		name      string
		sub       state
		msg       Position
		delivered bool
		after     Position // the sub's epoch and last afterwards
	}{
		{"next", state{based: true, epoch: "E", last: 4}, Position{"E", 5}, true, Position{"E", 5}},
		{"duplicate", state{based: true, epoch: "E", last: 4}, Position{"E", 4}, false, Position{"E", 4}},
		{"older", state{based: true, epoch: "E", last: 4}, Position{"E", 2}, false, Position{"E", 4}},
		{"new epoch", state{based: true, epoch: "E", last: 4}, Position{"F", 1}, true, Position{"F", 1}},
		{"first epoch", state{based: true}, Position{"F", 1}, true, Position{"F", 1}},
		{"no baseline", state{}, Position{"F", 7}, true, Position{"F", 7}},
		{"retired epoch", state{based: true, epoch: "F", last: 2, retired: "E"}, Position{"E", 9}, false, Position{"F", 2}},
		{"fill failed", state{based: true, epoch: "E", last: 4, fillFailed: true}, Position{"E", 5}, false, Position{"E", 4}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var h handled
			r := &Redis{handler: h.handle}
			s := &redisSub{based: c.sub.based, epoch: c.sub.epoch, last: c.sub.last, retired: c.sub.retired, fillFailed: c.sub.fillFailed}
			s.mu.Lock()
			r.advance(s, Message{Topic: "t", Position: c.msg})
			s.mu.Unlock()
			if got := len(h.get()) == 1; got != c.delivered {
				t.Fatalf("delivered %v, want %v", got, c.delivered)
			}
			if got := (Position{s.epoch, s.last}); got != c.after {
				t.Fatalf("sub at %+v, want %+v", got, c.after)
			}
		})
	}
}

// TestRedisRefusedReconnectBacksOff: when the pub/sub connection comes back
// to a Redis that refuses it (the password changed while the node ran),
// each attempt is an error reply, and the receive loop waits between them
// as it does between failed dials instead of retrying at once, which spun
// a core and flooded the log.
func TestRedisRefusedReconnectBacksOff(t *testing.T) {
	ctx := context.Background()
	srv := testenv.StartRedis(t)
	admin := srv.Client(t)
	if err := admin.Do(ctx, "ACL", "SETUSER", "node", "on", ">pw", "~*", "&*", "+@all").Err(); err != nil {
		t.Fatal(err)
	}
	r, err := NewRedis(ctx, RedisConfig{URL: "redis://node:pw@" + srv.Addr() + "/0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	if err := r.Subscribe(ctx, "chat/x"); err != nil {
		t.Fatal(err)
	}
	// The password changes and the node's connections are cut: every
	// reconnect is refused (WRONGPASS).
	if err := admin.Do(ctx, "ACL", "SETUSER", "node", "resetpass", ">other").Err(); err != nil {
		t.Fatal(err)
	}
	if err := admin.Do(ctx, "CLIENT", "KILL", "USER", "node").Err(); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, internalWait, func() bool { return r.refusals.Load() > 0 }, "no refused reconnect seen")
	// A rate, so a window: without a pause between attempts there are
	// thousands in it (a dial and an AUTH each); with the backoff, which
	// reaches its one-second ceiling after seven attempts, a handful.
	start := r.refusals.Load()
	window := time.NewTimer(time.Second)
	<-window.C
	if n := r.refusals.Load() - start; n > 20 {
		t.Fatalf("%d refused reconnects in one second: the receive loop does not back off", n)
	}
}
