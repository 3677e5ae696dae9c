// Package tracker turns committed PostgreSQL row changes into events on
// table topics.
//
// Capture: an AFTER ROW trigger on each tracked table writes every change
// into updraft.changes, in the changing transaction (schema.sql). Hidden
// columns are removed by the trigger, so they never leave the database.
//
// Reading: each poll reads the changes whose transactions became visible
// between the previous poll's snapshot and the current one, ordered by id,
// in one statement whose own snapshot is the current one:
//
//	txid >= xmin(prev) AND txid < xmax(cur)
//	AND pg_visible_in_snapshot(txid, cur) AND NOT pg_visible_in_snapshot(txid, prev)
//
// Reading "id > last id" instead would lose changes: ids are drawn when a
// row is written, before commit, and transactions commit in any order, so a
// transaction that drew id 5 can commit after one that drew id 6 was read
// and the cursor moved past 6. A snapshot says exactly which transactions
// had committed; the difference of two snapshots is the set that committed
// in between, each read once. Within a window, changes go out in id order,
// which for two changes of the same row is commit order (the second writer
// waited for the first's row lock). A window larger than a page is paged
// through by id, the cursor recording the page.
//
// Leadership: trackers share a lease (broker.Coordinator); the holder
// polls, the others stand by. The batch, its positions and the cursor are
// written by one Redis script that refuses a stale lease, so a deposed
// leader publishes nothing and the next one resumes exactly where the
// last batch ended. A clean shutdown releases the lease at once.
package tracker

import (
	"context"
	"database/sql"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/lib/pq"
	"go.uber.org/zap"

	"github.com/updraft/updraft/broker"
	"github.com/updraft/updraft/internal/backoff"
	"github.com/updraft/updraft/internal/pgmigrate"
)

//go:embed schema.sql
var schema string

func migrate(ctx context.Context, db *sql.DB) error {
	return pgmigrate.Run(ctx, db, "tracker", schema)
}

// Defaults for Config.
const (
	DefaultPollInterval = 200 * time.Millisecond
	DefaultLeaseTTL     = 5 * time.Second
	DefaultRetention    = 24 * time.Hour
	DefaultPageSize     = 1000
	DefaultMaxRow       = 256 << 10
	DefaultName         = "tracker"
	// maxBatchBytes bounds one batch's rows, so that one Redis script call
	// stays small whatever the rows weigh.
	maxBatchBytes = 8 << 20
	// notifyChannel is the channel the trigger notifies with Notify.
	notifyChannel = "updraft_changes"
)

// Config configures New. Zero values take the defaults.
type Config struct {
	// URL is the PostgreSQL connection URL. Required.
	URL string
	// Coordinator elects the leader and publishes its batches: a
	// *broker.Redis in a cluster, a *broker.Memory in one process. Required.
	Coordinator broker.Coordinator
	// Tables are tracked at start-up: "orders" or "schema.table". Every
	// table in the change log is published, including those tracked by
	// hand (Track).
	Tables []string
	// Trigger holds the trigger options (hidden columns, notify).
	Trigger TriggerOptions
	// PollInterval is the time between polls (default 200ms); with
	// Trigger.Notify a change wakes the tracker sooner.
	PollInterval time.Duration
	// Retention is how long change rows are kept after they were published
	// (default 24h). Unpublished rows are never deleted.
	Retention time.Duration
	// LeaseTTL is the leader lease's lifetime (default 5s): after a crash a
	// standby takes over within it; it is renewed every third of it.
	LeaseTTL time.Duration
	// Name names the lease and the cursor (default "tracker"): trackers
	// with one name share one change log and elect one leader.
	Name string
	// PageSize is the most changes read per poll (default 1000).
	PageSize int
	// MaxRow is the largest row, in bytes of JSON (data and old together),
	// sent whole (default 256 KiB). A larger one is sent with its primary
	// key only and marked truncated.
	MaxRow int
	// NodeID names this tracker to the others: the leader records it in
	// updraft.tracker_state, and a standby logs it as the one it waits
	// for. The Logger should carry it too ("node").
	NodeID string
	// Logger (default: none).
	Logger *zap.Logger
	// Metrics, when set, receives the tracker's metrics (NewMetrics).
	Metrics *Metrics
}

