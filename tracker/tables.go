package tracker

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/lib/pq"

	"github.com/updraft/updraft/protocol"
)

// triggerName is the capture trigger's name on every tracked table.
const triggerName = "updraft_capture"

// table is a resolved table: its quoted name for SQL, its schema and name,
// and the topic its changes are published on.
type table struct {
	ident  string // quoted and schema-qualified when needed, as regclass prints it
	schema string
	name   string
	topic  string
}

// resolve finds name ("orders", "billing.invoices", or a quoted identifier)
// through the search path, and checks that its changes can have a topic.
func resolve(ctx context.Context, q querier, name string) (table, error) {
	var t table
	err := q.QueryRowContext(ctx, `
		SELECT c.oid::regclass::text, n.nspname, c.relname
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.oid = to_regclass($1) AND c.relkind IN ('r', 'p')`, name).Scan(&t.ident, &t.schema, &t.name)
	if errors.Is(err, sql.ErrNoRows) {
		return table{}, fmt.Errorf("table %q does not exist (or is not a table)", name)
	}
	if err != nil {
		var pqErr *pq.Error
		if errors.As(err, &pqErr) && pqErr.Code.Class() == "42" { // syntax error or access rule violation
			return table{}, fmt.Errorf("table %q: %s", name, pqErr.Message)
		}
		return table{}, fmt.Errorf("looking up table %q: %w", name, err)
	}
	t.topic = topicOf(t.schema + "." + t.name)
	if err := protocol.ValidateTopic(t.topic); err != nil || !protocol.IsTable(t.topic) {
		return table{}, fmt.Errorf("table %q cannot be tracked: its topic %q is not a valid table topic (names may use A-Z a-z 0-9 _ - : @)", name, t.topic)
	}
	return t, nil
}

// topicOf returns the topic of a change log's "schema.table": the table
// name alone in the public schema, else schema.table.
func topicOf(qualified string) string {
	if name, ok := strings.CutPrefix(qualified, "public."); ok {
		return name
	}
	return qualified
}

// querier is what resolve and the trigger functions need of *sql.DB or
// *sql.Tx.
type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// TriggerOptions are the capture trigger's settings, from the tracker's
// configuration: the same for every process that installs triggers.
type TriggerOptions struct {
	// Notify makes the trigger wake the tracker with pg_notify.
	Notify bool
	// Hidden lists columns removed from every captured row, each
	// "table.column" or "schema.table.column"; only those of the table
	// being tracked apply to it. They add to the table's stored hidden
	// columns (updraft.tracked_tables); see Track.
	Hidden []string
	// Unhide lists stored hidden columns to reveal again, in the same form
	// (`updraft track --unhide`): the only way a hidden column is ever
	// revealed.
	Unhide []string
}

// hiddenColumn is one parsed entry of TriggerOptions.Hidden or Unhide.
type hiddenColumn struct {
	table  string // as written
	column string
}

func (h hiddenColumn) String() string { return h.table + "." + h.column }

func parseHidden(entries []string) ([]hiddenColumn, error) {
	out := make([]hiddenColumn, 0, len(entries))
	for _, e := range entries {
		e = strings.TrimSpace(e)
		i := strings.LastIndexByte(e, '.')
		if i <= 0 || i == len(e)-1 {
			return nil, fmt.Errorf("hidden column %q: want table.column (or schema.table.column)", e)
		}
		out = append(out, hiddenColumn{table: e[:i], column: e[i+1:]})
	}
	return out, nil
}

// hiddenOf returns the hidden columns of t, checking that each exists: a
// misspelled hidden column would silently publish the real one.
func hiddenOf(ctx context.Context, q querier, t table, hidden []hiddenColumn) ([]string, error) {
	var cols []string
	for _, h := range hidden {
		ht, err := resolve(ctx, q, h.table)
		if err != nil {
			return nil, fmt.Errorf("hidden column %s.%s: %w", h.table, h.column, err)
		}
		if ht.ident != t.ident {
			continue
		}
		var exists bool
		err = q.QueryRowContext(ctx, `
			SELECT EXISTS (SELECT 1 FROM pg_attribute
				WHERE attrelid = to_regclass($1) AND attname = $2 AND attnum > 0 AND NOT attisdropped)`,
			t.ident, h.column).Scan(&exists)
		if err != nil {
			return nil, fmt.Errorf("hidden column %s.%s: %w", h.table, h.column, err)
		}
		if !exists {
			return nil, fmt.Errorf("hidden column %s.%s: table %s has no column %q", h.table, h.column, t.ident, h.column)
		}
		cols = append(cols, h.column)
	}
	return cols, nil
}

