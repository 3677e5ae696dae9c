// Package presencetest is the conformance suite of presence.Store. Every
// implementation runs the same suite, so the in-memory and Redis stores
// keep one contract:
//
//	func TestMemory(t *testing.T) {
//		presencetest.Run(t, presencetest.Factory{New: ...})
//	}
package presencetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/updraft/updraft/presence"
)

// Config is what the suite asks a Factory to make a store with.
type Config struct {
	// Now is the store's clock: the suite's fake one.
	Now func() time.Time
}

// Factory makes the stores under test.
type Factory struct {
	// New returns a new store with cfg, failing tb if it cannot. The suite
	// closes every store it makes.
	New func(tb testing.TB, cfg Config) presence.Store

	// MultiNode is a capability: the stores New makes share one backing
	// store, as the nodes of a cluster do. Without it the multi-node cases
	// run their nodes on one store.
	MultiNode bool
}

// Clock is a fake clock for the stores under test, safe for concurrent
// use. Its zero value reads the Unix epoch; New starts it at a fixed time.
type Clock struct{ ms atomic.Int64 }

// NewClock returns a Clock reading 2025-11-26T15:13:20Z.
func NewClock() *Clock {
	c := &Clock{}
	c.ms.Store(1764170000000)
	return c
}

// Now returns the clock's time.
func (c *Clock) Now() time.Time { return time.UnixMilli(c.ms.Load()) }

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) { c.ms.Add(d.Milliseconds()) }

// ttl is the membership ttl of the suite: the fake clock makes it pass.
const ttl = 10 * time.Second

// Run runs the conformance suite against f. Its cases run in parallel on
// distinct topics.
func Run(t *testing.T, f Factory) {
	t.Helper()
	if f.New == nil {
		t.Fatal("presencetest: Factory.New is nil")
	}
	cases := []struct {
		name string
		run  func(*testing.T, Factory)
	}{
		{"JoinThenUpdate", testJoinThenUpdate},
		{"JoinedDefaultsToNow", testJoinedDefaultsToNow},
		{"Untrack", testUntrack},
		{"MembersOrder", testMembersOrder},
		{"MembersExcludeExpired", testMembersExcludeExpired},
		{"HeartbeatExtends", testHeartbeatExtends},
		{"HeartbeatNeverAdds", testHeartbeatNeverAdds},
		{"RevivedBeforeSweep", testRevivedBeforeSweep},
		{"HeartbeatNeverShortens", testHeartbeatNeverShortens},
		{"SweepExactlyOnce", testSweepExactlyOnce},
		{"UntrackOrSweepOnce", testUntrackOrSweepOnce},
		{"StateRoundTrip", testStateRoundTrip},
		{"TopicsIndependent", testTopicsIndependent},
		{"InvalidArguments", testInvalidArguments},
		{"CanceledContext", testCanceledContext},
		{"Close", testClose},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			c.run(t, f)
		})
	}
}

// node makes a store on clk, closed when the test ends.
func node(t *testing.T, f Factory, clk *Clock) presence.Store {
	t.Helper()
	s := f.New(t, Config{Now: clk.Now})
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// nodes makes n stores on clk sharing one backing store: n of New when
// the factory is MultiNode, else one store n times.
func nodes(t *testing.T, f Factory, clk *Clock, n int) []presence.Store {
	t.Helper()
	out := make([]presence.Store, n)
	for i := range out {
		if i == 0 || f.MultiNode {
			out[i] = node(t, f, clk)
		} else {
			out[i] = out[0]
		}
	}
	return out
}

// topic returns a topic name unique to this run.
func topic(t *testing.T) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "presencetest/" + t.Name() + "/" + hex.EncodeToString(b[:])
}

func track(t *testing.T, s presence.Store, topic string, m presence.Member, node string) bool {
	t.Helper()
	joined, err := s.Track(context.Background(), topic, m, node, ttl)
	if err != nil {
		t.Fatalf("Track(%q, %+v): %v", topic, m, err)
	}
	return joined
}

func members(t *testing.T, s presence.Store, topic string) []presence.Member {
	t.Helper()
	ms, err := s.Members(context.Background(), topic)
	if err != nil {
		t.Fatalf("Members(%q): %v", topic, err)
	}
	return ms
}

