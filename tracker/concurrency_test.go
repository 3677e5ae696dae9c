package tracker

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/updraft/updraft/broker"
)

// Eight writers with interleaved, long-running and rolled-back
// transactions: every committed change arrives exactly once, no rolled-back
// change ever arrives.
func TestConcurrentWriters(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.exec(`CREATE TABLE ledger (id bigserial PRIMARY KEY, writer int NOT NULL, n int NOT NULL, committed bool NOT NULL)`)
	h.subscribe("ledger")
	// A small page, so that windows are paged through too.
	h.start(Config{Tables: []string{"ledger"}, PageSize: 50})

	const writers, txPerWriter = 8, 60
	var wg sync.WaitGroup
	var mu sync.Mutex
	want := map[string]bool{} // "writer/n" of every committed insert
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for i := 0; i < txPerWriter; i++ {
				commit := rng.IntN(4) != 0
				rows := 1 + rng.IntN(5)
				tx, err := h.db.Begin()
				if err != nil {
					t.Error(err)
					return
				}
				for r := 0; r < rows; r++ {
					n := i*10 + r
					if _, err := tx.Exec(`INSERT INTO ledger (writer, n, committed) VALUES ($1, $2, $3)`, w, n, commit); err != nil {
						t.Error(err)
						_ = tx.Rollback()
						return
					}
					if rng.IntN(3) == 0 {
						// A long-running transaction: others commit meanwhile.
						time.Sleep(time.Duration(rng.IntN(30)) * time.Millisecond)
					}
				}
				if !commit {
					_ = tx.Rollback()
					continue
				}
				if err := tx.Commit(); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				for r := 0; r < rows; r++ {
					want[fmt.Sprintf("%d/%d", w, i*10+r)] = true
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	got := h.wait("ledger", len(want))
	assertExactlyOnce(t, h, got, want)
}

// assertExactlyOnce checks that got holds the committed inserts of want,
// each once, and nothing rolled back; and that the positions count 1..n.
func assertExactlyOnce(t *testing.T, h *harness, got []broker.Message, want map[string]bool) {
	t.Helper()
	seen := map[string]int{}
	for i, m := range got {
		if field(t, m.Data, "committed") != "true" {
			t.Errorf("a rolled-back change arrived: %s", m.Data)
		}
		seen[field(t, m.Data, "writer")+"/"+field(t, m.Data, "n")]++
		if m.Seq != uint64(i+1) {
			t.Fatalf("event %d has seq %d", i, m.Seq)
		}
	}
	for k, n := range seen {
		if n != 1 {
			t.Errorf("change %s arrived %d times", k, n)
		}
		if !want[k] {
			t.Errorf("change %s arrived but was not committed", k)
		}
	}
	for k := range want {
		if seen[k] == 0 {
			t.Errorf("committed change %s never arrived", k)
		}
	}
	// Nothing more arrives later either: the tracker has read past every
	// commit once a fresh change arrives after them.
	h.exec(`INSERT INTO ledger (writer, n, committed) VALUES (-1, -1, true)`)
	last := h.wait("ledger", len(got)+1)
	if len(last) != len(got)+1 || field(t, last[len(got)].Data, "writer") != "-1" {
		t.Errorf("after the sentinel: %d events, want %d ending with the sentinel", len(last), len(got)+1)
	}
}

// The transaction that commits later took the smaller id: polling by id
// alone would skip it. Both of its changes arrive, and the two updates of
// the shared row arrive in commit order.
func TestLaterCommitSmallerID(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.exec(`CREATE TABLE doc (id int PRIMARY KEY, v text)`, `INSERT INTO doc VALUES (1, 'start'), (2, 'other')`)
	h.subscribe("doc")
	h.start(Config{Tables: []string{"doc"}})
	ctx := context.Background()

	t2 := begin(t, h.db)
	mustExec(t, t2, `UPDATE doc SET v = 't2-first' WHERE id = 2`) // takes the smaller change id
	t1 := begin(t, h.db)
	mustExec(t, t1, `UPDATE doc SET v = 't1' WHERE id = 1`)
	if err := t1.Commit(); err != nil {
		t.Fatal(err)
	}
	// The tracker has published t1's change (a larger id) before t2 commits.
	h.wait("doc", 1)
	// t2 now updates row 1 after t1 (it would wait for t1's lock if t1 were
	// still open) and commits last.
	if _, err := t2.ExecContext(ctx, `UPDATE doc SET v = 't2' WHERE id = 1`); err != nil {
		t.Fatal(err)
	}
	if err := t2.Commit(); err != nil {
		t.Fatal(err)
	}
	got := h.wait("doc", 3)
	var row1 []string
	for _, m := range got {
		if field(t, m.Data, "id") == "1" {
			row1 = append(row1, field(t, m.Data, "v"))
		}
	}
	if len(got) != 3 || field(t, got[0].Data, "v") != `"t1"` {
		t.Fatalf("events %d, first %s; want 3, t1's first", len(got), got[0].Data)
	}
	if len(row1) != 2 || row1[0] != `"t1"` || row1[1] != `"t2"` {
		t.Errorf("row 1's updates arrived as %v, want t1 then t2 (commit order)", row1)
	}
	if field(t, got[1].Data, "v") != `"t2-first"` && field(t, got[2].Data, "v") != `"t2-first"` {
		t.Errorf("the change with the smaller id never arrived: %v", got)
	}
}

// Concurrent updates of one row arrive in commit order, whether a poll
// window holds several of them or not: each writer waits for the previous
// one's row lock, so it draws the larger id, and n counts up in commit
// order.
func TestSameRowCommitOrder(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.exec(`CREATE TABLE counter (id int PRIMARY KEY, n int)`, `INSERT INTO counter VALUES (1, 0)`)
	h.subscribe("counter")
	h.start(Config{Tables: []string{"counter"}, PollInterval: 100 * time.Millisecond})
	const writers, each = 8, 25
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				if _, err := h.db.Exec(`UPDATE counter SET n = n + 1 WHERE id = 1`); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	got := h.wait("counter", writers*each)
	for i, m := range got {
		if want := fmt.Sprint(i + 1); field(t, m.Data, "n") != want || field(t, m.Old, "n") != fmt.Sprint(i) {
			t.Fatalf("update %d: n %s (old %s), want %s: out of commit order", i, field(t, m.Data, "n"), field(t, m.Old, "n"), want)
		}
	}
}

func begin(t *testing.T, db *sql.DB) *sql.Tx {
	t.Helper()
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tx.Rollback() })
	return tx
}

func mustExec(t *testing.T, tx *sql.Tx, q string) {
	t.Helper()
	if _, err := tx.Exec(q); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}
