package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/kelseyhightower/envconfig"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/updraft/updraft/broker"
	"github.com/updraft/updraft/tracker"

	_ "github.com/lib/pq" // the "postgres" database/sql driver
)

// trackerConfig is the tracker's configuration, read from UPDRAFT_*
// variables by `updraft tracker`, by `updraft serve` (which runs the
// tracker in process in embedded mode) and by `updraft track`. Its tags
// are the one source of each setting's name, default and meaning, as
// serveConfig's are: `updraft tracker --help-env` prints README.md's table.
type trackerConfig struct {
	DatabaseURL     string        `envconfig:"DATABASE_URL" desc:"the database whose tables are tracked (required by {updraft tracker})"`
	TrackTables     []string      `envconfig:"TRACK_TABLES" desc:"comma-separated tables ({orders}, {billing.invoices}) whose capture trigger is installed at start-up; an unknown table, or one in {updraft.*} or a system schema, stops start-up. Tables tracked by hand are published too"`
	PollInterval    time.Duration `envconfig:"POLL_INTERVAL" default:"200ms" desc:"time between polls of the change log (at least 10ms)"`
	Notify          bool          `envconfig:"TRACKER_NOTIFY" default:"false" desc:"the trigger also sends {pg_notify}, so the tracker polls at once; the poll stays as the safety net"`
	HiddenColumns   []string      `envconfig:"HIDDEN_COLUMNS" desc:"comma-separated {table.column} (or {schema.table.column}) removed from captured rows inside PostgreSQL; an unknown column stops start-up. Adds to each table's stored hidden columns; one that names some of a table's columns but leaves out a stored one stops start-up (only {updraft track --unhide} reveals a column)"`
	ChangeRetention time.Duration `envconfig:"CHANGE_RETENTION" default:"24h" desc:"published change rows older than this are deleted, 1,000 at a time (at least 1m)"`
	LeaseTTL        time.Duration `envconfig:"LEASE_TTL" default:"5s" desc:"the leader lease: after a crash a standby takes over within it (a clean stop hands over at once; at least 1s and three {UPDRAFT_POLL_INTERVAL}s)"`
	MaxRow          int           `envconfig:"MAX_ROW" default:"262144" desc:"a change whose JSON (row and old row) is larger is sent as its primary key with {\"truncated\":true} (at least 1024)"`
	// NodeID is shared with serve: in embedded mode the tracker is the
	// node's own.
	NodeID string `envconfig:"NODE_ID" doc_default:"<hostname>-<pid>" desc:"{updraft tracker}: its name in every log line ({\"node\"}) and, while it leads, the leader a standby's \"standing by\" line names"`
}

// loadTrackerConfig reads the tracker's variables and validates them.
// Every error names the variable at fault.
func loadTrackerConfig() (trackerConfig, error) {
	var c trackerConfig
	if err := envconfig.Process("UPDRAFT", &c); err != nil {
		return c, err
	}
	if err := c.validate(); err != nil {
		return c, err
	}
	if c.NodeID == "" {
		c.NodeID = defaultNodeID()
	}
	return c, nil
}

// validate checks every setting of the tracker once, naming the variable
// and the values it allows.
func (c trackerConfig) validate() error {
	if err := firstError(
		atLeast("UPDRAFT_POLL_INTERVAL", c.PollInterval, 10*time.Millisecond),
		atLeast("UPDRAFT_CHANGE_RETENTION", c.ChangeRetention, time.Minute),
		atLeast("UPDRAFT_LEASE_TTL", c.LeaseTTL, time.Second),
	); err != nil {
		return err
	}
	if c.LeaseTTL < 3*c.PollInterval {
		return fmt.Errorf("UPDRAFT_LEASE_TTL (%v) must be at least three UPDRAFT_POLL_INTERVALs (%v)", c.LeaseTTL, c.PollInterval)
	}
	return atLeast("UPDRAFT_MAX_ROW", c.MaxRow, 1024)
}

// defaultNodeID is UPDRAFT_NODE_ID's default: <hostname>-<pid>.
func defaultNodeID() string {
	host, _ := os.Hostname()
	if host == "" {
		host = "updraft"
	}
	return fmt.Sprintf("%s-%d", host, os.Getpid())
}

func (c trackerConfig) trigger() tracker.TriggerOptions {
	return tracker.TriggerOptions{Notify: c.Notify, Hidden: c.HiddenColumns}
}