func sweep(t *testing.T, s presence.Store, topic string, now time.Time) []presence.Member {
	t.Helper()
	ms, err := s.Sweep(context.Background(), topic, now)
	if err != nil {
		t.Fatalf("Sweep(%q): %v", topic, err)
	}
	return ms
}

// heartbeat runs a Heartbeat and returns the entries it found missing.
func heartbeat(t *testing.T, s presence.Store, entries ...presence.Entry) []presence.Entry {
	t.Helper()
	missing, err := s.Heartbeat(context.Background(), "n1", entries, ttl)
	if err != nil {
		t.Fatalf("Heartbeat: %v", err)
	}
	return missing
}

// equal compares members, State byte for byte.
func equal(a, b presence.Member) bool {
	return a.Key == b.Key && a.Conn == b.Conn && a.Joined == b.Joined && bytes.Equal(a.State, b.State)
}

func checkMembers(t *testing.T, what string, got []presence.Member, want ...presence.Member) {
	t.Helper()
	ok := len(got) == len(want)
	for i := 0; ok && i < len(got); i++ {
		ok = equal(got[i], want[i])
	}
	if !ok {
		t.Fatalf("%s:\n got %s\nwant %s", what, show(got), show(want))
	}
}

func show(ms []presence.Member) string {
	b, _ := json.Marshal(ms)
	return string(b)
}

func testJoinThenUpdate(t *testing.T, f Factory) {
	clk := NewClock()
	s := node(t, f, clk)
	tp := topic(t)
	m := presence.Member{Key: "user-7", Conn: "s_a", State: json.RawMessage(`{"name":"Sarah"}`), Joined: 1000}
	if !track(t, s, tp, m, "n1") {
		t.Fatal("first Track: joined false, want true")
	}
	checkMembers(t, "after join", members(t, s, tp), m)

	clk.Advance(time.Second)
	upd := presence.Member{Key: "user-8", Conn: "s_a", State: json.RawMessage(`{"name":"Sarah","typing":true}`), Joined: 5000}
	if track(t, s, tp, upd, "n1") {
		t.Fatal("second Track: joined true, want false (an update)")
	}
	want := upd
	want.Joined = 1000 // the first value stays
	checkMembers(t, "after update", members(t, s, tp), want)

	// An update may clear the state.
	upd.State = nil
	if track(t, s, tp, upd, "n1") {
		t.Fatal("third Track: joined true, want false")
	}
	want.State = nil
	checkMembers(t, "after clearing the state", members(t, s, tp), want)
}

func testJoinedDefaultsToNow(t *testing.T, f Factory) {
	clk := NewClock()
	s := node(t, f, clk)
	tp := topic(t)
	track(t, s, tp, presence.Member{Key: "k", Conn: "c"}, "n1")
	want := presence.Member{Key: "k", Conn: "c", Joined: clk.Now().UnixMilli()}
	clk.Advance(time.Second)
	track(t, s, tp, presence.Member{Key: "k", Conn: "c"}, "n1")
	checkMembers(t, "members", members(t, s, tp), want)
}

func testUntrack(t *testing.T, f Factory) {
	clk := NewClock()
	s := node(t, f, clk)
	tp := topic(t)
	ctx := context.Background()
	a := presence.Member{Key: "k", Conn: "a", State: json.RawMessage(`{"x":1}`), Joined: 1}
	b := presence.Member{Key: "k", Conn: "b", Joined: 2}
	track(t, s, tp, a, "n1")
	track(t, s, tp, b, "n1")

	got, ok, err := s.Untrack(ctx, tp, "a")
	if err != nil || !ok || !equal(got, a) {
		t.Fatalf("Untrack(a) = %+v, %v, %v; want %+v, true, nil", got, ok, err, a)
	}
	checkMembers(t, "after untrack", members(t, s, tp), b)
	if got, ok, err := s.Untrack(ctx, tp, "a"); err != nil || ok {
		t.Fatalf("second Untrack(a) = %+v, %v, %v; want false, nil", got, ok, err)
	}
	if _, ok, err := s.Untrack(ctx, tp, "never"); err != nil || ok {
		t.Fatalf("Untrack of a conn never tracked = %v, %v; want false, nil", ok, err)
	}
	if _, ok, err := s.Untrack(ctx, topic(t), "b"); err != nil || ok {
		t.Fatalf("Untrack on an unknown topic = %v, %v; want false, nil", ok, err)
	}
	// Tracking again after untrack is a new join with a new Joined.
	a.Joined = 50
	if !track(t, s, tp, a, "n1") {
		t.Fatal("Track after Untrack: joined false, want true")
	}
	checkMembers(t, "after tracking again", members(t, s, tp), b, a)
	// An untracked member is never swept.
	if _, ok, err := s.Untrack(ctx, tp, "b"); err != nil || !ok {
		t.Fatalf("Untrack(b) = %v, %v", ok, err)
	}
	checkMembers(t, "sweep after untrack", sweep(t, s, tp, clk.Now().Add(time.Hour)), a)
}

