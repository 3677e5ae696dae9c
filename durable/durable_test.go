package durable

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/updraft/updraft/broker"
	"github.com/updraft/updraft/internal/testenv"
)

func openStore(t *testing.T, url string, cfg Config) *Store {
	t.Helper()
	cfg.URL = url
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func msg(topic, epoch string, seq uint64) broker.Message {
	return broker.Message{Topic: topic, Position: broker.Position{Epoch: epoch, Seq: seq},
		Publication: broker.Publication{Event: "message", From: "u", TS: int64(seq), Data: json.RawMessage(fmt.Sprintf(`{"n": %d}`, seq))}}
}

func count(t *testing.T, s *Store, topic, epoch string) int {
	t.Helper()
	ms, err := s.Messages(context.Background(), topic, Range{Epoch: epoch})
	if err != nil {
		t.Fatal(err)
	}
	return len(ms)
}

func TestStore(t *testing.T) {
	pg := testenv.StartPostgres(t)
	// Two nodes migrating at once: the advisory lock serialises them.
	var wg sync.WaitGroup
	stores := make([]*Store, 2)
	for i := range stores {
		wg.Add(1)
		go func() { defer wg.Done(); stores[i] = openStore(t, pg.URL(), Config{}) }()
	}
	wg.Wait()
	s := stores[0]
	ctx := context.Background()

	for seq := uint64(1); seq <= 1200; seq++ {
		if err := s.Append(ctx, msg("chat/a", "e1", seq), false); err != nil {
			t.Fatal(err)
		}
	}
	// The same message twice (a retry) is stored once; waiting works.
	if err := s.Append(ctx, msg("chat/a", "e1", 7), true); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() bool { return count(t, s, "chat/a", "e1") == 1200 }, "batches not stored")

	got, err := s.Messages(ctx, "chat/a", Range{Epoch: "e1", Before: 101, Limit: 30})
	if err != nil || len(got) != 30 || got[0].Seq != 71 || got[29].Seq != 100 {
		t.Fatalf("before 101 limit 30: %d messages %v", len(got), err)
	}
	if string(got[0].Data) != `{"n": 71}` || got[0].From != "u" || got[0].TS != 71 || got[0].Event != "message" || got[0].Topic != "chat/a" {
		t.Fatalf("stored message changed: %+v", got[0])
	}
	got, err = s.Messages(ctx, "chat/a", Range{Epoch: "e1", After: 1190})
	if err != nil || len(got) != 10 || got[0].Seq != 1191 {
		t.Fatalf("after 1190: %d messages %v", len(got), err)
	}
	got, err = s.Messages(ctx, "chat/a", Range{Epoch: "e1", After: 10, Limit: 5})
	if err != nil || len(got) != 5 || got[0].Seq != 11 || got[4].Seq != 15 {
		t.Fatalf("after 10 limit 5: %v %v", got, err)
	}
	if n := count(t, s, "chat/a", "other"); n != 0 {
		t.Fatalf("another epoch holds %d messages", n)
	}
	if err := s.Append(ctx, msg("chat/a", "e2", 1), true); err != nil {
		t.Fatal(err)
	}
	if pos, err := s.Latest(ctx, "chat/a"); err != nil || pos != (broker.Position{Epoch: "e2", Seq: 1}) {
		t.Fatalf("Latest = %+v %v, want e2/1", pos, err)
	}
	if pos, err := s.Latest(ctx, "chat/none"); err != nil || pos != (broker.Position{}) {
		t.Fatalf("Latest of an unknown topic = %+v %v", pos, err)
	}
	// Nodes store their batches independently: a lower seq stored after a
	// higher one leaves the latest position at the higher.
	for _, seq := range []uint64{3, 2} {
		if err := s.Append(ctx, msg("chat/a", "e2", seq), true); err != nil {
			t.Fatal(err)
		}
	}
	if pos, err := s.Latest(ctx, "chat/a"); err != nil || pos != (broker.Position{Epoch: "e2", Seq: 3}) {
		t.Fatalf("Latest after a late lower seq = %+v %v, want e2/3", pos, err)
	}

	// Retention: rows older than it go, in batches.
	if _, err := pg.DB(t).Exec(`UPDATE updraft.messages SET stored_at = now() - interval '40 days' WHERE epoch = 'e1' AND seq <= 1100`); err != nil {
		t.Fatal(err)
	}
	s.expire()
	if n := count(t, s, "chat/a", "e1"); n != 100 {
		t.Fatalf("after expiry %d messages remain, want 100", n)
	}
}