// newTracker makes the tracker of c, publishing through coord.
func (c trackerConfig) newTracker(ctx context.Context, coord broker.Coordinator, log *zap.Logger, reg prometheus.Registerer) (*tracker.Tracker, error) {
	tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	t, err := tracker.New(tctx, tracker.Config{
		URL:          c.DatabaseURL,
		Coordinator:  coord,
		Tables:       c.TrackTables,
		Trigger:      c.trigger(),
		PollInterval: c.PollInterval,
		Retention:    c.ChangeRetention,
		LeaseTTL:     c.LeaseTTL,
		MaxRow:       c.MaxRow,
		NodeID:       c.NodeID,
		Logger:       log,
		Metrics:      tracker.NewMetrics(reg),
	})
	if err != nil {
		return nil, fmt.Errorf("UPDRAFT_DATABASE_URL: %w", err)
	}
	return t, nil
}

// trackerProcessConfig is what `updraft tracker` reads besides
// trackerConfig.
type trackerProcessConfig struct {
	Addr     string `envconfig:"ADDR" default:":8081" desc:"{updraft tracker} only: where it serves {/metrics} and {/healthz}"`
	RedisURL string `envconfig:"REDIS_URL" desc:"required by {updraft tracker}: trackers elect their leader and publish through Redis"`
	LogLevel string `envconfig:"LOG_LEVEL" default:"info" desc:"{updraft tracker}: {debug}, {info}, {warn} or {error}; logs are JSON lines on stderr"`
}

// validate checks the settings only `updraft tracker` reads.
func (c trackerProcessConfig) validate() error {
	if c.RedisURL == "" {
		return errors.New("UPDRAFT_REDIS_URL is required: trackers elect their leader and publish through Redis (without Redis, `updraft serve` runs the tracker in process)")
	}
	return validateLogLevel(c.LogLevel)
}

