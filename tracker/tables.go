package tracker

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
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
	// being tracked apply to it.
	Hidden []string
}

// hiddenColumn is one parsed entry of TriggerOptions.Hidden.
type hiddenColumn struct {
	table  string // as written
	column string
}

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

// Track installs the capture trigger on the table name (replacing one
// installed before, so that changed options apply), after running the
// migration. It returns the topic the table's changes are published on.
func Track(ctx context.Context, db *sql.DB, name string, opt TriggerOptions) (string, error) {
	if err := migrate(ctx, db); err != nil {
		return "", err
	}
	hidden, err := parseHidden(opt.Hidden)
	if err != nil {
		return "", err
	}
	t, err := resolve(ctx, db, name)
	if err != nil {
		return "", err
	}
	return t.topic, install(ctx, db, t, hidden, opt.Notify)
}

// install (re)creates t's capture trigger.
func install(ctx context.Context, q querier, t table, hidden []hiddenColumn, notify bool) error {
	cols, err := hiddenOf(ctx, q, t, hidden)
	if err != nil {
		return err
	}
	mode := "poll"
	if notify {
		mode = "notify"
	}
	args := []string{pq.QuoteLiteral(mode)}
	for _, c := range cols {
		args = append(args, pq.QuoteLiteral(c))
	}
	_, err = q.ExecContext(ctx, fmt.Sprintf(
		`CREATE OR REPLACE TRIGGER %s AFTER INSERT OR UPDATE OR DELETE ON %s
		 FOR EACH ROW EXECUTE FUNCTION updraft.capture(%s)`,
		triggerName, t.ident, strings.Join(args, ", ")))
	if err != nil {
		return fmt.Errorf("installing the capture trigger on %s: %w", t.ident, err)
	}
	return nil
}

// Untrack removes the capture trigger from the table name. Changes already
// in the change log are still published.
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
