package tracker

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

// A table's hidden columns are stored with it: tracking it again without
// them (by hand or at start-up) keeps hiding them; they can be added to,
// never narrowed implicitly, and revealed only by Unhide.
func TestHiddenColumnsAreKept(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.exec(`CREATE TABLE users (id int PRIMARY KEY, name text, email text, password_hash text)`)
	h.subscribe("users")
	h.start(Config{})
	ctx := context.Background()
	track := func(opt TriggerOptions) Tracked {
		t.Helper()
		tr, err := Track(ctx, h.db, "users", opt)
		if err != nil {
			t.Fatalf("Track(users, %+v): %v", opt, err)
		}
		return tr
	}
	// shows inserts a row and returns which of email and password_hash
	// its event shows.
	n := 0
	shows := func() []string {
		t.Helper()
		n++
		if _, err := h.db.Exec(`INSERT INTO users VALUES ($1, 'ann', 'ann@example.com', 'secret-hash')`, n); err != nil {
			t.Fatal(err)
		}
		ev := h.wait("users", n)[n-1]
		var cols []string
		for _, c := range []string{"email", "password_hash"} {
			if field(t, ev.Data, c) != "<absent>" {
				cols = append(cols, c)
			}
		}
		return cols
	}

	track(TriggerOptions{Hidden: []string{"users.password_hash"}})
	// Again without the setting, and with a setting naming other tables
	// only: the stored column stays hidden.
	if tr := track(TriggerOptions{}); !slices.Equal(tr.Hidden, []string{"password_hash"}) || !slices.Equal(tr.Kept, []string{"password_hash"}) {
		t.Errorf("tracked again without the setting: %+v", tr)
	}
	if got := shows(); !slices.Equal(got, []string{"email"}) {
		t.Errorf("tracked again without the setting, the event shows %v, want email only", got)
	}
	// Naming the table but leaving the stored column out would reveal it:
	// refused, naming the way to do it.
	_, err := Track(ctx, h.db, "users", TriggerOptions{Hidden: []string{"users.email"}})
	if !errors.Is(err, ErrNarrowing) || !strings.Contains(err.Error(), "--unhide users.password_hash users") {
		t.Errorf("narrowing: %v, want ErrNarrowing naming --unhide", err)
	}
	if got := shows(); !slices.Equal(got, []string{"email"}) {
		t.Errorf("after a refused narrowing the event shows %v", got)
	}
	// Adding is allowed.
	if tr := track(TriggerOptions{Hidden: []string{"users.password_hash", "users.email"}}); !slices.Equal(tr.Hidden, []string{"email", "password_hash"}) {
		t.Errorf("adding email: hidden %v", tr.Hidden)
	}
	if got := shows(); len(got) != 0 {
		t.Errorf("both hidden, the event shows %v", got)
	}
	// The tracker's start-up keeps them too.
	h.start(Config{Tables: []string{"users"}, Coordinator: h.broker(nil)})
	if got := shows(); len(got) != 0 {
		t.Errorf("after the tracker's start-up the event shows %v", got)
	}
	// Unhide reveals; it refuses a column the setting hides or that is not hidden.
	for _, c := range []struct {
		opt  TriggerOptions
		want string
	}{
		{TriggerOptions{Hidden: []string{"users.email"}, Unhide: []string{"users.email"}}, "take it out of the setting"},
		{TriggerOptions{Unhide: []string{"users.name"}}, "not hidden"},
		{TriggerOptions{Unhide: []string{"users"}}, "want table.column"},
	} {
		if _, err := Track(ctx, h.db, "users", c.opt); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Track(%+v) = %v, want %q", c.opt, err, c.want)
		}
	}
	if tr := track(TriggerOptions{Unhide: []string{"users.email"}}); !slices.Equal(tr.Hidden, []string{"password_hash"}) || !slices.Equal(tr.Revealed, []string{"email"}) {
		t.Errorf("unhide email: %+v", tr)
	}
	if got := shows(); !slices.Equal(got, []string{"email"}) {
		t.Errorf("email revealed: the event shows %v", got)
	}
	// Untracked and tracked again: still hidden.
	if _, err := Untrack(ctx, h.db, "users"); err != nil {
		t.Fatal(err)
	}
	if tr := track(TriggerOptions{}); !slices.Equal(tr.Hidden, []string{"password_hash"}) {
		t.Errorf("tracked again after untrack: hidden %v", tr.Hidden)
	}
}