// Tracker publishes the changes of the change log. Run it; Close it.
type Tracker struct {
	cfg   Config
	db    *sql.DB
	coord broker.Coordinator
	log   *zap.Logger
	m     *Metrics

	wake     chan struct{} // a notification arrived: poll now
	listener *pq.Listener  // nil without Notify

	pkMu sync.Mutex
	pks  map[string][]string // guarded by pkMu: primary key columns by schema.table
}

// New connects to PostgreSQL, runs the migration and installs the capture
// trigger on every configured table. An unknown table, a table whose name
// cannot be a topic or an unknown hidden column is an error.
func New(ctx context.Context, cfg Config) (*Tracker, error) {
	if cfg.URL == "" {
		return nil, errors.New("tracker: Config.URL is required")
	}
	if cfg.Coordinator == nil {
		return nil, errors.New("tracker: Config.Coordinator is required")
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = DefaultPollInterval
	}
	if cfg.LeaseTTL <= 0 {
		cfg.LeaseTTL = DefaultLeaseTTL
	}
	if cfg.Retention <= 0 {
		cfg.Retention = DefaultRetention
	}
	if cfg.PageSize <= 0 {
		cfg.PageSize = DefaultPageSize
	}
	if cfg.MaxRow <= 0 {
		cfg.MaxRow = DefaultMaxRow
	}
	if cfg.Name == "" {
		cfg.Name = DefaultName
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(nil)
	}
	hidden, err := parseHidden(cfg.Trigger.Hidden)
	if err != nil {
		return nil, fmt.Errorf("tracker: %w", err)
	}
	db, err := sql.Open("postgres", cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("tracker: database URL: %w", err)
	}
	db.SetMaxOpenConns(4)
	t := &Tracker{
		cfg: cfg, db: db, coord: cfg.Coordinator, log: cfg.Logger, m: cfg.Metrics,
		wake: make(chan struct{}, 1),
		pks:  make(map[string][]string),
	}
	unhide, err := parseHidden(cfg.Trigger.Unhide)
	if err != nil {
		return nil, fmt.Errorf("tracker: unhide: %w", err)
	}
	if err := t.setUp(ctx, hidden, unhide); err != nil {
		db.Close()
		return nil, err
	}
	if cfg.Trigger.Notify {
		t.listener = pq.NewListener(cfg.URL, 100*time.Millisecond, 5*time.Second, func(ev pq.ListenerEventType, err error) {
			if err != nil {
				t.log.Warn("tracker: notification listener", zap.Error(err))
			}
		})
		if err := t.listener.Listen(notifyChannel); err != nil {
			t.listener.Close()
			db.Close()
			return nil, fmt.Errorf("tracker: LISTEN %s: %w", notifyChannel, err)
		}
		go t.listen()
	}
	return t, nil
}

func (t *Tracker) setUp(ctx context.Context, hidden, unhide []hiddenColumn) error {
	if err := migrate(ctx, t.db); err != nil {
		return err
	}
	// Hidden columns of tables not tracked here are checked too: a typo
	// must not wait until someone tracks the table by hand.
	for _, h := range hidden {
		ht, err := resolve(ctx, t.db, h.table)
		if err != nil {
			return fmt.Errorf("tracker: hidden column %s.%s: %w", h.table, h.column, err)
		}
		if _, err := hiddenOf(ctx, t.db, ht, []hiddenColumn{h}); err != nil {
			return fmt.Errorf("tracker: %w", err)
		}
	}
	for _, name := range t.cfg.Tables {
		tb, err := resolve(ctx, t.db, name)
		if err != nil {
			return fmt.Errorf("tracker: UPDRAFT_TRACK_TABLES: %w", err)
		}
		if err := trackable(tb); err != nil {
			return fmt.Errorf("tracker: UPDRAFT_TRACK_TABLES: %w", err)
		}
		tr, err := install(ctx, t.db, tb, hidden, unhide, t.cfg.Trigger.Notify)
		if err != nil {
			return fmt.Errorf("tracker: %w", err)
		}
		t.log.Info("tracker: tracking", zap.String("table", tb.ident), zap.String("topic", tb.topic),
			zap.Strings("hidden", tr.Hidden), zap.Strings("hidden_kept", tr.Kept))
	}
	return nil
}

