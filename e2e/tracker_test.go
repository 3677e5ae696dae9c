package e2e

import (
	"context"
	"database/sql"
	"encoding/json"
	"maps"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/updraft/updraft/client"
	"github.com/updraft/updraft/internal/testenv"
	"github.com/updraft/updraft/protocol"
)

// rowCollector records the table events a client receives, in order.
type rowCollector struct {
	mu     sync.Mutex
	events []protocol.Event
}

func (c *rowCollector) handle(ev protocol.Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.events = append(c.events, ev)
}

func (c *rowCollector) snapshot() []protocol.Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]protocol.Event(nil), c.events...)
}

// subscribeOrders connects to wsURL with tok and subscribes to the orders
// table, with filter when it is not empty, collecting what arrives.
func subscribeOrders(t *testing.T, wsURL, tok, filter string, opts ...client.SubscribeOption) *rowCollector {
	t.Helper()
	c := dial(t, wsURL, client.Options{Token: tok})
	col := &rowCollector{}
	if filter != "" {
		opts = append(opts, client.WithFilter(filter))
	}
	if _, err := c.Subscribe(context.Background(), "orders", col.handle, opts...); err != nil {
		t.Fatalf("subscribe to orders with filter %q: %v", filter, err)
	}
	return col
}

// ordersHistory is the orders table's history as a connection with tok
// reads it over the WebSocket (the newest 100 messages).
func ordersHistory(t *testing.T, wsURL, tok string) []protocol.HistoryMessage {
	t.Helper()
	raw := dialRaw(t, wsURL, nil)
	raw.connect(tok)
	rep := raw.replyTo("h", `{"type":"history","ref":"h","topic":"orders","limit":100}`)
	if !rep.OK {
		t.Fatalf("history: %+v", rep.Error)
	}
	var page protocol.HistoryResult
	if err := json.Unmarshal(rep.Data, &page); err != nil {
		t.Fatal(err)
	}
	return page.Messages
}

// col returns the compact JSON of a column of ev's data ("" when absent).
func col(t *testing.T, ev protocol.Event, name string) string {
	t.Helper()
	var row map[string]json.RawMessage
	if err := json.Unmarshal(ev.Data, &row); err != nil {
		t.Fatalf("event data %s: %v", ev.Data, err)
	}
	return string(row[name])
}

// ledgerWriter inserts rows from several goroutines until stopped.
type ledgerWriter struct {
	stop    chan struct{}
	done    sync.WaitGroup
	commits atomic.Int64
}

func startLedgerWriter(t *testing.T, db *sql.DB, writers int, pause time.Duration) *ledgerWriter {
	w := &ledgerWriter{stop: make(chan struct{})}
	for id := 0; id < writers; id++ {
		w.done.Add(1)
		go func() {
			defer w.done.Done()
			for n := 0; n < 100000; n++ { // bounded; stopped long before
				select {
				case <-w.stop:
					return
				case <-time.After(pause):
				}
				if _, err := db.Exec(`INSERT INTO ledger (writer, n) VALUES ($1, $2)`, id, n); err != nil {
					t.Errorf("insert: %v", err)
					return
				}
				w.commits.Add(1)
			}
		}()
	}
	return w
}

func (w *ledgerWriter) waitCommits(t *testing.T, more int64) {
	t.Helper()
	target := w.commits.Load() + more
	testenv.Eventually(t, 20*time.Second, func() bool { return w.commits.Load() >= target }, "writers stalled at %d commits", w.commits.Load())
}

func (w *ledgerWriter) halt() {
	close(w.stop)
	w.done.Wait()
}

// leader returns the tracker whose updraft_tracker_leader is 1, or nil.
func leader(t *testing.T, trackers ...*testenv.Node) *testenv.Node {
	t.Helper()
	for _, tr := range trackers {
		if metric(t, tr, "updraft_tracker_leader") == 1 {
			return tr
		}
	}
	return nil
}

