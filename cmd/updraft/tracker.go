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
// tracker in process in embedded mode) and by `updraft track`. README.md
// documents every one; keep them in step.
type trackerConfig struct {
	DatabaseURL     string        `envconfig:"DATABASE_URL"`
	TrackTables     []string      `envconfig:"TRACK_TABLES"`
	PollInterval    time.Duration `envconfig:"POLL_INTERVAL" default:"200ms"`
	HiddenColumns   []string      `envconfig:"HIDDEN_COLUMNS"`
	ChangeRetention time.Duration `envconfig:"CHANGE_RETENTION" default:"24h"`
	LeaseTTL        time.Duration `envconfig:"LEASE_TTL" default:"5s"`
	Notify          bool          `envconfig:"TRACKER_NOTIFY" default:"false"`
	MaxRow          int           `envconfig:"MAX_ROW" default:"262144"`
	// NodeID is shared with serve: in embedded mode the tracker is the
	// node's own.
	NodeID string `envconfig:"NODE_ID"`
}

// loadTrackerConfig reads and validates the tracker's variables. Every
// error names the variable at fault.
func loadTrackerConfig() (trackerConfig, error) {
	var c trackerConfig
	if err := envconfig.Process("UPDRAFT", &c); err != nil {
		return c, err
	}
	switch {
	case c.PollInterval < 10*time.Millisecond:
		return c, fmt.Errorf("UPDRAFT_POLL_INTERVAL must be at least 10ms, not %v", c.PollInterval)
	case c.ChangeRetention < time.Minute:
		return c, fmt.Errorf("UPDRAFT_CHANGE_RETENTION must be at least 1m, not %v", c.ChangeRetention)
	case c.LeaseTTL < time.Second:
		return c, fmt.Errorf("UPDRAFT_LEASE_TTL must be at least 1s, not %v", c.LeaseTTL)
	case c.LeaseTTL < 3*c.PollInterval:
		return c, fmt.Errorf("UPDRAFT_LEASE_TTL (%v) must be at least three UPDRAFT_POLL_INTERVALs (%v)", c.LeaseTTL, c.PollInterval)
	case c.MaxRow < 1024:
		return c, fmt.Errorf("UPDRAFT_MAX_ROW must be at least 1024 bytes, not %d", c.MaxRow)
	}
	if c.NodeID == "" {
		c.NodeID = defaultNodeID()
	}
	return c, nil
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
	Addr     string `envconfig:"ADDR" default:":8081"`
	RedisURL string `envconfig:"REDIS_URL"`
	LogLevel string `envconfig:"LOG_LEVEL" default:"info"`
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
UPDRAFT_ADDR (default :8081).

In a single process without Redis, 'updraft serve' runs the tracker itself
when UPDRAFT_DATABASE_URL is set.`)
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	var pc trackerProcessConfig
	if err := envconfig.Process("UPDRAFT", &pc); err != nil {
		return err
	}
	tc, err := loadTrackerConfig()
	if err != nil {
		return err
	}
	switch {
	case tc.DatabaseURL == "":
		return errors.New("UPDRAFT_DATABASE_URL is required: the tracker reads PostgreSQL")
	case pc.RedisURL == "":
		return errors.New("UPDRAFT_REDIS_URL is required: trackers elect their leader and publish through Redis (without Redis, `updraft serve` runs the tracker in process)")
	}
	log, err := newLogger(pc.LogLevel)
	if err != nil {
		return fmt.Errorf("UPDRAFT_LOG_LEVEL: %q is not one of debug, info, warn, error", pc.LogLevel)
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