func testMembersOrder(t *testing.T, f Factory) {
	clk := NewClock()
	s := node(t, f, clk)
	tp := topic(t)
	want := []presence.Member{
		{Key: "k1", Conn: "z", Joined: 10},
		{Key: "k2", Conn: "a", Joined: 20},
		{Key: "k1", Conn: "b", Joined: 20},
		{Key: "k3", Conn: "c", Joined: 20},
		{Key: "k2", Conn: "d", Joined: 30},
	}
	for _, i := range []int{3, 4, 0, 2, 1} {
		track(t, s, tp, want[i], "n1")
	}
	checkMembers(t, "members", members(t, s, tp), want...)
	if ms := members(t, s, topic(t)); len(ms) != 0 {
		t.Fatalf("members of an empty topic: %s", show(ms))
	}
}

func testMembersExcludeExpired(t *testing.T, f Factory) {
	clk := NewClock()
	s := node(t, f, clk)
	tp := topic(t)
	old := presence.Member{Key: "k", Conn: "old", Joined: 1}
	track(t, s, tp, old, "n1")
	clk.Advance(ttl / 2)
	young := presence.Member{Key: "k", Conn: "young", Joined: 2}
	track(t, s, tp, young, "n1")
	clk.Advance(ttl/2 - time.Millisecond)
	checkMembers(t, "a millisecond before the first expiry", members(t, s, tp), old, young)
	clk.Advance(time.Millisecond)
	checkMembers(t, "at the first expiry", members(t, s, tp), young)
	clk.Advance(ttl / 2)
	checkMembers(t, "at the second expiry", members(t, s, tp))
}

func testHeartbeatExtends(t *testing.T, f Factory) {
	clk := NewClock()
	ns := nodes(t, f, clk, 2)
	tp, tp2 := topic(t), topic(t)
	a := presence.Member{Key: "k", Conn: "a", Joined: 1}
	b := presence.Member{Key: "k", Conn: "b", Joined: 2}
	c := presence.Member{Key: "k", Conn: "c", Joined: 3}
	track(t, ns[0], tp, a, "n1")
	track(t, ns[0], tp, b, "n1")
	track(t, ns[0], tp2, c, "n1")

	clk.Advance(ttl - time.Second)
	if missing := heartbeat(t, ns[0], presence.Entry{Topic: tp, Conn: "a"}, presence.Entry{Topic: tp2, Conn: "c"}); len(missing) != 0 {
		t.Errorf("Heartbeat of live members found %v missing", missing)
	}
	clk.Advance(5 * time.Second) // past the ttl of the first Track
	checkMembers(t, "after the first expiry", members(t, ns[1], tp), a)
	checkMembers(t, "other topic", members(t, ns[1], tp2), c)
	checkMembers(t, "swept after the first expiry", sweep(t, ns[1], tp, clk.Now()), b)
	checkMembers(t, "nothing else to sweep", sweep(t, ns[1], tp2, clk.Now()))

	clk.Advance(ttl)
	checkMembers(t, "after the heartbeat's expiry", members(t, ns[1], tp))
	checkMembers(t, "swept after the heartbeat's expiry", sweep(t, ns[1], tp, clk.Now()), a)
	checkMembers(t, "swept after the heartbeat's expiry, other topic", sweep(t, ns[1], tp2, clk.Now()), c)
	// An empty heartbeat is fine.
	heartbeat(t, ns[0])
}