// listen turns notifications (and listener reconnects, which may have
// missed some) into wake-ups.
func (t *Tracker) listen() {
	for range t.listener.Notify {
		select {
		case t.wake <- struct{}{}:
		default:
		}
	}
}

// Close releases the database connections. Call it after Run returned.
func (t *Tracker) Close() error {
	if t.listener != nil {
		t.listener.Close()
	}
	return t.db.Close()
}

// Run stands by for the lease and, while it holds it, publishes changes,
// until ctx ends; then it releases the lease and returns nil. Errors of
// PostgreSQL and Redis are retried with backoff, never returned.
func (t *Tracker) Run(ctx context.Context) error {
	tick := time.NewTicker(t.cfg.PollInterval)
	defer tick.Stop()
	var lastErr time.Time
	var sb standby
	for ctx.Err() == nil {
		lease, err := t.coord.AcquireLease(ctx, t.cfg.Name, t.cfg.LeaseTTL)
		switch {
		case err == nil:
			sb = standby{}
			t.log.Info("tracker: leading", zap.Uint64("fence", lease.Fence()))
			t.m.leader.Set(1)
			err = t.lead(ctx, lease)
			t.m.leader.Set(0)
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			if rerr := t.coord.ReleaseLease(rctx, lease); rerr != nil && ctx.Err() != nil {
				t.log.Warn("tracker: releasing the lease", zap.Error(rerr))
			}
			cancel()
			if ctx.Err() == nil {
				t.log.Warn("tracker: leadership lost, standing by", zap.Error(err))
			}
			continue
		case errors.Is(err, broker.ErrLeaseHeld):
			t.standingBy(ctx, &sb)
		case ctx.Err() == nil && time.Since(lastErr) > 10*time.Second:
			lastErr = time.Now()
			t.m.errors.WithLabelValues("lease").Inc()
			t.log.Warn("tracker: cannot reach the lease", zap.Error(err))
		}
		select {
		case <-ctx.Done():
		case <-tick.C:
		}
	}
	return nil
}

// standby is what a standing-by tracker last said about the leader.
type standby struct {
	logged  bool      // "standing by" was logged since the last leadership
	leader  string    // the leader it named ("" unknown)
	checked time.Time // when the leader was last read
}

// standingBy logs that the tracker stands by, naming the leader as the
// leader recorded it in updraft.tracker_state: once on entering standby,
// then again when the leader changes (read once per lease TTL).
func (t *Tracker) standingBy(ctx context.Context, sb *standby) {
	if sb.logged && time.Since(sb.checked) < t.cfg.LeaseTTL {
		return
	}
	sb.checked = time.Now()
	var leader sql.NullString
	var since sql.NullTime
	err := t.db.QueryRowContext(ctx, `SELECT leader, updated_at FROM updraft.tracker_state WHERE name = $1`, t.cfg.Name).Scan(&leader, &since)
	if err != nil && !errors.Is(err, sql.ErrNoRows) && ctx.Err() == nil {
		t.log.Debug("tracker: reading who leads", zap.Error(err))
	}
	if leader.String == t.cfg.NodeID {
		leader.String = "" // recorded when this tracker led: the new leader has not written yet
	}
	if sb.logged && leader.String == sb.leader {
		return
	}
	sb.logged, sb.leader = true, leader.String
	fields := []zap.Field{zap.Duration("lease_ttl", t.cfg.LeaseTTL)}
	if leader.String != "" {
		// updated_at: the leader's last cursor copy, written every 10 s.
		fields = append(fields, zap.String("leader", leader.String), zap.Time("leader_seen", since.Time))
	} else {
		fields = append(fields, zap.String("leader", "unknown"))
	}
	t.log.Info("tracker: standing by, another tracker holds the lease", fields...)
}