// An install from before updraft.tracked_tables existed: the migration
// takes each table's hidden columns from its trigger's arguments.
func TestHiddenColumnsUpgrade(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.exec(`CREATE TABLE users (id int PRIMARY KEY, "pass wörd" text, token text, name text)`)
	h.subscribe("users")
	h.start(Config{})
	// As the previous release left it.
	h.exec(`DROP TABLE updraft.tracked_tables`,
		`CREATE OR REPLACE TRIGGER updraft_capture AFTER INSERT OR UPDATE OR DELETE ON users
		 FOR EACH ROW EXECUTE FUNCTION updraft.capture('poll', 'pass wörd', 'token')`)
	tr, err := Track(context.Background(), h.db, "users", TriggerOptions{})
	if err != nil || !slices.Equal(tr.Hidden, []string{"pass wörd", "token"}) {
		t.Fatalf("Track after the upgrade = %+v, %v; want the trigger's hidden columns kept", tr, err)
	}
	h.exec(`INSERT INTO users VALUES (1, 'secret', 'secret', 'ann')`)
	if ev := h.wait("users", 1)[0]; strings.Contains(string(ev.Data), "secret") || field(t, ev.Data, "name") != `"ann"` {
		t.Errorf("after the upgrade the event is %s", ev.Data)
	}
}

// Updraft's own schema and the system schemas cannot be tracked: a trigger
// on updraft.changes would fire on its own inserts and break every write
// to every tracked table.
func TestTrackRefusesOwnAndSystemSchemas(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.exec(`CREATE TABLE orders (id int PRIMARY KEY)`)
	h.subscribe("orders")
	h.start(Config{Tables: []string{"orders"}})
	ctx := context.Background()
	for _, c := range []struct{ name, want string }{
		{"updraft.changes", "schema updraft is Updraft's own"},
		{"updraft.tracker_state", "schema updraft is Updraft's own"},
		{"pg_catalog.pg_class", "pg_catalog is a PostgreSQL system schema"},
		{"pg_class", "pg_catalog is a PostgreSQL system schema"},
		{"information_schema.sql_features", "information_schema is a PostgreSQL system schema"},
	} {
		if _, err := Track(ctx, h.db, c.name, TriggerOptions{}); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Track(%s) = %v, want %q", c.name, err, c.want)
		}
	}
	// At start-up too.
	tctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if tr, err := New(tctx, Config{URL: h.pg.URL(), Coordinator: h.broker(nil), Tables: []string{"orders", "updraft.changes"}}); err == nil {
		tr.Close()
		t.Error("New with updraft.changes in Tables succeeded")
	} else if !strings.Contains(err.Error(), "UPDRAFT_TRACK_TABLES") || !strings.Contains(err.Error(), "Updraft's own") {
		t.Errorf("New with updraft.changes: %v", err)
	}
	// A table created once Updraft's schema exists is the user's: the
	// role is named updraft, like the schema, and must not put it there.
	h.exec(`CREATE TABLE late (id int PRIMARY KEY)`)
	if tr, err := Track(ctx, h.db, "late", TriggerOptions{}); err != nil || tr.Table != "public.late" || tr.Topic != "late" {
		t.Errorf("Track(late) = %+v, %v; want public.late", tr, err)
	}
	// Writes to tracked tables still work and are published.
	h.exec(`INSERT INTO orders VALUES (1)`)
	h.wait("orders", 1)
	var n int
	if err := h.db.QueryRow(`SELECT count(*) FROM pg_trigger WHERE tgname = 'updraft_capture' AND tgrelid = 'updraft.changes'::regclass`).Scan(&n); err != nil || n != 0 {
		t.Errorf("updraft.changes has %d capture triggers (%v)", n, err)
	}
}