func testHeartbeatNeverAdds(t *testing.T, f Factory) {
	clk := NewClock()
	s := node(t, f, clk)
	tp := topic(t)
	ctx := context.Background()
	a := presence.Member{Key: "k", Conn: "a", Joined: 1}
	b := presence.Member{Key: "k", Conn: "b", Joined: 2}
	track(t, s, tp, a, "n1")
	track(t, s, tp, b, "n1")
	if _, ok, err := s.Untrack(ctx, tp, "a"); err != nil || !ok {
		t.Fatalf("Untrack = %v, %v", ok, err)
	}
	clk.Advance(ttl)
	checkMembers(t, "swept", sweep(t, s, tp, clk.Now()), b)
	// a was untracked, b swept, never was never tracked: none comes back,
	// and all are reported missing, in order.
	entries := []presence.Entry{
		{Topic: tp, Conn: "a"},
		{Topic: tp, Conn: "b"},
		{Topic: tp, Conn: "never"},
		{Topic: topic(t), Conn: "a"},
	}
	if missing := heartbeat(t, s, entries...); !slices.Equal(missing, entries) {
		t.Errorf("Heartbeat reported %v missing, want %v", missing, entries)
	}
	checkMembers(t, "members after the heartbeat", members(t, s, tp))
	checkMembers(t, "sweep after the heartbeat", sweep(t, s, tp, clk.Now().Add(time.Hour)))
	if !track(t, s, tp, b, "n1") {
		t.Fatal("Track after sweep and heartbeat: joined false, want true")
	}
}

// testRevivedBeforeSweep: an expired member tracked again before any
// sweep never left, so it is updated, not joined, and not swept.
func testRevivedBeforeSweep(t *testing.T, f Factory) {
	clk := NewClock()
	s := node(t, f, clk)
	tp := topic(t)
	a := presence.Member{Key: "k", Conn: "a", Joined: 1}
	track(t, s, tp, a, "n1")
	clk.Advance(ttl)
	checkMembers(t, "members once expired", members(t, s, tp))
	a2 := presence.Member{Key: "k", Conn: "a", Joined: 2, State: json.RawMessage(`{"back":true}`)}
	if track(t, s, tp, a2, "n1") {
		t.Fatal("Track of an expired, unswept member: joined true, want false")
	}
	a2.Joined = 1
	checkMembers(t, "members once revived", members(t, s, tp), a2)
	checkMembers(t, "sweep once revived", sweep(t, s, tp, clk.Now()))
}

func testHeartbeatNeverShortens(t *testing.T, f Factory) {
	clk := NewClock()
	s := node(t, f, clk)
	tp := topic(t)
	a := presence.Member{Key: "k", Conn: "a", Joined: 1}
	if _, err := s.Track(context.Background(), tp, a, "n1", time.Hour); err != nil {
		t.Fatal(err)
	}
	heartbeat(t, s, presence.Entry{Topic: tp, Conn: "a"}) // ttl < an hour
	clk.Advance(2 * ttl)
	checkMembers(t, "members", members(t, s, tp), a)
	checkMembers(t, "sweep", sweep(t, s, tp, clk.Now()))
}

// testSweepExactlyOnce races sweepers on several nodes over many members
// expiring at different times: each member is returned exactly once.
func testSweepExactlyOnce(t *testing.T, f Factory) {
	const (
		sweepers = 4
		count    = 600
	)
	clk := NewClock()
	ns := nodes(t, f, clk, sweepers)
	tp := topic(t)
	start := clk.Now()
	for i := range count {
		m := presence.Member{Key: "k", Conn: fmt.Sprintf("c%04d", i), Joined: int64(i)}
		if _, err := ns[i%sweepers].Track(context.Background(), tp, m, fmt.Sprintf("n%d", i%sweepers), ttl+time.Duration(i)*time.Millisecond); err != nil {
			t.Fatal(err)
		}
	}
	end := start.Add(ttl + count*time.Millisecond)

	var mu sync.Mutex
	seen := make(map[string]int)
	var wg sync.WaitGroup
	for w := range sweepers {
		wg.Go(func() {
			// Each sweeper walks its own path through time, finishing at end.
			for now := start.Add(ttl + time.Duration(w)*time.Millisecond); ; now = now.Add(time.Duration(3+w) * time.Millisecond) {
				if now.After(end) {
					now = end
				}
				got, err := ns[w].Sweep(context.Background(), tp, now)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				for _, m := range got {
					seen[m.Conn]++
				}
				mu.Unlock()
				if now.Equal(end) {
					return
				}
			}
		})
	}
	wg.Wait()
	if len(seen) != count {
		t.Errorf("swept %d distinct members, want %d", len(seen), count)
	}
	for conn, n := range seen {
		if n != 1 {
			t.Errorf("member %s swept %d times", conn, n)
		}
	}
	checkMembers(t, "members after the sweep", members(t, ns[0], tp))
}