func runTracker(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("tracker", stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, `Usage: updraft tracker

Publishes the committed changes of tracked PostgreSQL tables as events on
their table topics, configured by UPDRAFT_* environment variables (see
README.md): UPDRAFT_DATABASE_URL and UPDRAFT_REDIS_URL are required. Run
two or more: one leads, the others stand by (and log who leads; each
names itself by UPDRAFT_NODE_ID). Serves /metrics and /healthz on
UPDRAFT_ADDR (default :8081). --help-env lists the variables.

In a single process without Redis, 'updraft serve' runs the tracker itself
when UPDRAFT_DATABASE_URL is set.`)
	}
	helpEnv := fs.Bool("help-env", false, helpEnvUsage)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *helpEnv {
		envTable(stdout, trackerConfig{}, trackerProcessConfig{})
		return nil
	}
	var pc trackerProcessConfig
	if err := envconfig.Process("UPDRAFT", &pc); err != nil {
		return err
	}
	tc, err := loadTrackerConfig()
	if err != nil {
		return err
	}
	if tc.DatabaseURL == "" {
		return errors.New("UPDRAFT_DATABASE_URL is required: the tracker reads PostgreSQL")
	}
	if err := pc.validate(); err != nil {
		return err
	}
	log, err := newLogger(pc.LogLevel)
	if err != nil {
		return err
	}
	defer log.Sync()
	log = log.With(zap.String("node", tc.NodeID)) // every line: which tracker said it
	warnUnknownEnv(log, os.Environ())

	logRedisThroughZap(log)
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	rb, err := broker.NewRedis(rctx, broker.RedisConfig{URL: pc.RedisURL, Logger: log.Named("broker")})
	cancel()
	if err != nil {
		return fmt.Errorf("UPDRAFT_REDIS_URL: %w", err)
	}
	defer rb.Close()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	t, err := tc.newTracker(ctx, rb, log.Named("tracker"), reg)
	if err != nil {
		return err
	}
	defer t.Close()

	ln, err := net.Listen("tcp", pc.Addr)
	if err != nil {
		return fmt.Errorf("UPDRAFT_ADDR: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	defer srv.Close()
	log.Info("tracker running", zap.String("addr", ln.Addr().String()), zap.Strings("tables", tc.TrackTables),
		zap.Duration("poll", tc.PollInterval), zap.Bool("notify", tc.Notify))
	return t.Run(ctx) // releases the lease on SIGTERM: a standby takes over at once
}

// runTrack and runUntrack manage the capture trigger of tables by hand.
func runTrack(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return trackOrUntrack(ctx, "track", args, stdout, stderr)
}

func runUntrack(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return trackOrUntrack(ctx, "untrack", args, stdout, stderr)
}

func trackOrUntrack(ctx context.Context, name string, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet(name, stderr)
	var unhide []string
	fs.Usage = func() {
		if name == "track" {
			fmt.Fprintln(stderr, `Usage: updraft track [--unhide TABLE.COLUMN]... TABLE...

Installs the capture trigger on each table (orders, or schema.table), so
that the tracker publishes its changes; UPDRAFT_DATABASE_URL names the
database, and UPDRAFT_HIDDEN_COLUMNS and UPDRAFT_TRACKER_NOTIFY apply as
for the tracker.

A table's hidden columns are stored with it (updraft.tracked_tables):
tracking it again without UPDRAFT_HIDDEN_COLUMNS keeps them, and the
setting may add to them; a setting that names some of the table's columns
but leaves out a stored one is refused. A hidden column is revealed only
by --unhide. Updraft's own schema and PostgreSQL's system schemas cannot
be tracked.

Flags:`)
			fs.PrintDefaults()
		} else {
			fmt.Fprintln(stderr, `Usage: updraft untrack TABLE...

Removes the capture trigger from each table; UPDRAFT_DATABASE_URL names the
database. Changes already captured are still published. The table's stored
hidden columns stay: tracking it again hides them still.`)
		}
	}
	if name == "track" {
		fs.Func("unhide", "reveal a stored hidden `TABLE.COLUMN` again (comma-separated or repeated); the table must be one of those tracked", func(v string) error {
			for _, c := range strings.Split(v, ",") {
				if c = strings.TrimSpace(c); c != "" {
					unhide = append(unhide, c)
				}
			}
			return nil
		})
	}
	// Flags may come after the tables too: `updraft track users --unhide users.email`.
	var tables []string
	for rest := args; ; {
		if err := parseFlags(fs, rest); err != nil {
			return err
		}
		if fs.NArg() == 0 {
			break
		}
		tables, rest = append(tables, fs.Arg(0)), fs.Args()[1:]
	}
	if len(tables) == 0 {
		fs.Usage()
		return errUsage
	}
	tc, err := loadTrackerConfig()
	if err != nil {
		return err
	}
	if tc.DatabaseURL == "" {
		return errors.New("UPDRAFT_DATABASE_URL is required")
	}
	db, err := openDB(tc.DatabaseURL)
	if err != nil {
		return err
	}
	defer db.Close()
	if name == "untrack" {
		for _, table := range tables {
			topic, err := tracker.Untrack(ctx, db, table)
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "no longer tracking %s (topic %s)\n", table, topic)
		}
		return nil
	}
	opt := tc.trigger()
	opt.Unhide = unhide
	revealed := 0
	for _, table := range tables {
		tr, err := tracker.Track(ctx, db, table, opt)
		if err != nil {
			return err
		}
		revealed += len(tr.Revealed)
		fmt.Fprintf(stdout, "tracking %s: its changes are published on topic %s; %s\n", table, tr.Topic, describeHidden(tr))
	}
	if revealed != len(unhide) {
		return fmt.Errorf("--unhide %s: each must name a column of a table being tracked (%s)", strings.Join(unhide, ","), strings.Join(tables, " "))
	}
	return nil
}

// describeHidden says which columns tr's trigger hides, and how to reveal
// those kept from an earlier track.
func describeHidden(tr tracker.Tracked) string {
	var b strings.Builder
	if len(tr.Hidden) == 0 {
		b.WriteString("no hidden columns")
	} else {
		fmt.Fprintf(&b, "hidden columns: %s", strings.Join(tr.Hidden, ", "))
	}
	if len(tr.Kept) > 0 {
		fmt.Fprintf(&b, " (%s kept from before; reveal with --unhide %s.%s)", strings.Join(tr.Kept, ", "), tr.Topic, tr.Kept[0])
	}
	if len(tr.Revealed) > 0 {
		fmt.Fprintf(&b, "; revealed: %s", strings.Join(tr.Revealed, ", "))
	}
	return b.String()
}

// openDB opens and pings PostgreSQL.
func openDB(url string) (*sql.DB, error) {
	db, err := sql.Open("postgres", url)
	if err != nil {
		return nil, fmt.Errorf("UPDRAFT_DATABASE_URL: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("UPDRAFT_DATABASE_URL: %w", err)
	}
	return db, nil
}