// lead publishes changes while lease is held. It returns when ctx ends or
// the lease is lost.
func (t *Tracker) lead(ctx context.Context, lease broker.Lease) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Add(2)
	go func() { defer wg.Done(); t.renew(ctx, cancel, lease) }()
	go func() { defer wg.Done(); t.janitor(ctx) }()

	cur, err := t.startCursor(ctx, lease)
	if err != nil {
		return err
	}
	t.copyCursor(ctx, cur) // records this node as the leader, for the standbys' logs

	var stmt *sql.Stmt // pollSQL, prepared by the first poll that can
	defer func() {
		if stmt != nil {
			stmt.Close()
		}
	}()
	tick := time.NewTicker(t.cfg.PollInterval)
	defer tick.Stop()
	bo := newBackoff()
	lastCopy := time.Now()
	for {
		if err := context.Cause(ctx); err != nil {
			return err
		}
		started := time.Now()
		rows, next, full, err := t.poll(ctx, &stmt, cur)
		if err != nil {
			if t.retry(ctx, &bo, "poll", err) {
				continue
			}
			return context.Cause(ctx)
		}
		msgs := t.events(ctx, rows)
		if _, err := t.coord.PublishFenced(ctx, lease, msgs, next.String()); err != nil {
			if errors.Is(err, broker.ErrLeaseLost) {
				return err
			}
			// The script may have run even though the answer was lost:
			// the cursor tells.
			if stored, cerr := t.coord.Cursor(ctx, t.cfg.Name); cerr != nil || stored != next.String() {
				if t.retry(ctx, &bo, "publish", err) {
					continue
				}
				return context.Cause(ctx)
			}
		}
		bo.Reset()
		t.m.polls.Observe(time.Since(started).Seconds())
		t.m.batch.Observe(float64(len(msgs)))
		t.m.changes.Add(float64(len(msgs)))
		if len(rows) > 0 {
			t.m.lag.Set(time.Since(time.UnixMilli(rows[0].at)).Seconds())
		} else {
			t.m.lag.Set(0)
		}
		cur = next
		if len(msgs) > 0 || time.Since(lastCopy) > 10*time.Second {
			lastCopy = time.Now()
			t.copyCursor(ctx, cur)
		}
		if full {
			continue // more of the window waits: no pause
		}
		select {
		case <-ctx.Done():
		case <-tick.C:
		case <-t.wake:
		}
	}
}

// Backoff of the leader's retries of PostgreSQL and Redis
// (internal/backoff, full jitter).
const (
	minRetryBackoff = 100 * time.Millisecond
	maxRetryBackoff = 5 * time.Second
)

// newBackoff returns the backoff of one of the leader's retry loops.
func newBackoff() backoff.Backoff {
	return backoff.Backoff{Policy: backoff.Policy{Min: minRetryBackoff, Max: maxRetryBackoff}}
}

// retry logs err, counts it and waits the backoff; false when ctx ended.
func (t *Tracker) retry(ctx context.Context, bo *backoff.Backoff, op string, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	t.m.errors.WithLabelValues(op).Inc()
	d := bo.Next()
	t.log.Warn("tracker: "+op+" failed, retrying", zap.Error(err), zap.Duration("backoff", d))
	return backoff.Sleep(ctx.Done(), d)
}

// renew keeps the lease alive, renewing it every third of its TTL; when it
// is lost, it cancels the leader's context.
func (t *Tracker) renew(ctx context.Context, cancel context.CancelCauseFunc, lease broker.Lease) {
	every := t.cfg.LeaseTTL / 3
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		rctx, rcancel := context.WithTimeout(ctx, every)
		err := t.coord.RenewLease(rctx, lease, t.cfg.LeaseTTL)
		rcancel()
		switch {
		case errors.Is(err, broker.ErrLeaseLost):
			cancel(err)
			return
		case err != nil && ctx.Err() == nil:
			// Redis unreachable: keep trying; if the lease expires
			// meanwhile, the next renewal or batch finds it lost.
			t.m.errors.WithLabelValues("lease").Inc()
			t.log.Warn("tracker: renewing the lease", zap.Error(err))
		}
	}
}

// startCursor returns where the new leader starts: the cursor stored with
// the last batch, else the PostgreSQL copy (Redis lost its data), else the
// current snapshot (first start: changes from now on). A cursor not read
// from Redis is stored there at once, so that a crash right after does not
// move the start.
func (t *Tracker) startCursor(ctx context.Context, lease broker.Lease) (cursor, error) {
	bo := newBackoff()
	for {
		c, err := t.readCursor(ctx, lease)
		if err == nil {
			return c, nil
		}
		if errors.Is(err, broker.ErrLeaseLost) || !t.retry(ctx, &bo, "cursor", err) {
			return cursor{}, err
		}
	}
}