// testUntrackOrSweepOnce races Untrack against Sweep: each member is
// reported gone by exactly one of them.
func testUntrackOrSweepOnce(t *testing.T, f Factory) {
	const count = 300
	clk := NewClock()
	ns := nodes(t, f, clk, 2)
	tp := topic(t)
	for i := range count {
		track(t, ns[0], tp, presence.Member{Key: "k", Conn: fmt.Sprintf("c%04d", i), Joined: int64(i)}, "n1")
	}
	clk.Advance(ttl)
	var untracked, swept atomic.Int64
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range count {
			_, ok, err := ns[0].Untrack(context.Background(), tp, fmt.Sprintf("c%04d", i))
			if err != nil {
				t.Error(err)
				return
			}
			if ok {
				untracked.Add(1)
			}
		}
	})
	wg.Go(func() {
		for range 20 {
			got, err := ns[1].Sweep(context.Background(), tp, clk.Now())
			if err != nil {
				t.Error(err)
				return
			}
			swept.Add(int64(len(got)))
		}
	})
	wg.Wait()
	rest := sweep(t, ns[1], tp, clk.Now())
	if n := untracked.Load() + swept.Load() + int64(len(rest)); n != count {
		t.Fatalf("untracked %d + swept %d + %d = %d, want %d", untracked.Load(), swept.Load(), len(rest), n, count)
	}
}