// unhideOf returns the columns of unhide that belong to t.
func unhideOf(ctx context.Context, q querier, t table, unhide []hiddenColumn) ([]string, error) {
	var cols []string
	for _, u := range unhide {
		ut, err := resolve(ctx, q, u.table)
		if err != nil {
			return nil, fmt.Errorf("--unhide %s: %w", u, err)
		}
		if ut.ident == t.ident {
			cols = append(cols, u.column)
		}
	}
	return cols, nil
}

// ownSchema is the schema of Updraft's own tables (schema.sql).
const ownSchema = "updraft"

// trackable refuses Updraft's own schema and PostgreSQL's: a capture
// trigger on updraft.changes fires on its own inserts, and every write to
// every tracked table then fails with "stack depth limit exceeded".
// PostgreSQL reserves schema names starting with pg_ (pg_catalog,
// pg_toast, pg_temp_N, pg_toast_temp_N).
func trackable(t table) error {
	switch {
	case t.schema == ownSchema:
		return fmt.Errorf("table %s.%s cannot be tracked: schema %s is Updraft's own (a trigger on its change log would capture its own writes)", t.schema, t.name, t.schema)
	case t.schema == "information_schema" || strings.HasPrefix(t.schema, "pg_"):
		return fmt.Errorf("table %s.%s cannot be tracked: %s is a PostgreSQL system schema", t.schema, t.name, t.schema)
	}
	return nil
}

// Tracked is what Track (and the tracker at start-up) installed on a
// table.
type Tracked struct {
	Table string // schema.table
	Topic string
	// Hidden are the columns the trigger now removes, sorted: the stored
	// ones and the added ones, less the revealed ones.
	Hidden []string
	// Kept are the stored hidden columns that TriggerOptions.Hidden did
	// not list (it named none of the table's columns).
	Kept []string
	// Revealed are the columns TriggerOptions.Unhide revealed.
	Revealed []string
}

// ErrNarrowing is returned when the trigger options would reveal a stored
// hidden column without TriggerOptions.Unhide naming it.
var ErrNarrowing = errors.New("hidden columns are never revealed implicitly")

// Track installs the capture trigger on the table name (replacing one
// installed before, so that changed options apply), after running the
// migration.
//
// The table's hidden columns are stored in updraft.tracked_tables, so that
// they do not depend on every caller passing the same options. opt.Hidden
// adds to them; when it names none of the table's columns, the stored ones
// are kept. When it names some but leaves out a stored one, Track refuses
// (ErrNarrowing): a column is revealed only by opt.Unhide.
func Track(ctx context.Context, db *sql.DB, name string, opt TriggerOptions) (Tracked, error) {
	if err := migrate(ctx, db); err != nil {
		return Tracked{}, err
	}
	hidden, err := parseHidden(opt.Hidden)
	if err != nil {
		return Tracked{}, err
	}
	unhide, err := parseHidden(opt.Unhide)
	if err != nil {
		return Tracked{}, fmt.Errorf("--unhide: %w", err)
	}
	t, err := resolve(ctx, db, name)
	if err != nil {
		return Tracked{}, err
	}
	return install(ctx, db, t, hidden, unhide, opt.Notify)
}

// install (re)creates t's capture trigger with its stored hidden columns
// and hidden (less unhide), and stores the result, in one transaction
// that holds the table's row of updraft.tracked_tables: concurrent
// installs of one table apply one after the other.
func install(ctx context.Context, db *sql.DB, t table, hidden, unhide []hiddenColumn, notify bool) (Tracked, error) {
	if err := trackable(t); err != nil {
		return Tracked{}, err
	}
	add, err := hiddenOf(ctx, db, t, hidden)
	if err != nil {
		return Tracked{}, err
	}
	reveal, err := unhideOf(ctx, db, t, unhide)
	if err != nil {
		return Tracked{}, err
	}
	res := Tracked{Table: t.schema + "." + t.name, Topic: t.topic, Revealed: reveal}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return Tracked{}, err
	}
	defer tx.Rollback()
	var stored []string
	err = tx.QueryRowContext(ctx, `
		INSERT INTO updraft.tracked_tables AS t (tbl) VALUES ($1)
		ON CONFLICT (tbl) DO UPDATE SET tbl = t.tbl
		RETURNING hidden`, res.Table).Scan(pq.Array(&stored))
	if err != nil {
		return Tracked{}, fmt.Errorf("reading the hidden columns of %s: %w", t.ident, err)
	}
	if res.Hidden, res.Kept, err = mergeHidden(res.Table, stored, add, reveal); err != nil {
		return Tracked{}, err
	}
	_, err = tx.ExecContext(ctx, `UPDATE updraft.tracked_tables SET hidden = $2, updated_at = now() WHERE tbl = $1`,
		res.Table, pq.Array(append([]string{}, res.Hidden...))) // never NULL
	if err != nil {
		return Tracked{}, fmt.Errorf("storing the hidden columns of %s: %w", t.ident, err)
	}
	mode := "poll"
	if notify {
		mode = "notify"
	}
	args := []string{pq.QuoteLiteral(mode)}
	for _, c := range res.Hidden {
		args = append(args, pq.QuoteLiteral(c))
	}
	_, err = tx.ExecContext(ctx, fmt.Sprintf(
		`CREATE OR REPLACE TRIGGER %s AFTER INSERT OR UPDATE OR DELETE ON %s
		 FOR EACH ROW EXECUTE FUNCTION updraft.capture(%s)`,
		triggerName, t.ident, strings.Join(args, ", ")))
	if err != nil {
		return Tracked{}, fmt.Errorf("installing the capture trigger on %s: %w", t.ident, err)
	}
	if err := tx.Commit(); err != nil {
		return Tracked{}, fmt.Errorf("installing the capture trigger on %s: %w", t.ident, err)
	}
	return res, nil
}