func (t *Tracker) readCursor(ctx context.Context, lease broker.Lease) (cursor, error) {
	s, err := t.coord.Cursor(ctx, t.cfg.Name)
	if err != nil {
		return cursor{}, err
	}
	if s != "" {
		return parseCursor(s)
	}
	from := "PostgreSQL copy"
	err = t.db.QueryRowContext(ctx, `SELECT cursor FROM updraft.tracker_state WHERE name = $1`, t.cfg.Name).Scan(&s)
	if errors.Is(err, sql.ErrNoRows) {
		from = "current snapshot (first start)"
		err = t.db.QueryRowContext(ctx, `SELECT pg_current_snapshot()::text`).Scan(&s)
		s = cursor{prev: s}.String()
	}
	if err != nil {
		return cursor{}, err
	}
	c, err := parseCursor(s)
	if err != nil {
		return cursor{}, err
	}
	if _, err := t.coord.PublishFenced(ctx, lease, nil, c.String()); err != nil {
		return cursor{}, err
	}
	t.log.Info("tracker: the broker holds no cursor, starting from the "+from, zap.String("cursor", s))
	t.copyCursor(ctx, c)
	return c, nil
}

// copyCursor writes the PostgreSQL copy of the cursor. A failure only
// logs: Redis holds the cursor that counts.
func (t *Tracker) copyCursor(ctx context.Context, c cursor) {
	_, err := t.db.ExecContext(ctx, `
		INSERT INTO updraft.tracker_state (name, cursor, leader) VALUES ($1, $2, nullif($3, ''))
		ON CONFLICT (name) DO UPDATE SET cursor = EXCLUDED.cursor, leader = EXCLUDED.leader, updated_at = now()`,
		t.cfg.Name, c.String(), t.cfg.NodeID)
	if err != nil && ctx.Err() == nil {
		t.m.errors.WithLabelValues("cursor").Inc()
		t.log.Warn("tracker: writing the cursor copy", zap.Error(err))
	}
}

// change is one row of the change log.
type change struct {
	id        int64
	tbl       string // schema.table
	op        string
	data, old []byte // JSON; nil when NULL
	at        int64  // Unix milliseconds
}

// pollSQL reads one page of a window; see the package comment. $2 is the
// window, or empty for a new one: the statement's own snapshot, whose
// changes are then all visible to the statement. One statement, so one
// round trip (it is prepared): the first row always carries the window,
// with NULLs for the change when there is none.
const pollSQL = `
WITH w AS MATERIALIZED (SELECT coalesce(nullif($2, '')::pg_snapshot, pg_current_snapshot()) AS cur)
SELECT w.cur::text, c.id, c.tbl, c.op, c.data::text, c.old::text, (extract(epoch FROM c.at) * 1000)::bigint
FROM w LEFT JOIN LATERAL (
  SELECT id, tbl, op, data, old, at
  FROM updraft.changes
  WHERE txid >= pg_snapshot_xmin($1::pg_snapshot) AND txid < pg_snapshot_xmax(w.cur)
    AND pg_visible_in_snapshot(txid, w.cur)
    AND NOT pg_visible_in_snapshot(txid, $1::pg_snapshot)
    AND id > $3
  ORDER BY id
  LIMIT $4) c ON true
ORDER BY c.id`

// poll reads the next page after c with *stmt (pollSQL), preparing it
// first when nil. full reports that the window holds more (next is then
// inside it).
func (t *Tracker) poll(ctx context.Context, stmt **sql.Stmt, c cursor) (rows []change, next cursor, full bool, err error) {
	if *stmt == nil {
		if *stmt, err = t.db.PrepareContext(ctx, pollSQL); err != nil {
			return nil, c, false, fmt.Errorf("preparing the poll: %w", err)
		}
	}
	res, err := (*stmt).QueryContext(ctx, c.prev, c.cur, c.after, t.cfg.PageSize)
	if err != nil {
		return nil, c, false, err
	}
	defer res.Close()
	window := ""
	size := 0
	for res.Next() {
		var ch change
		var id, at sql.NullInt64
		var tbl, op, data, old sql.NullString
		if err := res.Scan(&window, &id, &tbl, &op, &data, &old, &at); err != nil {
			return nil, c, false, err
		}
		if !id.Valid {
			break // the window holds no change
		}
		ch.id, ch.tbl, ch.op, ch.at = id.Int64, tbl.String, op.String, at.Int64
		if data.Valid {
			ch.data = []byte(data.String)
		}
		if old.Valid {
			ch.old = []byte(old.String)
		}
		rows = append(rows, ch)
		if size += len(ch.data) + len(ch.old); size >= maxBatchBytes {
			break
		}
	}
	if err := res.Err(); err != nil {
		return nil, c, false, err
	}
	if window == "" {
		return nil, c, false, errors.New("tracker: the poll returned no window")
	}
	if len(rows) == t.cfg.PageSize || size >= maxBatchBytes {
		return rows, cursor{prev: c.prev, cur: window, after: rows[len(rows)-1].id}, true, nil
	}
	return rows, cursor{prev: window}, false, nil
}