func testStateRoundTrip(t *testing.T, f Factory) {
	clk := NewClock()
	ns := nodes(t, f, clk, 2)
	tp := topic(t)
	states := []string{
		`{"name": "Sarah",  "typing" : true, "n":[1, 2.50, 1e3]}`,
		`{"big":123456789012345678901234567890,"u":"\u00e9\"\\","é":"ü"}`,
		`"just a string"`,
		`[]`,
		`null`,
		`{"joined":1,"x":"\"joined\":2}"}`,
	}
	var want []presence.Member
	for i, st := range states {
		m := presence.Member{Key: `k"\` + "é", Conn: fmt.Sprintf("c%d", i), State: json.RawMessage(st), Joined: int64(i + 1)}
		track(t, ns[0], tp, m, "n1")
		want = append(want, m)
	}
	checkMembers(t, "members", members(t, ns[1], tp), want...)
	// Surrounding whitespace goes; the state updates in place.
	track(t, ns[1], tp, presence.Member{Key: "k", Conn: "c0", State: json.RawMessage(" \n{ \"a\" : 1 }\t")}, "n2")
	want[0].Key, want[0].State = "k", json.RawMessage(`{ "a" : 1 }`)
	checkMembers(t, "after an update with whitespace", members(t, ns[0], tp), want...)

	// The caller may reuse its buffer once Track returned.
	buf := []byte(`{"v":1}`)
	track(t, ns[0], tp, presence.Member{Key: "k", Conn: "c9", State: buf, Joined: 99}, "n1")
	copy(buf, `{"v":2}`)
	got, ok, err := ns[1].Untrack(context.Background(), tp, "c9")
	if err != nil || !ok || string(got.State) != `{"v":1}` {
		t.Fatalf("Untrack = %+v, %v, %v; want state {\"v\":1}", got, ok, err)
	}
	clk.Advance(ttl)
	checkMembers(t, "swept", sweep(t, ns[1], tp, clk.Now()), want...)
}

func testTopicsIndependent(t *testing.T, f Factory) {
	clk := NewClock()
	s := node(t, f, clk)
	tp1, tp2 := topic(t), topic(t)
	ctx := context.Background()
	m1 := presence.Member{Key: "k", Conn: "same", State: json.RawMessage(`1`), Joined: 1}
	m2 := presence.Member{Key: "k", Conn: "same", State: json.RawMessage(`2`), Joined: 2}
	if !track(t, s, tp1, m1, "n1") || !track(t, s, tp2, m2, "n1") {
		t.Fatal("a conn on a second topic is a new member there")
	}
	checkMembers(t, "topic 1", members(t, s, tp1), m1)
	checkMembers(t, "topic 2", members(t, s, tp2), m2)
	if _, ok, err := s.Untrack(ctx, tp1, "same"); err != nil || !ok {
		t.Fatalf("Untrack = %v, %v", ok, err)
	}
	checkMembers(t, "topic 2 after untrack on topic 1", members(t, s, tp2), m2)
	clk.Advance(ttl)
	checkMembers(t, "sweep topic 1", sweep(t, s, tp1, clk.Now()))
	checkMembers(t, "sweep topic 2", sweep(t, s, tp2, clk.Now()), m2)
}

func testInvalidArguments(t *testing.T, f Factory) {
	clk := NewClock()
	s := node(t, f, clk)
	tp := topic(t)
	ctx := context.Background()
	for _, c := range []struct {
		name  string
		topic string
		m     presence.Member
		ttl   time.Duration
	}{
		{"empty topic", "", presence.Member{Conn: "c"}, ttl},
		{"empty conn", tp, presence.Member{Key: "k"}, ttl},
		{"invalid state", tp, presence.Member{Conn: "c", State: json.RawMessage(`{"a":`)}, ttl},
		{"zero ttl", tp, presence.Member{Conn: "c"}, 0},
	} {
		if _, err := s.Track(ctx, c.topic, c.m, "n1", c.ttl); !errors.Is(err, presence.ErrInvalid) {
			t.Errorf("Track with %s = %v, want ErrInvalid", c.name, err)
		}
	}
	if _, err := s.Heartbeat(ctx, "n1", []presence.Entry{{Topic: tp, Conn: "c"}}, 0); !errors.Is(err, presence.ErrInvalid) {
		t.Errorf("Heartbeat with zero ttl = %v, want ErrInvalid", err)
	}
	checkMembers(t, "members", members(t, s, tp))
}

func testCanceledContext(t *testing.T, f Factory) {
	clk := NewClock()
	s := node(t, f, clk)
	tp := topic(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	m := presence.Member{Key: "k", Conn: "c"}
	if _, err := s.Track(ctx, tp, m, "n1", ttl); !errors.Is(err, context.Canceled) {
		t.Errorf("Track = %v, want context.Canceled", err)
	}
	if _, _, err := s.Untrack(ctx, tp, "c"); !errors.Is(err, context.Canceled) {
		t.Errorf("Untrack = %v, want context.Canceled", err)
	}
	if _, err := s.Members(ctx, tp); !errors.Is(err, context.Canceled) {
		t.Errorf("Members = %v, want context.Canceled", err)
	}
	if _, err := s.Heartbeat(ctx, "n1", []presence.Entry{{Topic: tp, Conn: "c"}}, ttl); !errors.Is(err, context.Canceled) {
		t.Errorf("Heartbeat = %v, want context.Canceled", err)
	}
	if _, err := s.Sweep(ctx, tp, clk.Now()); !errors.Is(err, context.Canceled) {
		t.Errorf("Sweep = %v, want context.Canceled", err)
	}
	checkMembers(t, "members", members(t, s, tp))
}

func testClose(t *testing.T, f Factory) {
	clk := NewClock()
	s := f.New(t, Config{Now: clk.Now})
	tp := topic(t)
	ctx := context.Background()
	track(t, s, tp, presence.Member{Key: "k", Conn: "c"}, "n1")
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); !errors.Is(err, presence.ErrClosed) {
		t.Errorf("second Close = %v, want ErrClosed", err)
	}
	if _, err := s.Track(ctx, tp, presence.Member{Key: "k", Conn: "d"}, "n1", ttl); !errors.Is(err, presence.ErrClosed) {
		t.Errorf("Track = %v, want ErrClosed", err)
	}
	if _, _, err := s.Untrack(ctx, tp, "c"); !errors.Is(err, presence.ErrClosed) {
		t.Errorf("Untrack = %v, want ErrClosed", err)
	}
	if _, err := s.Members(ctx, tp); !errors.Is(err, presence.ErrClosed) {
		t.Errorf("Members = %v, want ErrClosed", err)
	}
	if _, err := s.Heartbeat(ctx, "n1", []presence.Entry{{Topic: tp, Conn: "c"}}, ttl); !errors.Is(err, presence.ErrClosed) {
		t.Errorf("Heartbeat = %v, want ErrClosed", err)
	}
	if _, err := s.Sweep(ctx, tp, clk.Now()); !errors.Is(err, presence.ErrClosed) {
		t.Errorf("Sweep = %v, want ErrClosed", err)
	}
}
