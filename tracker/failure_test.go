package tracker

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/updraft/updraft/internal/testenv"
)

// writer inserts rows into ledger until stopped, retrying through outages,
// and records which inserts committed.
type writer struct {
	h       *harness
	stopped chan struct{}
	done    chan struct{}
	mu      sync.Mutex
	want    map[string]bool // guarded by mu: "writer/n" of committed rows
	n       atomic.Int64
}

func startWriter(h *harness, writers int, pause time.Duration) *writer {
	w := &writer{h: h, stopped: make(chan struct{}), done: make(chan struct{}), want: map[string]bool{}}
	var wg sync.WaitGroup
	for id := 0; id < writers; id++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; n < 100000; n++ { // bounded; stopped long before
				select {
				case <-w.stopped:
					return
				case <-time.After(pause):
				}
				_, err := h.db.Exec(`INSERT INTO ledger (writer, n, committed) VALUES ($1, $2, true)`, id, n)
				if err != nil {
					continue // PostgreSQL down: this insert did not commit
				}
				w.mu.Lock()
				w.want[fmt.Sprintf("%d/%d", id, n)] = true
				w.mu.Unlock()
				w.n.Add(1)
			}
		}()
	}
	go func() { wg.Wait(); close(w.done) }()
	return w
}

// waitCommitted waits until at least n more rows committed.
func (w *writer) waitCommitted(n int64) {
	w.h.t.Helper()
	target := w.n.Load() + n
	testenv.Eventually(w.h.t, waitFor, func() bool { return w.n.Load() >= target }, "the writers committed %d rows, want %d", w.n.Load(), target)
}

func (w *writer) stop() map[string]bool {
	close(w.stopped)
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.want
}

const ledgerTable = `CREATE TABLE ledger (id bigserial PRIMARY KEY, writer int NOT NULL, n int NOT NULL, committed bool NOT NULL)`

// Two trackers: the leader's clean shutdown hands over at once, and under
// steady writes nothing is lost or repeated.
func TestHandover(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.exec(ledgerTable)
	h.subscribe("ledger")
	a := h.start(Config{Tables: []string{"ledger"}, LeaseTTL: 30 * time.Second})
	b := h.start(Config{Tables: []string{"ledger"}, LeaseTTL: 30 * time.Second})
	w := startWriter(h, 4, 2*time.Millisecond)
	w.waitCommitted(200)
	leader, standby := a, b
	if b.m.leaderValue() == 1 {
		leader, standby = b, a
	}
	stopped := time.Now()
	leader.stop()
	// A lease TTL of 30s: only the release lets the standby lead this soon.
	testenv.Eventually(t, 5*time.Second, func() bool { return standby.m.leaderValue() == 1 }, "the standby did not take over after the leader's clean shutdown")
	t.Logf("handover took %v", time.Since(stopped))
	w.waitCommitted(200)
	want := w.stop()
	assertExactlyOnce(t, h, h.wait("ledger", len(want)), want)
}

// underSteadyWrites runs a tracker over the ledger table, subscribed, with
// writers inserting steadily; once n rows committed it calls disrupt, and
// it returns the committed rows once n more did.
func underSteadyWrites(t *testing.T, writers, n int, disrupt func(h *harness)) (*harness, map[string]bool) {
	t.Helper()
	h := newHarness(t)
	h.exec(ledgerTable)
	h.subscribe("ledger")
	h.start(Config{Tables: []string{"ledger"}})
	w := startWriter(h, writers, 2*time.Millisecond)
	w.waitCommitted(int64(n))
	disrupt(h)
	w.waitCommitted(int64(n))
	return h, w.stop()
}

// PostgreSQL restarted mid-stream: the tracker retries and resumes from its
// cursor.
func TestPostgresRestart(t *testing.T) {
	t.Parallel()
	h, want := underSteadyWrites(t, 4, 200, func(h *harness) {
		h.pg.Kill()
		h.pg.Restart(t)
	})
	assertExactlyOnce(t, h, h.wait("ledger", len(want)), want)
}

// Redis restarted mid-stream (the test Redis keeps no data, so the cursor,
// the lease and the topics' positions are gone): the tracker retries,
// takes the lease again and resumes from the cursor's PostgreSQL copy.
// Topic positions move to a new epoch; changes after the copy may be
// published again in the new epoch, none goes missing.
func TestRedisRestart(t *testing.T) {
	t.Parallel()
	h, want := underSteadyWrites(t, 4, 200, func(h *harness) { h.redis.Restart(t) })
	assertAllArrived(t, h, want)
}

// The same with Redis's data flushed while it keeps running.
func TestRedisDataLost(t *testing.T) {
	t.Parallel()
	h, want := underSteadyWrites(t, 2, 100, func(h *harness) {
		if err := h.redis.Client(t).FlushAll(context.Background()).Err(); err != nil {
			t.Fatal(err)
		}
	})
	assertAllArrived(t, h, want)
}

// assertAllArrived checks that every committed change of want arrived, and
// none twice within one epoch.
func assertAllArrived(t *testing.T, h *harness, want map[string]bool) {
	t.Helper()
	h.exec(`INSERT INTO ledger (writer, n, committed) VALUES (-1, -1, true)`)
	testenv.Eventually(t, waitFor, func() bool {
		ms := h.rec.messages("ledger")
		return len(ms) > 0 && field(t, ms[len(ms)-1].Data, "writer") == "-1"
	}, "the sentinel never arrived")
	seen := map[string]bool{}
	perEpoch := map[string]bool{}
	epochs := map[string]bool{}
	for _, m := range h.rec.messages("ledger") {
		k := field(t, m.Data, "writer") + "/" + field(t, m.Data, "n")
		if perEpoch[m.Epoch+" "+k] {
			t.Errorf("change %s arrived twice in epoch %s", k, m.Epoch)
		}
		perEpoch[m.Epoch+" "+k], seen[k], epochs[m.Epoch] = true, true, true
	}
	for k := range want {
		if !seen[k] {
			t.Errorf("committed change %s never arrived", k)
		}
	}
	t.Logf("%d changes in %d epochs", len(seen), len(epochs))
}

// Configuration errors stop the tracker at start-up with a clear message.
func TestBadConfig(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.exec(`CREATE TABLE users (id int PRIMARY KEY, password_hash text)`, `CREATE VIEW v AS SELECT 1 AS x`,
		`CREATE TABLE "Bad Name" (id int)`)
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{Config{Tables: []string{"nosuch"}}, `table "nosuch" does not exist`},
		{Config{Tables: []string{"v"}}, `table "v" does not exist (or is not a table)`},
		{Config{Tables: []string{`"Bad Name"`}}, `is not a valid table topic`},
		{Config{Tables: []string{"users"}, Trigger: TriggerOptions{Hidden: []string{"users.pasword_hash"}}}, `has no column "pasword_hash"`},
		{Config{Tables: []string{"users"}, Trigger: TriggerOptions{Hidden: []string{"password_hash"}}}, `want table.column`},
		{Config{Trigger: TriggerOptions{Hidden: []string{"ghosts.x"}}}, `table "ghosts" does not exist`},
	} {
		c.cfg.URL, c.cfg.Coordinator = h.pg.URL(), h.node
		tr, err := New(context.Background(), c.cfg)
		if err == nil {
			tr.Close()
			t.Errorf("New(%+v) succeeded, want an error containing %q", c.cfg.Tables, c.want)
			continue
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("New(%v, hidden %v) = %v, want it to contain %q", c.cfg.Tables, c.cfg.Trigger.Hidden, err, c.want)
		}
	}
}