// events turns rows into publications on their tables' topics.
func (t *Tracker) events(ctx context.Context, rows []change) []broker.Item {
	msgs := make([]broker.Item, 0, len(rows))
	for _, r := range rows {
		pub := broker.Publication{Event: r.op, TS: r.at}
		switch r.op {
		case "INSERT":
			pub.Data = r.data
		case "UPDATE":
			pub.Data, pub.Old = r.data, r.old
		default: // DELETE: data is the row as it was
			pub.Data, pub.Old = r.old, r.old
		}
		if len(pub.Data)+len(pub.Old) > t.cfg.MaxRow {
			pub = t.truncate(ctx, r.tbl, pub)
		}
		msgs = append(msgs, broker.Item{Topic: topicOf(r.tbl), Publication: pub})
	}
	return msgs
}

// truncate replaces a row too large to send by its primary key columns,
// marked Truncated: subscribers learn which row changed and can fetch it.
func (t *Tracker) truncate(ctx context.Context, tbl string, pub broker.Publication) broker.Publication {
	t.m.truncated.Inc()
	key := map[string]json.RawMessage{}
	var row map[string]json.RawMessage
	if err := json.Unmarshal(pub.Data, &row); err == nil {
		for _, col := range t.primaryKey(ctx, tbl) {
			if v, ok := row[col]; ok {
				key[col] = v
			}
		}
	}
	data, _ := json.Marshal(key)
	return broker.Publication{Event: pub.Event, TS: pub.TS, Data: data, Truncated: true}
}

// primaryKey returns tbl's primary key columns, cached. A table without
// one, or one that could not be read, has none: its truncated events
// carry an empty object.
func (t *Tracker) primaryKey(ctx context.Context, tbl string) []string {
	t.pkMu.Lock()
	defer t.pkMu.Unlock()
	if cols, ok := t.pks[tbl]; ok {
		return cols
	}
	cols, err := primaryKey(ctx, t.db, tbl)
	if err != nil {
		t.log.Warn("tracker: reading a primary key", zap.String("table", tbl), zap.Error(err))
		return nil
	}
	t.pks[tbl] = cols
	return cols
}

// janitor deletes change rows older than the retention that the leader has
// published (their transactions are older than the cursor's snapshot),
// 1000 at a time, so that no delete holds locks for long.
func (t *Tracker) janitor(ctx context.Context) {
	every := min(max(t.cfg.Retention/10, 10*time.Millisecond), time.Minute)
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		s, err := t.coord.Cursor(ctx, t.cfg.Name)
		if err != nil || s == "" {
			continue
		}
		c, err := parseCursor(s)
		if err != nil {
			continue
		}
		for i := 0; i < 100 && ctx.Err() == nil; i++ { // at most 100,000 rows per round
			res, err := t.db.ExecContext(ctx, `
				DELETE FROM updraft.changes WHERE id IN (
					SELECT id FROM updraft.changes
					WHERE at < now() - $1::interval AND txid < pg_snapshot_xmin($2::pg_snapshot)
					LIMIT 1000)`, fmt.Sprintf("%d milliseconds", t.cfg.Retention.Milliseconds()), c.prev)
			if err != nil {
				if ctx.Err() == nil {
					t.m.errors.WithLabelValues("retention").Inc()
					t.log.Warn("tracker: deleting old changes", zap.Error(err))
				}
				break
			}
			if n, _ := res.RowsAffected(); n < 1000 {
				break
			}
		}
	}
}
