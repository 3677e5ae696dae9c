package e2e

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/updraft/updraft/client"
	"github.com/updraft/updraft/internal/testenv"
	"github.com/updraft/updraft/protocol"
)

// filterToken mints a token allowing every table, forcing filters.
func filterToken(t *testing.T, sub string, filters map[string]string) string {
	t.Helper()
	claims := jwt.MapClaims{"sub": sub, "exp": time.Now().Add(time.Hour).Unix(), "subscribe": []string{"*"}}
	if filters != nil {
		claims["filters"] = filters
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(jwtSecret))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestTableFilters runs the embedded default (one process, the tracker in
// process, no Redis) and checks row filters end to end: a client filter, a
// token's forced filter that no client filter can widen, live and
// recovered events, history, and bad filters.
func TestTableFilters(t *testing.T) {
	pg := testenv.StartPostgres(t)
	db := pg.DB(t)
	if _, err := db.Exec(`CREATE TABLE orders (id serial PRIMARY KEY, customer_id int, status text, eq int, note text)`); err != nil {
		t.Fatal(err)
	}
	node := testenv.StartNode(t, nodeEnv("", map[string]string{
		"UPDRAFT_DATABASE_URL": pg.URL(), "UPDRAFT_TRACK_TABLES": "orders", "UPDRAFT_POLL_INTERVAL": "50ms",
		"UPDRAFT_ALLOW_ANONYMOUS": "false", "UPDRAFT_MAX_ROW": "2048",
	}))
	subscribe := func(tok, filter string, opts ...client.SubscribeOption) *rowCollector {
		t.Helper()
		return subscribeOrders(t, node.WSURL(), tok, filter, opts...)
	}
	all := subscribe(filterToken(t, "all", nil), "")
	paid := subscribe(filterToken(t, "paid", nil), "status=eq.paid")
	opNamed := subscribe(filterToken(t, "op", nil), "eq=eq.1")
	missing := subscribe(filterToken(t, "missing", nil), "nosuch=eq.1")
	seven := filterToken(t, "customer-7", map[string]string{"orders": "customer_id=eq.7"})
	forced := subscribe(seven, "")
	forcedPaid := subscribe(seven, "status=eq.paid")
	forcedOther := subscribe(seven, "customer_id=eq.8") // ANDed: matches nothing

	// The tracker publishes only changes committed after it started; the
	// node is ready, but the first poll may still be on its way: insert a
	// marker until it arrives.
	testenv.Eventually(t, 20*time.Second, func() bool {
		if _, err := db.Exec(`INSERT INTO orders (customer_id, status, note) VALUES (0, 'warmup', 'warmup')`); err != nil {
			t.Fatal(err)
		}
		return len(all.snapshot()) > 0
	}, "the tracker published nothing")

	for _, q := range []string{
		`INSERT INTO orders (customer_id, status, eq, note) VALUES (7, 'paid', 1, 'a')`,
		`INSERT INTO orders (customer_id, status, note) VALUES (7, 'new', 'b')`,
		`INSERT INTO orders (customer_id, status, note) VALUES (8, 'paid', 'c')`,
		`INSERT INTO orders (customer_id, status, eq, note) VALUES (8, 'new', 1, 'd')`,
		`UPDATE orders SET status = 'paid' WHERE note = 'b'`,
		`DELETE FROM orders WHERE note = 'c'`,
		`INSERT INTO orders (customer_id, status, note) VALUES (7, 'paid', 'end')`,
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	notes := func(c *rowCollector) []string {
		var out []string
		for _, ev := range c.snapshot() {
			if n := col(t, ev, "note"); n != `"warmup"` {
				out = append(out, ev.Event+":"+strings.Trim(n, `"`))
			}
		}
		return out
	}
	expect := func(name string, c *rowCollector, want ...string) {
		t.Helper()
		testenv.Eventually(t, 10*time.Second, func() bool { return len(notes(c)) >= len(want) },
			"%s: got %v, want %v", name, notes(c), want)
		if got := notes(c); strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("%s: got %v, want %v", name, got, want)
		}
	}
	expect("unfiltered", all, "INSERT:a", "INSERT:b", "INSERT:c", "INSERT:d", "UPDATE:b", "DELETE:c", "INSERT:end")
	// b's UPDATE from new to paid moves it into the status=eq.paid view:
	// an INSERT there (see TestFilteredViewMovingRows).
	expect("status=eq.paid", paid, "INSERT:a", "INSERT:c", "INSERT:b", "DELETE:c", "INSERT:end")
	expect("eq=eq.1 (a column named like an operator)", opNamed, "INSERT:a", "INSERT:d")
	expect("forced customer_id=eq.7", forced, "INSERT:a", "INSERT:b", "UPDATE:b", "INSERT:end")
	expect("forced customer 7 and status=eq.paid", forcedPaid, "INSERT:a", "INSERT:b", "INSERT:end")
	// By now every subscriber's events were delivered (one node, in order):
	// the filters that match nothing got nothing.
	if got := notes(forcedOther); len(got) != 0 {
		t.Errorf("forced customer 7 with customer_id=eq.8 saw %v", got)
	}
	if got := notes(missing); len(got) != 0 {
		t.Errorf("a filter on a missing column saw %v", got)
	}

	// A row too large for UPDRAFT_MAX_ROW arrives as its key, marked.
	if _, err := db.Exec(`INSERT INTO orders (customer_id, status, note) VALUES (7, 'paid', repeat('x', 4000))`); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() bool {
		evs := all.snapshot()
		return evs[len(evs)-1].Truncated
	}, "no truncated event arrived")
	if evs := all.snapshot(); col(t, evs[len(evs)-1], "note") != "" || col(t, evs[len(evs)-1], "id") == "" {
		t.Errorf("truncated event data %s: want the primary key only", evs[len(evs)-1].Data)
	}

	// Recovery applies the filters too: rewind through history.
	rewound := subscribe(seven, "status=eq.paid", client.WithRewind(100))
	expect("rewind with forced and client filter", rewound, "INSERT:a", "INSERT:b", "INSERT:end")

	// History over WebSocket never shows rows the forced filter hides.
	for _, m := range ordersHistory(t, node.WSURL(), seven) {
		var row struct {
			Customer int `json:"customer_id"`
		}
		_ = json.Unmarshal(m.Data, &row)
		if row.Customer != 7 {
			t.Errorf("history showed customer %d's row to a token forcing customer 7: %s", row.Customer, m.Data)
		}
	}

	// Bad filters: clear errors.
	raw := dialRaw(t, node.WSURL(), nil)
	raw.connect(seven)
	for _, c := range []struct{ filter, want string }{
		{"status=like.paid", "like"},
		{"status", "="},
		{"status=is.maybe", "is"},
	} {
		rep := raw.replyTo("f", `{"type":"subscribe","ref":"f","topic":"orders","filter":"`+c.filter+`"}`)
		raw.expectError(rep, protocol.CodeBadRequest)
		if !strings.Contains(rep.Error.Message, c.want) {
			t.Errorf("filter %q: error %q does not mention %q", c.filter, rep.Error.Message, c.want)
		}
	}
	rep := raw.replyTo("g", `{"type":"subscribe","ref":"g","topic":"chat/x","filter":"a=eq.1"}`)
	if rep.OK || rep.Error == nil {
		t.Errorf("a filter on an application topic was accepted")
	}
}
