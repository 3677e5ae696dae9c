package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/updraft/updraft/client"
	"github.com/updraft/updraft/internal/testenv"
	"github.com/updraft/updraft/protocol"
)

// TestFilteredViewMovingRows checks that a filtered subscription sees its
// table as a filtered view (docs/protocol.md, "Row filters"): a row that
// an UPDATE moves into the filter arrives as an INSERT of the new row, a
// row moving out as a DELETE of the old one, and no row version the filter
// excludes ever arrives, live, through rewind, since recovery or the
// history request, whether the filter is forced by the token or the
// client's own.
func TestFilteredViewMovingRows(t *testing.T) {
	pg := testenv.StartPostgres(t)
	db := pg.DB(t)
	if _, err := db.Exec(`CREATE TABLE orders (id serial PRIMARY KEY, customer_id int, note text)`); err != nil {
		t.Fatal(err)
	}
	node := testenv.StartNode(t, nodeEnv("", map[string]string{
		"UPDRAFT_DATABASE_URL": pg.URL(), "UPDRAFT_TRACK_TABLES": "orders", "UPDRAFT_POLL_INTERVAL": "50ms",
		"UPDRAFT_ALLOW_ANONYMOUS": "false",
	}))
	seven := filterToken(t, "customer-7", map[string]string{"orders": "customer_id=eq.7"})
	anyone := filterToken(t, "anyone", nil)
	subscribe := func(tok, filter string, opts ...client.SubscribeOption) *rowCollector {
		t.Helper()
		return subscribeOrders(t, node.WSURL(), tok, filter, opts...)
	}
	all := subscribe(anyone, "")
	forced := subscribe(seven, "")
	own := subscribe(anyone, "customer_id=eq.7")
	testenv.Eventually(t, 20*time.Second, func() bool {
		if _, err := db.Exec(`INSERT INTO orders (customer_id, note) VALUES (0, 'warmup')`); err != nil {
			t.Fatal(err)
		}
		return len(all.snapshot()) > 0
	}, "the tracker published nothing")

	for _, q := range []string{
		`INSERT INTO orders (customer_id, note) VALUES (8, 'a')`,
		`INSERT INTO orders (customer_id, note) VALUES (7, 'b')`,
		`UPDATE orders SET customer_id = 7, note = 'a-in' WHERE note = 'a'`,  // enters
		`UPDATE orders SET customer_id = 8, note = 'b-out' WHERE note = 'b'`, // leaves
		`UPDATE orders SET note = 'a-kept' WHERE note = 'a-in'`,              // stays
		`UPDATE orders SET note = 'b-away' WHERE note = 'b-out'`,             // stays out
		`INSERT INTO orders (customer_id, note) VALUES (7, 'end')`,
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	// The tenant's view, each event as event:note/customer, with <old for
	// an old row: every row version is customer 7's, and the moves arrive
	// as INSERT and DELETE (a DELETE carrying the row as it was in data and
	// old, as the tracker sends a genuine one).
	const want = "INSERT:b/7 INSERT:a-in/7 DELETE:b/7<b/7 UPDATE:a-kept/7<a-in/7 INSERT:end/7"
	describe := func(event string, data, old json.RawMessage) string {
		t.Helper()
		version := func(raw json.RawMessage) string {
			var r struct {
				Customer *int   `json:"customer_id"`
				Note     string `json:"note"`
			}
			if err := json.Unmarshal(raw, &r); err != nil {
				t.Fatalf("row %s: %v", raw, err)
			}
			if r.Customer == nil {
				return r.Note + "/none"
			}
			return r.Note + "/" + strconv.Itoa(*r.Customer)
		}
		s := event + ":" + version(data)
		if len(old) > 0 {
			s += "<" + version(old)
		}
		return s
	}
	check := func(what, got string) {
		t.Helper()
		if strings.Contains(got, "/8") {
			t.Errorf("%s: customer 8's row reached a customer 7 view: %s", what, got)
		}
		if got != want {
			t.Errorf("%s:\n got %s\nwant %s", what, got, want)
		}
	}
	view := func(c *rowCollector) string {
		var parts []string
		for _, ev := range c.snapshot() {
			parts = append(parts, describe(ev.Event, ev.Data, ev.Old))
		}
		return strings.Join(parts, " ")
	}
	expect := func(what string, c *rowCollector) {
		t.Helper()
		testenv.Eventually(t, 10*time.Second, func() bool { return strings.HasSuffix(view(c), "INSERT:end/7") },
			"%s: the last insert never arrived; got %s", what, view(c))
		check(what, view(c))
	}
	expect("live, forced filter", forced)
	expect("live, own filter", own)
	epoch := all.snapshot()[0].Epoch

	expect("rewind, forced filter", subscribe(seven, "", client.WithRewind(100)))
	expect("rewind, own filter", subscribe(anyone, "customer_id=eq.7", client.WithRewind(100)))
	since := client.WithSince(protocol.Position{Epoch: epoch, Seq: 0})
	expect("since, forced filter", subscribe(seven, "", since))
	expect("since, own filter", subscribe(anyone, "customer_id=eq.7", since))

	var parts []string
	for _, m := range ordersHistory(t, node.WSURL(), seven) {
		parts = append(parts, describe(m.Event, m.Data, m.Old))
	}
	check("history, forced filter", strings.Join(parts, " "))
}

// TestFilteredViewTruncated checks that truncated events (the primary key
// only) fail closed under a filter on a column they no longer carry, and
// pass one on the primary key.
func TestFilteredViewTruncated(t *testing.T) {
	pg := testenv.StartPostgres(t)
	db := pg.DB(t)
	if _, err := db.Exec(`CREATE TABLE orders (id serial PRIMARY KEY, archived_at timestamptz, note text)`); err != nil {
		t.Fatal(err)
	}
	node := testenv.StartNode(t, nodeEnv("", map[string]string{
		"UPDRAFT_DATABASE_URL": pg.URL(), "UPDRAFT_TRACK_TABLES": "orders", "UPDRAFT_POLL_INTERVAL": "50ms",
		"UPDRAFT_ALLOW_ANONYMOUS": "false", "UPDRAFT_MAX_ROW": "1024",
	}))
	live := filterToken(t, "live", map[string]string{"orders": "archived_at=is.null"})
	byKey := filterToken(t, "by-key", map[string]string{"orders": "id=gt.0"})
	unarchived, keyed := subscribeOrders(t, node.WSURL(), live, ""), subscribeOrders(t, node.WSURL(), byKey, "")
	testenv.Eventually(t, 20*time.Second, func() bool {
		if _, err := db.Exec(`INSERT INTO orders (note) VALUES ('warmup')`); err != nil {
			t.Fatal(err)
		}
		return len(keyed.snapshot()) > 0
	}, "the tracker published nothing")
	for _, q := range []string{
		`INSERT INTO orders (note) VALUES (repeat('x', 2000))`,
		`UPDATE orders SET note = repeat('y', 2000) WHERE note = repeat('x', 2000)`,
		`INSERT INTO orders (note) VALUES ('end')`,
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	summary := func(evs []protocol.Event) string {
		var parts []string
		for _, ev := range evs {
			s := ev.Event + ":" + strings.Trim(col(t, ev, "note"), `"`)
			if ev.Truncated {
				s = ev.Event + ":truncated"
			}
			if s != "INSERT:warmup" {
				parts = append(parts, s)
			}
		}
		return strings.Join(parts, " ")
	}
	expect := func(what string, c *rowCollector, want string) {
		t.Helper()
		testenv.Eventually(t, 10*time.Second, func() bool { return strings.HasSuffix(summary(c.snapshot()), "INSERT:end") },
			"%s: the last insert never arrived; got %s", what, summary(c.snapshot()))
		if got := summary(c.snapshot()); got != want {
			t.Errorf("%s: got %s, want %s", what, got, want)
		}
	}
	expect("archived_at=is.null, live", unarchived, "INSERT:end")
	expect("id=gt.0, live", keyed, "INSERT:truncated UPDATE:truncated INSERT:end")

	history := func(tok string) string {
		var evs []protocol.Event
		for _, m := range ordersHistory(t, node.WSURL(), tok) {
			evs = append(evs, protocol.Event{Event: m.Event, Data: m.Data, Truncated: m.Truncated})
		}
		return summary(evs)
	}
	if got := history(live); got != "INSERT:end" {
		t.Errorf("archived_at=is.null, history: got %s, want INSERT:end", got)
	}
	if got := history(byKey); got != "INSERT:truncated UPDATE:truncated INSERT:end" {
		t.Errorf("id=gt.0, history: got %s", got)
	}
}

// TestTableTopicsCarryNoPresence checks that presence, which no row
// filter can apply to, is refused on table topics: a tenant's presence
// state would otherwise reach every other tenant of the table.
func TestTableTopicsCarryNoPresence(t *testing.T) {
	node := testenv.StartNode(t, nodeEnv("", nil))
	raw := dialRaw(t, node.WSURL(), nil)
	raw.connect(filterToken(t, "customer-7", map[string]string{"orders": "customer_id=eq.7"}))
	if rep := raw.replyTo("s", `{"type":"subscribe","ref":"s","topic":"orders"}`); !rep.OK {
		t.Fatalf("subscribe: %+v", rep.Error)
	}
	for _, c := range []struct{ what, frame string }{
		{"track", `{"type":"track","ref":"t","topic":"orders","state":{"name":"Ann"}}`},
		{"members", `{"type":"members","ref":"t","topic":"orders"}`},
		{"subscribe with presence", `{"type":"subscribe","ref":"t","topic":"orders","presence":true}`},
	} {
		rep := raw.replyTo("t", c.frame)
		raw.expectError(rep, protocol.CodeBadRequest)
		if !strings.Contains(rep.Error.Message, "database changes only") {
			t.Errorf("%s on a table topic: error %q does not say why", c.what, rep.Error.Message)
		}
	}

	req, _ := http.NewRequest(http.MethodGet, node.URL()+"/api/v1/presence?topic=orders", nil)
	req.Header.Set("Authorization", "Bearer "+apiKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), protocol.CodeBadRequest) {
		t.Errorf("GET /api/v1/presence?topic=orders: %d %s, want 400 bad_request", resp.StatusCode, body)
	}

	// An empty application topic's presence subscribe says so: members [].
	raw = dialRaw(t, node.WSURL(), nil)
	raw.connect(token(t, "ann", time.Hour, []string{"**"}, nil))
	rep := raw.replyTo("p", `{"type":"subscribe","ref":"p","topic":"room/empty","presence":true}`)
	if !rep.OK || !strings.Contains(string(rep.Data), `"members":[]`) {
		t.Errorf("presence subscribe on an empty topic: %s (%+v), want members:[]", rep.Data, rep.Error)
	}
}