// TestStoreSurvivesPostgresRestart: messages appended while PostgreSQL is
// down wait in the backlog and are stored once it is back.
func TestStoreSurvivesPostgresRestart(t *testing.T) {
	pg := testenv.StartPostgres(t)
	s := openStore(t, pg.URL(), Config{})
	ctx := context.Background()
	for seq := uint64(1); seq <= 100; seq++ {
		s.Append(ctx, msg("chat/r", "e", seq), false)
	}
	testenv.Eventually(t, 10*time.Second, func() bool { return count(t, s, "chat/r", "e") == 100 }, "first batch not stored")
	pg.Stop()
	for seq := uint64(101); seq <= 200; seq++ {
		if err := s.Append(ctx, msg("chat/r", "e", seq), false); err != nil {
			t.Fatalf("append while PostgreSQL is down: %v", err)
		}
	}
	pg.Restart(t)
	testenv.Eventually(t, 30*time.Second, func() bool {
		ms, err := s.Messages(ctx, "chat/r", Range{Epoch: "e"})
		return err == nil && len(ms) == 200
	}, "messages appended during the outage were not stored")
}

// TestBrokerHistoryReachesIntoStore: the wrapped broker's history ends
// after 10 messages; the store has all 100 of the persistent topic, and
// keeps them when the broker loses everything.
func TestBrokerHistoryReachesIntoStore(t *testing.T) {
	pg := testenv.StartPostgres(t)
	s := openStore(t, pg.URL(), Config{})
	ctx := context.Background()
	mem := broker.NewMemory(broker.MemoryConfig{Retention: broker.Retention{Size: 10}})
	defer mem.Close()
	b, err := Wrap(mem, s, []string{"chat/**"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Wrap(mem, s, []string{"chat/**/x"}); err == nil {
		t.Fatal("Wrap accepted a bad pattern")
	}
	var epoch string
	for i := 1; i <= 100; i++ {
		pos, err := b.Publish(ctx, "chat/room", broker.Publication{Event: "message", Data: json.RawMessage(fmt.Sprintf(`{"i":%d}`, i)), Durable: i == 100})
		if err != nil {
			t.Fatal(err)
		}
		epoch = pos.Epoch
	}
	// Not persistent, not asked: not stored.
	if _, err := b.Publish(ctx, "news/x", broker.Publication{Event: "m", Durable: false}); err != nil {
		t.Fatal(err)
	}
	// Asked: stored.
	if _, err := b.Publish(ctx, "news/y", broker.Publication{Event: "m", Durable: true}); err != nil {
		t.Fatal(err)
	}

	pageAll := func(b broker.Broker) []uint64 {
		var seqs []uint64
		before := uint64(0)
		for range 20 { // bounded: 100 messages in pages of 30
			page, err := b.History(ctx, "chat/room", broker.HistoryQuery{Before: before, Limit: 30})
			if err != nil {
				t.Fatal(err)
			}
			if page.Latest.Epoch != epoch {
				t.Fatalf("history epoch %q, want %q", page.Latest.Epoch, epoch)
			}
			if len(page.Messages) == 0 {
				break
			}
			for i := len(page.Messages) - 1; i >= 0; i-- {
				seqs = append(seqs, page.Messages[i].Seq)
			}
			before = page.Messages[0].Seq
		}
		return seqs
	}
	check := func(name string, seqs []uint64) {
		t.Helper()
		if len(seqs) != 100 {
			t.Fatalf("%s: paged %d messages, want 100", name, len(seqs))
		}
		for i, s := range seqs {
			if s != uint64(100-i) {
				t.Fatalf("%s: message %d has seq %d, want %d", name, i, s, 100-i)
			}
		}
	}
	check("with the broker's 10 and the store's 100", pageAll(b))

	// Recovery reads (after) reach into the store too.
	page, err := b.History(ctx, "chat/room", broker.HistoryQuery{After: 50})
	if err != nil || len(page.Messages) != 50 || page.Messages[0].Seq != 51 || page.Messages[49].Seq != 100 {
		t.Fatalf("after 50: %d messages %v", len(page.Messages), err)
	}
	// With a limit the inner broker's 10 would fill, the store's are
	// still the oldest after After.
	page, err = b.History(ctx, "chat/room", broker.HistoryQuery{After: 50, Limit: 10})
	if err != nil || len(page.Messages) != 10 || page.Messages[0].Seq != 51 || page.Messages[9].Seq != 60 {
		t.Fatalf("after 50 limit 10: %d messages %v", len(page.Messages), err)
	}
	if n := count(t, s, "news/y", mustLatest(t, s, "news/y").Epoch); n != 1 {
		t.Fatalf("durable publish on a non-persistent topic stored %d", n)
	}
	if pos := mustLatest(t, s, "news/x"); pos.Epoch != "" {
		t.Fatalf("a plain publish on a non-persistent topic was stored: %+v", pos)
	}

	// The broker loses everything (a Redis flush): the store still answers.
	testenv.Eventually(t, 10*time.Second, func() bool { return count(t, s, "chat/room", epoch) == 100 }, "not all stored")
	fresh := broker.NewMemory(broker.MemoryConfig{Retention: broker.Retention{Size: 10}})
	defer fresh.Close()
	b2, _ := Wrap(fresh, s, []string{"chat/**"})
	if pos, err := b2.Latest(ctx, "chat/room"); err != nil || pos != (broker.Position{Epoch: epoch, Seq: 100}) {
		t.Fatalf("Latest after the loss = %+v %v", pos, err)
	}
	check("from the store alone", pageAll(b2))
}

func mustLatest(t *testing.T, s *Store, topic string) broker.Position {
	t.Helper()
	pos, err := s.Latest(context.Background(), topic)
	if err != nil {
		t.Fatal(err)
	}
	return pos
}

// TestBrokerHistoryAfterReadsOnlyTheLimit: a recovery read (after, with a
// limit) of a persistent topic whose inner history holds only the newest
// messages reads no more than the limit from PostgreSQL. It used to read
// every stored row from after up to the inner history (LIMIT 2^30) and cut
// them off in memory: 150,000 messages took 215 MB for one subscribe.
func TestBrokerHistoryAfterReadsOnlyTheLimit(t *testing.T) {
	pg := testenv.StartPostgres(t)
	s := openStore(t, pg.URL(), Config{})
	ctx := context.Background()
	mem := broker.NewMemory(broker.MemoryConfig{Retention: broker.Retention{Size: 10}})
	defer mem.Close()
	b, err := Wrap(mem, s, []string{"chat/**"})
	if err != nil {
		t.Fatal(err)
	}
	const total = 20000
	data := json.RawMessage(`"` + strings.Repeat("x", 1000) + `"`)
	items := make([]broker.Item, total)
	for i := range items {
		items[i] = broker.Item{Topic: "chat/big", Publication: broker.Publication{Event: "m", Data: data, Durable: i == total-1}}
	}
	if _, err := b.PublishBatch(ctx, items); err != nil {
		t.Fatal(err)
	}
	// What the read allocates is what it read: 20 MB for every stored
	// row, 100 KB for the 100 asked for.
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	page, err := b.History(ctx, "chat/big", broker.HistoryQuery{After: 1, Limit: 100})
	runtime.ReadMemStats(&m1)
	if err != nil || len(page.Messages) != 100 || page.Messages[0].Seq != 2 || page.Messages[99].Seq != 101 {
		t.Fatalf("after 1 limit 100: %d messages %v", len(page.Messages), err)
	}
	if alloc := m1.TotalAlloc - m0.TotalAlloc; alloc > 4<<20 {
		t.Fatalf("reading 100 messages of 1 KB allocated %d MB", alloc>>20)
	}
}