// mergeHidden applies the rule of Track to the table tbl's stored hidden
// columns: add adds; reveal removes, each of them stored and not added;
// a non-empty add must list every stored column not revealed. It returns
// the new set, sorted, and the stored columns kept that add did not list.
func mergeHidden(tbl string, stored, add, reveal []string) (hidden, kept []string, err error) {
	for _, c := range reveal {
		switch {
		case slices.Contains(add, c):
			return nil, nil, fmt.Errorf("--unhide %s.%s: UPDRAFT_HIDDEN_COLUMNS hides it; take it out of the setting first", tbl, c)
		case !slices.Contains(stored, c):
			return nil, nil, fmt.Errorf("--unhide %s.%s: the column is not hidden (hidden: %s)", tbl, c, list(stored))
		}
	}
	for _, c := range stored {
		if slices.Contains(reveal, c) {
			continue
		}
		if len(add) > 0 && !slices.Contains(add, c) {
			return nil, nil, fmt.Errorf("%w: %s.%s is hidden, and UPDRAFT_HIDDEN_COLUMNS names other columns of %s but not this one; "+
				"list it too to keep it hidden, or reveal it with `updraft track --unhide %s.%s %s`",
				ErrNarrowing, tbl, c, tbl, topicOf(tbl), c, topicOf(tbl))
		}
		if !slices.Contains(add, c) {
			kept = append(kept, c)
		}
		hidden = append(hidden, c)
	}
	for _, c := range add {
		if !slices.Contains(hidden, c) {
			hidden = append(hidden, c)
		}
	}
	slices.Sort(hidden)
	return hidden, kept, nil
}

// list renders columns for an error: "a, b", or "none".
func list(cols []string) string {
	if len(cols) == 0 {
		return "none"
	}
	return strings.Join(cols, ", ")
}

// Untrack removes the capture trigger from the table name. Changes already
// in the change log are still published. The table's stored hidden
// columns stay: tracking it again hides them still.
func Untrack(ctx context.Context, db *sql.DB, name string) (string, error) {
	t, err := resolve(ctx, db, name)
	if err != nil {
		return "", err
	}
	if _, err := db.ExecContext(ctx, fmt.Sprintf(`DROP TRIGGER IF EXISTS %s ON %s`, triggerName, t.ident)); err != nil {
		return "", fmt.Errorf("removing the capture trigger from %s: %w", t.ident, err)
	}
	return t.topic, nil
}

// primaryKey returns the primary key columns of the change log's
// "schema.table", in key order; none for a table without one.
func primaryKey(ctx context.Context, db *sql.DB, qualified string) ([]string, error) {
	schema, name, _ := strings.Cut(qualified, ".")
	rows, err := db.QueryContext(ctx, `
		SELECT a.attname
		FROM pg_index i
		JOIN pg_class c ON c.oid = i.indrelid
		JOIN pg_namespace n ON n.oid = c.relnamespace
		JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) ON true
		JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
		WHERE n.nspname = $1 AND c.relname = $2 AND i.indisprimary
		ORDER BY k.ord`, schema, name)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var cols []string
	for rows.Next() {
		var c string
		if err := rows.Scan(&c); err != nil {
			return nil, err
		}
		cols = append(cols, c)
	}
	return cols, rows.Err()
}