// TestTrackerFailover: two trackers; the leader is killed with SIGKILL
// under steady writes; the standby takes over within the lease TTL plus a
// poll, and the events delivered equal the change log: nothing missing,
// nothing twice. Then SIGTERM of the new leader hands over at once.
func TestTrackerFailover(t *testing.T) {
	pg := testenv.StartPostgres(t)
	db := pg.DB(t)
	if _, err := db.Exec(`CREATE TABLE ledger (id bigserial PRIMARY KEY, writer int NOT NULL, n int NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	r, nodes := startCluster(t, 2, nil)
	const leaseTTL, poll = 3 * time.Second, 200 * time.Millisecond
	trackerEnv := map[string]string{
		"UPDRAFT_DATABASE_URL": pg.URL(), "UPDRAFT_REDIS_URL": r.URL(), "UPDRAFT_TRACK_TABLES": "ledger",
		"UPDRAFT_LEASE_TTL": leaseTTL.String(), "UPDRAFT_POLL_INTERVAL": poll.String(), "UPDRAFT_LOG_LEVEL": "info",
	}
	ids := map[*testenv.Node]string{}
	startTracker := func(id string) *testenv.Node {
		env := maps.Clone(trackerEnv)
		env["UPDRAFT_NODE_ID"] = id
		n := testenv.StartTracker(t, env)
		ids[n] = id
		return n
	}
	trackers := []*testenv.Node{startTracker("tracker-1"), startTracker("tracker-2")}
	var first *testenv.Node
	testenv.Eventually(t, 15*time.Second, func() bool { first = leader(t, trackers...); return first != nil }, "no tracker leads")
	second := trackers[0]
	if second == first {
		second = trackers[1]
	}
	waitStandingBy(t, second, ids[first])

	// One subscriber per gateway.
	cols := make([]*rowCollector, len(nodes))
	for i, n := range nodes {
		cols[i] = &rowCollector{}
		c := dial(t, n.WSURL(), client.Options{})
		if _, err := c.Subscribe(context.Background(), "ledger", cols[i].handle); err != nil {
			t.Fatal(err)
		}
	}
	w := startLedgerWriter(t, db, 4, 5*time.Millisecond)
	w.waitCommits(t, 300)

	first.Kill()
	killed := time.Now()
	testenv.Eventually(t, leaseTTL+poll+3*time.Second, func() bool { return metric(t, second, "updraft_tracker_leader") == 1 },
		"the standby did not take over within the lease TTL plus a poll")
	t.Logf("takeover after SIGKILL: %v (lease TTL %v)", time.Since(killed).Round(time.Millisecond), leaseTTL)

	// A new standby, for the clean handover.
	third := startTracker("tracker-3")
	waitStandingBy(t, third, ids[second])
	w.waitCommits(t, 300)
	second.Terminate()
	terminated := time.Now()
	// Well under the lease TTL: only the released lease allows it.
	testenv.Eventually(t, leaseTTL/2, func() bool { return metric(t, third, "updraft_tracker_leader") == 1 },
		"the standby did not take over at once after the leader's SIGTERM")
	t.Logf("handover after SIGTERM: %v", time.Since(terminated).Round(time.Millisecond))
	if exited, err := second.Wait(10 * time.Second); !exited || err != nil {
		t.Errorf("the terminated tracker: exited %v, %v; want a clean exit", exited, err)
	}
	w.waitCommits(t, 300)
	w.halt()

	// The change log is the truth.
	var want []string
	rows, err := db.Query(`SELECT data->>'writer', data->>'n' FROM updraft.changes WHERE tbl = 'public.ledger' ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var wr, n string
		if err := rows.Scan(&wr, &n); err != nil {
			t.Fatal(err)
		}
		want = append(want, wr+"/"+n)
	}
	rows.Close()
	for i, c := range cols {
		testenv.Eventually(t, 20*time.Second, func() bool { return len(c.snapshot()) >= len(want) },
			"subscriber %d: %d events, want %d", i, len(c.snapshot()), len(want))
		got := c.snapshot()
		seen := map[string]int{}
		for j, ev := range got {
			if ev.Seq != uint64(j+1) {
				t.Fatalf("subscriber %d: event %d has seq %d", i, j, ev.Seq)
			}
			seen[col(t, ev, "writer")+"/"+col(t, ev, "n")]++
		}
		if len(got) != len(want) {
			t.Errorf("subscriber %d: %d events, the change log has %d", i, len(got), len(want))
		}
		for _, k := range want {
			if seen[k] != 1 {
				t.Errorf("subscriber %d: change %s arrived %d times", i, k, seen[k])
			}
		}
	}
	t.Logf("%d changes, %d commits, all delivered once to %d subscribers", len(want), w.commits.Load(), len(cols))

	// Every line a tracker logged names its node.
	for n, id := range ids {
		for _, line := range strings.Split(n.Logs(), "\n") {
			var entry struct{ Node string }
			if json.Unmarshal([]byte(line), &entry) == nil && entry.Node != id {
				t.Errorf("%s logged a line without its node id: %s", id, line)
			}
		}
	}
}

// waitStandingBy waits until the tracker n logs that it stands by with
// leader as the leader.
func waitStandingBy(t *testing.T, n *testenv.Node, leader string) {
	t.Helper()
	testenv.Eventually(t, 15*time.Second, func() bool {
		for _, line := range strings.Split(n.Logs(), "\n") {
			if strings.Contains(line, `"msg":"tracker: standing by`) && strings.Contains(line, `"leader":"`+leader+`"`) {
				return true
			}
		}
		return false
	}, "the standby did not log that it stands by for %s; its log:\n%s", leader, n.Logs())
}
