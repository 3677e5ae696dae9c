package tracker

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/updraft/updraft/internal/testenv"
)

// Hidden columns never reach an event, not even in old; other columns do.
func TestHiddenColumns(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.exec(`CREATE TABLE users (id int PRIMARY KEY, name text, password_hash text, token text)`)
	h.subscribe("users")
	h.start(Config{Tables: []string{"users"}, Trigger: TriggerOptions{Hidden: []string{"users.password_hash", "public.users.token"}}})
	h.exec(`INSERT INTO users VALUES (1, 'ann', 'secret-hash', 'secret-token')`,
		`UPDATE users SET name = 'anne', password_hash = 'secret-2' WHERE id = 1`,
		`DELETE FROM users`)
	for _, m := range h.wait("users", 3) {
		if strings.Contains(string(m.Data)+string(m.Old), "secret") {
			t.Errorf("%s leaked a hidden column: data %s old %s", m.Event, m.Data, m.Old)
		}
		if field(t, m.Data, "name") == "<absent>" {
			t.Errorf("%s lost a visible column: %s", m.Event, m.Data)
		}
	}
	// Nor does the change log hold them: they never leave the database.
	var n int
	if err := h.db.QueryRow(`SELECT count(*) FROM updraft.changes WHERE data::text LIKE '%secret%' OR old::text LIKE '%secret%'`).Scan(&n); err != nil || n != 0 {
		t.Errorf("the change log holds %d rows with hidden values (%v)", n, err)
	}
}

// A row too large to send goes out as its primary key, marked truncated;
// a table without a primary key works and sends the whole row.
func TestTruncatedAndKeyless(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.exec(`CREATE TABLE blobs (kind text, id int, body text, PRIMARY KEY (kind, id))`,
		`CREATE TABLE events_log (msg text, at int)`)
	h.subscribe("blobs", "events_log")
	h.start(Config{Tables: []string{"blobs", "events_log"}, MaxRow: 1000})
	h.exec(`INSERT INTO blobs VALUES ('a', 1, repeat('x', 2000))`,
		`INSERT INTO blobs VALUES ('a', 2, 'small')`,
		`UPDATE blobs SET body = 'y' WHERE id = 1`, // old is large: truncated too
		`INSERT INTO events_log VALUES ('no key here', 1)`,
		`INSERT INTO events_log VALUES (repeat('z', 2000), 2)`)
	got := h.wait("blobs", 3)
	if big := got[0]; !big.Truncated || string(big.Data) != `{"id":1,"kind":"a"}` || big.Old != nil {
		t.Errorf("large INSERT: truncated %v data %s old %s; want the key only", big.Truncated, big.Data, big.Old)
	}
	if small := got[1]; small.Truncated || field(t, small.Data, "body") != `"small"` {
		t.Errorf("small INSERT: truncated %v data %s", small.Truncated, small.Data)
	}
	if upd := got[2]; !upd.Truncated || upd.Event != "UPDATE" || string(upd.Data) != `{"id":1,"kind":"a"}` {
		t.Errorf("UPDATE with a large old row: %+v", upd)
	}
	logs := h.wait("events_log", 2)
	if field(t, logs[0].Data, "msg") != `"no key here"` || field(t, logs[0].Data, "at") != "1" {
		t.Errorf("keyless row: %s", logs[0].Data)
	}
	if !logs[1].Truncated || string(logs[1].Data) != `{}` {
		t.Errorf("large keyless row: truncated %v data %s; want {}", logs[1].Truncated, logs[1].Data)
	}
}

// With Notify, a change is published at once although the next poll is an
// hour away.
func TestNotifyWakesTheTracker(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.exec(`CREATE TABLE pings (id int PRIMARY KEY)`)
	h.subscribe("pings")
	h.start(Config{Tables: []string{"pings"}, PollInterval: time.Hour, Trigger: TriggerOptions{Notify: true}})
	for i := 1; i <= 3; i++ {
		if _, err := h.db.Exec(`INSERT INTO pings VALUES ($1)`, i); err != nil {
			t.Fatal(err)
		}
		h.wait("pings", i)
	}
}

// Published change rows older than the retention are deleted.
func TestRetention(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.exec(`CREATE TABLE tmp (id int PRIMARY KEY)`)
	h.subscribe("tmp")
	h.start(Config{Tables: []string{"tmp"}, Retention: 200 * time.Millisecond})
	h.exec(`INSERT INTO tmp SELECT generate_series(1, 2500)`)
	h.wait("tmp", 2500)
	testenv.Eventually(t, waitFor, func() bool {
		var n int
		_ = h.db.QueryRow(`SELECT count(*) FROM updraft.changes`).Scan(&n)
		return n == 0
	}, "change rows were not deleted after the retention")
}

// Track and Untrack by hand: a table tracked by hand is published by a
// running tracker; untracked, its changes stop.
func TestTrackByHand(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.exec(`CREATE TABLE a (id int PRIMARY KEY)`, `CREATE TABLE b (id int PRIMARY KEY, secret text)`)
	h.subscribe("a", "b")
	h.start(Config{Tables: []string{"a"}})
	ctx := context.Background()
	tr, err := Track(ctx, h.db, "b", TriggerOptions{Hidden: []string{"b.secret"}})
	if err != nil || tr.Topic != "b" {
		t.Fatalf("Track(b) = %+v, %v", tr, err)
	}
	h.exec(`INSERT INTO b VALUES (1, 'hidden')`)
	if got := h.wait("b", 1); field(t, got[0].Data, "secret") != "<absent>" {
		t.Errorf("b's event %s shows the hidden column", got[0].Data)
	}
	if _, err := Untrack(ctx, h.db, "b"); err != nil {
		t.Fatal(err)
	}
	h.exec(`INSERT INTO b VALUES (2, 'x')`, `INSERT INTO a VALUES (1)`)
	h.wait("a", 1)
	if n := len(h.rec.messages("b")); n != 1 {
		t.Errorf("b has %d events after Untrack, want 1", n)
	}
	if _, err := Track(ctx, h.db, "nosuch", TriggerOptions{}); err == nil || !strings.Contains(err.Error(), `"nosuch" does not exist`) {
		t.Errorf("Track(nosuch) = %v", err)
	}
}
