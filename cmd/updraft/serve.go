package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/kelseyhightower/envconfig"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/updraft/updraft/broker"
	"github.com/updraft/updraft/demo"
	"github.com/updraft/updraft/durable"
	"github.com/updraft/updraft/gateway"
	"github.com/updraft/updraft/presence"
	"github.com/updraft/updraft/protocol"
)

// serveConfig is `updraft serve`'s configuration, read from UPDRAFT_*
// environment variables. Its tags are the one source of each setting's
// name, default and meaning: `updraft serve --help-env` prints README.md's
// table from them (see envdoc.go), and TestEnvDefaultsMatchPackages checks
// the packages' Default* constants against them. In desc, {x} is code.
type serveConfig struct {
	Addr             string        `envconfig:"ADDR" default:":8080" desc:"listen address"`
	NodeID           string        `envconfig:"NODE_ID" doc_default:"<hostname>-<pid>" desc:"this node's name in connect replies and logs"`
	RedisURL         string        `envconfig:"REDIS_URL" desc:"{redis://[:password@]host:port/db}; empty runs embedded single-node mode on the in-memory broker"`
	JWTSecret        string        `envconfig:"JWT_SECRET" desc:"HMAC secret that client tokens are signed with (HS256, HS384 or HS512); empty refuses tokens; a token must carry {exp} ({make run UPDRAFT_JWT_SECRET=...} passes it on)"`
	AllowAnonymous   bool          `envconfig:"ALLOW_ANONYMOUS" default:"false" desc:"let a connect without token subscribe and publish to everything (development only); the gateway refuses to start with neither this nor a JWT secret"`
	APIKey           string        `envconfig:"API_KEY" desc:"bearer key of the HTTP API ({/api/v1/emit}, ...); empty disables the API"`
	AllowedOrigins   []string      `envconfig:"ALLOWED_ORIGINS" desc:"comma-separated browser origins allowed to open a WebSocket: {https://app.example.com}, {http://localhost:*} (any port), or {*} for any; empty allows no browser origin ({make run} sets the loopback names on any port); requests without Origin (non-browser clients) are always allowed; each refusal is logged (once per origin and minute)"`
	HistorySize      int           `envconfig:"HISTORY_SIZE" default:"1000" desc:"messages retained per topic"`
	HistoryTTL       time.Duration `envconfig:"HISTORY_TTL" default:"24h" desc:"a topic's history expires this long after its last publish (it then starts a new epoch)"`
	MaxMessage       int           `envconfig:"MAX_MESSAGE" default:"65536" desc:"largest client frame in bytes (1024 to 16777216); larger closes with 1009"`
	ClientRate       float64       `envconfig:"CLIENT_RATE" default:"100" desc:"requests per second per connection, burst twice that; a connection refused for 10 s straight is closed with 4029"`
	MaxSubscriptions int           `envconfig:"MAX_SUBSCRIPTIONS" default:"256" desc:"subscriptions per connection"`
	SendQueue        int           `envconfig:"SEND_QUEUE" default:"1024" desc:"messages queued per connection before it is closed as a slow consumer (4008); the queue also holds at most 8 MiB"`
	NodeQueueBytes   int64         `envconfig:"NODE_QUEUE_BYTES" default:"1073741824" desc:"bytes queued for all of a node's connections together (1 GiB; at least 8 MiB), an event counting once per connection it is queued for; the connection that would go past it is closed with 4008"`
	MaxRecovery      int           `envconfig:"MAX_RECOVERY" default:"10000" desc:"most messages a {subscribe} with {since} replays; a longer gap answers {recovered:false} at once"`
	Heartbeat        time.Duration `envconfig:"HEARTBEAT" default:"25s" desc:"WebSocket ping interval; a client silent for two is closed"`
	DrainTimeout     time.Duration `envconfig:"DRAIN_TIMEOUT" default:"15s" desc:"how long a SIGTERMed node takes to move its clients away before it exits"`
	StreamIdle       time.Duration `envconfig:"STREAM_IDLE" default:"30s" desc:"a {POST /api/v1/stream} body that sends no complete line for this long ends the stream with {<event>.error}"`
	HTTPIdleTimeout  time.Duration `envconfig:"HTTP_IDLE_TIMEOUT" default:"60s" desc:"a keep-alive HTTP connection waiting this long for its next request is closed"`
	HTTPBodyTimeout  time.Duration `envconfig:"HTTP_BODY_TIMEOUT" default:"10s" desc:"the body of {POST /api/v1/emit} and {/emit/batch} must arrive within this, or the answer is 408"`
	PresenceTimeout  time.Duration `envconfig:"PRESENCE_TIMEOUT" default:"15s" desc:"a member whose gateway died leaves within this (at least 1s)"`
	PresenceRate     float64       `envconfig:"PRESENCE_RATE" default:"10" desc:"presence updates ({track}) per second per connection and topic, burst twice that"`
	PresenceMaxState int           `envconfig:"PRESENCE_MAX_STATE" default:"1024" desc:"largest presence state in bytes (a JSON object)"`
	// Demo serves the demo app (package demo) at /.
	Demo        bool   `envconfig:"DEMO" default:"false" desc:"serve the demo app (package {demo}, built from {sdk/js/demo}) at {/}; the gateway's own paths keep priority. The page connects anonymously, so it needs {UPDRAFT_ALLOW_ANONYMOUS=true} and its origin in {UPDRAFT_ALLOWED_ORIGINS} ({make run} sets all three)"`
	Pprof       bool   `envconfig:"PPROF" default:"false" desc:"serve Go's profiler under {/debug/pprof/} (for benchmarking; never on a public address: see {UPDRAFT_METRICS_ADDR})"`
	MetricsAddr string `envconfig:"METRICS_ADDR" desc:"a private listen address ({127.0.0.1:9090}, {:9090} in a pod) for {/metrics} and the profiler, which are then not served on {UPDRAFT_ADDR}; empty serves them beside the public endpoints. Recommended in production"`
	LogLevel    string `envconfig:"LOG_LEVEL" default:"info" desc:"{debug}, {info}, {warn} or {error}; logs are JSON lines on stderr"`

	DatabaseURL          string   `envconfig:"DATABASE_URL" desc:"PostgreSQL ({postgres://user:pass@host/db?sslmode=disable}) for durable history; migrations run at start-up"`
	PersistTopics        []string `envconfig:"PERSIST_TOPICS" desc:"comma-separated topic patterns ({chat/**}) whose every message is also stored in PostgreSQL; needs {UPDRAFT_DATABASE_URL}"`
	PersistRetentionDays int      `envconfig:"PERSIST_RETENTION_DAYS" default:"30" desc:"how long PostgreSQL keeps stored messages"`
}

