-- Change capture for the tracker. Idempotent: it runs at every start-up,
-- under an advisory lock (internal/pgmigrate).
CREATE SCHEMA IF NOT EXISTS updraft;

-- The change log. Every row change of a tracked table adds one row, in the
-- changing transaction: it commits or rolls back with the change. txid is
-- the writing transaction's id; the tracker reads the rows whose
-- transactions became visible between two snapshots (see tracker.go).
CREATE TABLE IF NOT EXISTS updraft.changes (
	id    bigserial   PRIMARY KEY,
	txid  xid8        NOT NULL DEFAULT pg_current_xact_id(),
	tbl   text        NOT NULL,          -- schema.table
	op    text        NOT NULL,          -- INSERT, UPDATE or DELETE
	data  jsonb,                         -- the row after the change (NULL for DELETE)
	old   jsonb,                         -- the row before (NULL for INSERT)
	at    timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS changes_txid ON updraft.changes (txid);
-- Retention deletes by age; a BRIN index costs almost nothing per insert.
CREATE INDEX IF NOT EXISTS changes_at ON updraft.changes USING brin (at);

-- A copy of the leader's cursor, written after its batches: the cursor's
-- home is Redis, next to the positions it publishes with, and this copy
-- lets a tracker resume when Redis lost its data.
CREATE TABLE IF NOT EXISTS updraft.tracker_state (
	name       text PRIMARY KEY,
	cursor     text NOT NULL,
	updated_at timestamptz NOT NULL DEFAULT now()
);

-- The tracker's node id when it took the lease, for the standbys' logs:
-- who leads. Added after the first release.
ALTER TABLE updraft.tracker_state ADD COLUMN IF NOT EXISTS leader text;

-- Every table a capture trigger was installed on, with the columns it
-- hides. The trigger's arguments are a copy of hidden; this row is what
-- tracking the table again (by hand or at start-up) starts from, so that a
-- hidden column never depends on every caller passing the same setting.
-- Untracking a table keeps its row. See Track in tables.go.
CREATE TABLE IF NOT EXISTS updraft.tracked_tables (
	tbl        text        PRIMARY KEY,                -- schema.table, as in changes.tbl
	hidden     text[]      NOT NULL DEFAULT '{}',
	updated_at timestamptz NOT NULL DEFAULT now()
);

-- Upgrade: a table whose capture trigger was installed before
-- tracked_tables existed gets its row from the trigger's arguments (the
-- mode, then the hidden columns; pg_trigger.tgargs holds each followed by
-- a zero byte).
DO $$
DECLARE
	r record;
	args text[];
	s int;
BEGIN
	FOR r IN
		SELECT n.nspname || '.' || c.relname AS tbl, t.tgargs
		FROM pg_trigger t
		JOIN pg_class c ON c.oid = t.tgrelid
		JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE t.tgname = 'updraft_capture'
		  AND NOT EXISTS (SELECT 1 FROM updraft.tracked_tables WHERE tbl = n.nspname || '.' || c.relname)
	LOOP
		args := '{}';
		s := 0;
		FOR i IN 0 .. length(r.tgargs) - 1 LOOP
			IF get_byte(r.tgargs, i) = 0 THEN
				args := args || convert_from(substring(r.tgargs FROM s + 1 FOR i - s), current_setting('server_encoding'));
				s := i + 1;
			END IF;
		END LOOP;
		INSERT INTO updraft.tracked_tables (tbl, hidden)
		VALUES (r.tbl, coalesce(args[2:], '{}'))
		ON CONFLICT (tbl) DO NOTHING;
	END LOOP;
END
$$;

-- The trigger function. Arguments: TG_ARGV[0] is 'notify' to wake the
-- tracker with pg_notify after the change (the low-latency option), or
-- 'poll'; the rest name hidden columns, removed from the row before it is
-- written here, so that they never leave the database.
CREATE OR REPLACE FUNCTION updraft.capture() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
	hidden text[] := CASE WHEN TG_NARGS > 1 THEN TG_ARGV[1:TG_NARGS - 1] ELSE '{}'::text[] END;
	new_row jsonb;
	old_row jsonb;
BEGIN
	IF TG_OP <> 'DELETE' THEN
		new_row := to_jsonb(NEW) - hidden;
	END IF;
	IF TG_OP <> 'INSERT' THEN
		old_row := to_jsonb(OLD) - hidden;
	END IF;
	INSERT INTO updraft.changes (tbl, op, data, old)
	VALUES (TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME, TG_OP, new_row, old_row);
	IF TG_NARGS > 0 AND TG_ARGV[0] = 'notify' THEN
		PERFORM pg_notify('updraft_changes', '');
	END IF;
	RETURN NULL;
END
$$;
