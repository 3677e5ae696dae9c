// Package pgmigrate runs the idempotent schema migrations of the packages
// that keep state in PostgreSQL (durable, tracker).
package pgmigrate

import (
	"context"
	"database/sql"
	"fmt"
)

// lockKey is the advisory lock that serialises the migrations of processes
// starting together ("updraft" in ASCII).
const lockKey = 0x7570647261667400

// Run executes schema, an idempotent script, holding the advisory lock, so
// that processes starting together do not race on CREATE ... IF NOT EXISTS.
// what names the caller in errors ("durable", "tracker").
func Run(ctx context.Context, db *sql.DB, what, schema string) error {
	conn, err := db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("%s: connecting to PostgreSQL: %w", what, err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock($1)`, lockKey); err != nil {
		return fmt.Errorf("%s: migration lock: %w", what, err)
	}
	defer conn.ExecContext(context.Background(), `SELECT pg_advisory_unlock($1)`, lockKey)
	if _, err := conn.ExecContext(ctx, schema); err != nil {
		return fmt.Errorf("%s: migrating: %w", what, err)
	}
	return nil
}