// loadServeConfig reads the environment and validates it. Every error
// names the variable at fault.
func loadServeConfig() (serveConfig, error) {
	var c serveConfig
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

// validate checks every setting of serve once, at start-up, naming the
// variable and the values it allows. No bad value is replaced by a
// default: an empty UPDRAFT_NODE_ID is its documented default, and every
// other number must be in range.
func (c serveConfig) validate() error {
	if err := firstError(
		atLeast("UPDRAFT_HISTORY_SIZE", c.HistorySize, 1),
		positive("UPDRAFT_HISTORY_TTL", c.HistoryTTL),
		between("UPDRAFT_MAX_MESSAGE", c.MaxMessage, 1024, 16<<20),
		positive("UPDRAFT_CLIENT_RATE", c.ClientRate),
		atLeast("UPDRAFT_MAX_SUBSCRIPTIONS", c.MaxSubscriptions, 1),
		atLeast("UPDRAFT_SEND_QUEUE", c.SendQueue, 1),
		atLeast("UPDRAFT_MAX_RECOVERY", c.MaxRecovery, 1),
		atLeast("UPDRAFT_HEARTBEAT", c.Heartbeat, time.Second),
		positive("UPDRAFT_DRAIN_TIMEOUT", c.DrainTimeout),
		positive("UPDRAFT_STREAM_IDLE", c.StreamIdle),
		positive("UPDRAFT_HTTP_IDLE_TIMEOUT", c.HTTPIdleTimeout),
		positive("UPDRAFT_HTTP_BODY_TIMEOUT", c.HTTPBodyTimeout),
		atLeast("UPDRAFT_PERSIST_RETENTION_DAYS", c.PersistRetentionDays, 1),
		atLeast("UPDRAFT_PRESENCE_TIMEOUT", c.PresenceTimeout, time.Second),
		positive("UPDRAFT_PRESENCE_RATE", c.PresenceRate),
		atLeast("UPDRAFT_PRESENCE_MAX_STATE", c.PresenceMaxState, 1),
	); err != nil {
		return err
	}
	if outbox := max(gateway.DefaultSendQueueBytes, 4*c.MaxMessage); c.NodeQueueBytes < int64(outbox) {
		return fmt.Errorf("UPDRAFT_NODE_QUEUE_BYTES must be at least one connection's outbox, %d bytes (8 MiB, or 4 times UPDRAFT_MAX_MESSAGE), not %d", outbox, c.NodeQueueBytes)
	}
	if c.PresenceMaxState > c.MaxMessage {
		return fmt.Errorf("UPDRAFT_PRESENCE_MAX_STATE (%d) must not exceed UPDRAFT_MAX_MESSAGE (%d)", c.PresenceMaxState, c.MaxMessage)
	}
	if c.JWTSecret == "" && !c.AllowAnonymous {
		return errors.New("UPDRAFT_JWT_SECRET is empty and UPDRAFT_ALLOW_ANONYMOUS is false: no client could connect; set a JWT secret, or UPDRAFT_ALLOW_ANONYMOUS=true for development")
	}
	if err := validateLogLevel(c.LogLevel); err != nil {
		return err
	}
	if err := gateway.ValidateOrigins(c.AllowedOrigins); err != nil {
		return err
	}
	for _, p := range c.PersistTopics {
		if err := protocol.ValidatePattern(p); err != nil {
			return fmt.Errorf("UPDRAFT_PERSIST_TOPICS: %w", err)
		}
	}
	if len(c.PersistTopics) > 0 && c.DatabaseURL == "" {
		return errors.New("UPDRAFT_PERSIST_TOPICS needs UPDRAFT_DATABASE_URL: persistent topics are kept in PostgreSQL")
	}
	if c.MetricsAddr != "" {
		if _, _, err := net.SplitHostPort(c.MetricsAddr); err != nil {
			return fmt.Errorf("UPDRAFT_METRICS_ADDR: %q is not a listen address like 127.0.0.1:9090: %w", c.MetricsAddr, err)
		}
		if c.MetricsAddr == c.Addr {
			return fmt.Errorf("UPDRAFT_METRICS_ADDR must differ from UPDRAFT_ADDR (%s): it is the private address for /metrics", c.Addr)
		}
	}
	return nil
}

func newLogger(level string) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, err
	}
	zc := zap.NewProductionConfig()
	zc.Level = zap.NewAtomicLevelAt(lvl)
	zc.Sampling = nil
	return zc.Build()
}

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("serve", stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: updraft serve [--help-env]\n\nRuns a gateway node configured by UPDRAFT_* environment variables (see README.md,\nor --help-env). Without UPDRAFT_REDIS_URL it runs single-node with everything\nin memory.\n\nFlags:")
		fs.PrintDefaults()
	}
	helpEnv := fs.Bool("help-env", false, helpEnvUsage)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *helpEnv {
		envTable(stdout, serveConfig{})
		return nil
	}
	cfg, err := loadServeConfig()
	if err != nil {
		return err
	}
	log, err := newLogger(cfg.LogLevel)
	if err != nil {
		return err
	}
	defer log.Sync()
	log = log.With(zap.String("node", cfg.NodeID))
	warnUnknownEnv(log, os.Environ())

	reg := prometheus.NewRegistry()
	// The broker is built before the gateway it delivers to; the gateway's
	// handlers are registered with it once the gateway is built, before
	// anything subscribes. The broker counts its own errors and gaps;
	// embedded nodes export the series too, at zero.
	brokerMetrics := broker.NewMetrics(reg)
	retention := broker.Retention{Size: cfg.HistorySize, TTL: cfg.HistoryTTL}
	var b broker.Broker
	var mem *broker.Memory // the embedded broker, nil in a cluster
	mode := "embedded (single node, in memory)"
	if cfg.RedisURL == "" {
		mem = broker.NewMemory(broker.MemoryConfig{Retention: retention})
		b = mem
	} else {
		mode = "cluster (Redis)"
		logRedisThroughZap(log)
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		rb, err := broker.NewRedis(rctx, broker.RedisConfig{
			URL: cfg.RedisURL, Lazy: true, // checkRedis below: a node may start before its Redis
			Retention: retention, Logger: log.Named("broker"), Metrics: brokerMetrics,
		})
		cancel()
		if err != nil {
			return fmt.Errorf("UPDRAFT_REDIS_URL: %w", err)
		}
		if err := checkRedis(ctx, rb, log); err != nil {
			rb.Close()
			return fmt.Errorf("UPDRAFT_REDIS_URL: %w", err)
		}
		b = rb
	}
	defer b.Close()

	var pres presence.Store = presence.NewMemory(presence.MemoryConfig{})
	if cfg.RedisURL != "" {
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		rp, err := presence.NewRedis(pctx, presence.RedisConfig{URL: cfg.RedisURL, Lazy: true})
		cancel()
		if err != nil {
			return fmt.Errorf("UPDRAFT_REDIS_URL: %w", err)
		}
		pres = rp
	}
	defer pres.Close()

	if cfg.DatabaseURL != "" {
		dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		store, err := durable.Open(dctx, durable.Config{
			URL:       cfg.DatabaseURL,
			Retention: time.Duration(cfg.PersistRetentionDays) * 24 * time.Hour,
			Logger:    log.Named("durable"),
		})
		cancel()
		if err != nil {
			return fmt.Errorf("UPDRAFT_DATABASE_URL: %w", err)
		}
		defer store.Close() // after the gateway drained: stores what is still queued
		if b, err = durable.Wrap(b, store, cfg.PersistTopics); err != nil {
			return fmt.Errorf("UPDRAFT_PERSIST_TOPICS: %w", err)
		}
		mode += " with durable history"
	}

	// Embedded mode runs the tracker in process; a cluster runs
	// `updraft tracker` beside its gateways.
	if cfg.DatabaseURL != "" && mem != nil {
		tc, err := loadTrackerConfig()
		if err != nil {
			return err
		}
		tc.DatabaseURL = cfg.DatabaseURL
		t, err := tc.newTracker(ctx, mem, log.Named("tracker"), reg)
		if err != nil {
			return err
		}
		defer t.Close()
		trackerDone := make(chan struct{})
		go func() {
			defer close(trackerDone)
			_ = t.Run(ctx)
		}()
		defer func() { <-trackerDone }() // before the broker closes
		mode += " with the tracker"
	} else if cfg.DatabaseURL != "" {
		log.Info("cluster mode: this gateway does not track tables; run `updraft tracker` for that")
	}

	// The listeners open before the gateway is built, so that a taken
	// address stops start-up with the variable's name.
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("UPDRAFT_ADDR: %w", err)
	}
	var metricsLn net.Listener
	if cfg.MetricsAddr != "" {
		if metricsLn, err = net.Listen("tcp", cfg.MetricsAddr); err != nil {
			ln.Close()
			return fmt.Errorf("UPDRAFT_METRICS_ADDR: %w", err)
		}
	}
	var site http.Handler
	if cfg.Demo {
		site = demoSite(cfg, mem != nil)
		log.Info("serving the demo app at /")
		if len(cfg.AllowedOrigins) == 0 {
			log.Warn("UPDRAFT_DEMO: UPDRAFT_ALLOWED_ORIGINS is empty, so the demo's page may not open a WebSocket; list the origin it is opened from (make run allows http://127.0.0.1:* and http://localhost:*)")
		}
	}
	gw, err := gateway.New(gateway.Config{
		DurableHistory:    cfg.DatabaseURL != "",
		NodeID:            cfg.NodeID,
		Broker:            b,
		JWTSecret:         []byte(cfg.JWTSecret),
		AllowAnonymous:    cfg.AllowAnonymous,
		APIKey:            cfg.APIKey,
		AllowedOrigins:    cfg.AllowedOrigins,
		MaxMessage:        cfg.MaxMessage,
		ClientRate:        cfg.ClientRate,
		MaxSubscriptions:  cfg.MaxSubscriptions,
		SendQueue:         cfg.SendQueue,
		NodeQueueBytes:    cfg.NodeQueueBytes,
		MaxRecovery:       cfg.MaxRecovery,
		Heartbeat:         cfg.Heartbeat,
		DrainTimeout:      cfg.DrainTimeout,
		StreamIdleTimeout: cfg.StreamIdle,
		HTTPIdleTimeout:   cfg.HTTPIdleTimeout,
		BodyTimeout:       cfg.HTTPBodyTimeout,
		Profiling:         cfg.Pprof,
		MetricsListener:   metricsLn,
		Presence:          pres,
		PresenceTimeout:   cfg.PresenceTimeout,
		PresenceRate:      cfg.PresenceRate,
		MaxPresenceState:  cfg.PresenceMaxState,
		Logger:            log.Named("gateway"),
		Registry:          reg,
		Site:              site,
	})
	if err != nil {
		ln.Close()
		if metricsLn != nil {
			metricsLn.Close()
		}
		return err
	}
	b.RegisterEventHandler(gw.Deliver, gw.DeliverSignal) // nothing is subscribed yet
	metricsAt := "beside the public endpoints"
	if metricsLn != nil {
		metricsAt = metricsLn.Addr().String()
	}
	log.Info("serving", zap.String("addr", ln.Addr().String()), zap.String("mode", mode),
		zap.Bool("anonymous", cfg.AllowAnonymous), zap.Bool("http_api", cfg.APIKey != ""),
		zap.String("metrics", metricsAt))
	if cfg.AllowAnonymous {
		log.Warn("anonymous access is on: any client may subscribe and publish to anything (development only)")
	}
	return gw.Serve(ctx, ln)
}

// demoSite is the demo app's handler. It tells the app which tables it can
// expect changes of: in embedded mode the ones this node tracks (none
// without a database), in a cluster the ones UPDRAFT_TRACK_TABLES names
// here, as a hint, since `updraft tracker` tracks them elsewhere.
func demoSite(cfg serveConfig, embedded bool) http.Handler {
	dc := demo.Config{Mode: "cluster"}
	if embedded {
		dc.Mode = "embedded"
	}
	if !embedded || cfg.DatabaseURL != "" {
		// The tracker's own settings; a bad one stops the tracker's
		// start-up (embedded) or the tracker process (cluster), not this.
		tc, _ := loadTrackerConfig()
		dc.Tables = tc.TrackTables
	}
	return demo.Handler(dc)
}
