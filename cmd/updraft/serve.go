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
// environment variables. README.md documents every one; keep them in step.
type serveConfig struct {
	Addr             string        `envconfig:"ADDR" default:":8080"`
	NodeID           string        `envconfig:"NODE_ID"`
	RedisURL         string        `envconfig:"REDIS_URL"`
	JWTSecret        string        `envconfig:"JWT_SECRET"`
	APIKey           string        `envconfig:"API_KEY"`
	AllowAnonymous   bool          `envconfig:"ALLOW_ANONYMOUS" default:"false"`
	AllowedOrigins   []string      `envconfig:"ALLOWED_ORIGINS"`
	HistorySize      int           `envconfig:"HISTORY_SIZE" default:"1000"`
	HistoryTTL       time.Duration `envconfig:"HISTORY_TTL" default:"24h"`
	MaxMessage       int           `envconfig:"MAX_MESSAGE" default:"65536"`
	ClientRate       float64       `envconfig:"CLIENT_RATE" default:"100"`
	MaxSubscriptions int           `envconfig:"MAX_SUBSCRIPTIONS" default:"256"`
	SendQueue        int           `envconfig:"SEND_QUEUE" default:"1024"`
	NodeQueueBytes   int64         `envconfig:"NODE_QUEUE_BYTES" default:"1073741824"`
	MaxRecovery      int           `envconfig:"MAX_RECOVERY" default:"10000"`
	Heartbeat        time.Duration `envconfig:"HEARTBEAT" default:"25s"`
	DrainTimeout     time.Duration `envconfig:"DRAIN_TIMEOUT" default:"15s"`
	StreamIdle       time.Duration `envconfig:"STREAM_IDLE" default:"30s"`
	HTTPIdleTimeout  time.Duration `envconfig:"HTTP_IDLE_TIMEOUT" default:"60s"`
	HTTPBodyTimeout  time.Duration `envconfig:"HTTP_BODY_TIMEOUT" default:"10s"`
	PresenceTimeout  time.Duration `envconfig:"PRESENCE_TIMEOUT" default:"15s"`
	PresenceRate     float64       `envconfig:"PRESENCE_RATE" default:"10"`
	PresenceMaxState int           `envconfig:"PRESENCE_MAX_STATE" default:"1024"`
	LogLevel         string        `envconfig:"LOG_LEVEL" default:"info"`
	Pprof            bool          `envconfig:"PPROF" default:"false"`
	MetricsAddr      string        `envconfig:"METRICS_ADDR"`
	// Demo serves the demo app (package demo) at /.
	Demo bool `envconfig:"DEMO" default:"false"`

	DatabaseURL          string   `envconfig:"DATABASE_URL"`
	PersistTopics        []string `envconfig:"PERSIST_TOPICS"`
	PersistRetentionDays int      `envconfig:"PERSIST_RETENTION_DAYS" default:"30"`
}

// loadServeConfig reads and validates the environment. Every error names
// the variable at fault.
func loadServeConfig() (serveConfig, error) {
	var c serveConfig
	if err := envconfig.Process("UPDRAFT", &c); err != nil {
		return c, err
	}
	positive := []struct {
		name string
		ok   bool
	}{
		{"UPDRAFT_HISTORY_SIZE", c.HistorySize > 0},
		{"UPDRAFT_HISTORY_TTL", c.HistoryTTL > 0},
		{"UPDRAFT_MAX_MESSAGE", c.MaxMessage > 0},
		{"UPDRAFT_CLIENT_RATE", c.ClientRate > 0},
		{"UPDRAFT_MAX_SUBSCRIPTIONS", c.MaxSubscriptions > 0},
		{"UPDRAFT_SEND_QUEUE", c.SendQueue > 0},
		{"UPDRAFT_MAX_RECOVERY", c.MaxRecovery > 0},
		{"UPDRAFT_HEARTBEAT", c.Heartbeat >= time.Second},
		{"UPDRAFT_DRAIN_TIMEOUT", c.DrainTimeout > 0},
		{"UPDRAFT_STREAM_IDLE", c.StreamIdle > 0},
		{"UPDRAFT_HTTP_IDLE_TIMEOUT", c.HTTPIdleTimeout > 0},
		{"UPDRAFT_HTTP_BODY_TIMEOUT", c.HTTPBodyTimeout > 0},
		{"UPDRAFT_PERSIST_RETENTION_DAYS", c.PersistRetentionDays > 0},
		{"UPDRAFT_PRESENCE_RATE", c.PresenceRate > 0},
		{"UPDRAFT_PRESENCE_MAX_STATE", c.PresenceMaxState > 0},
	}
	for _, p := range positive {
		if !p.ok {
			return c, fmt.Errorf("%s must be positive (UPDRAFT_HEARTBEAT at least 1s)", p.name)
		}
	}
	if c.MaxMessage < 1024 || c.MaxMessage > 16<<20 {
		return c, fmt.Errorf("UPDRAFT_MAX_MESSAGE must be between 1024 and 16777216 bytes, not %d", c.MaxMessage)
	}
	if outbox := max(gateway.DefaultSendQueueBytes, 4*c.MaxMessage); c.NodeQueueBytes < int64(outbox) {
		return c, fmt.Errorf("UPDRAFT_NODE_QUEUE_BYTES must be at least one connection's outbox, %d bytes (8 MiB, or 4 times UPDRAFT_MAX_MESSAGE), not %d", outbox, c.NodeQueueBytes)
	}
	if c.PresenceTimeout < time.Second {
		return c, fmt.Errorf("UPDRAFT_PRESENCE_TIMEOUT must be at least 1s, not %v", c.PresenceTimeout)
	}
	if c.PresenceMaxState > c.MaxMessage {
		return c, fmt.Errorf("UPDRAFT_PRESENCE_MAX_STATE (%d) must not exceed UPDRAFT_MAX_MESSAGE (%d)", c.PresenceMaxState, c.MaxMessage)
	}
	if c.JWTSecret == "" && !c.AllowAnonymous {
		return c, errors.New("UPDRAFT_JWT_SECRET is empty and UPDRAFT_ALLOW_ANONYMOUS is false: no client could connect; set a JWT secret, or UPDRAFT_ALLOW_ANONYMOUS=true for development")
	}
	if _, err := zapcore.ParseLevel(c.LogLevel); err != nil {
		return c, fmt.Errorf("UPDRAFT_LOG_LEVEL: %q is not one of debug, info, warn, error", c.LogLevel)
	}
	if err := gateway.ValidateOrigins(c.AllowedOrigins); err != nil {
		return c, err
	}
	for _, p := range c.PersistTopics {
		if err := protocol.ValidatePattern(p); err != nil {
			return c, fmt.Errorf("UPDRAFT_PERSIST_TOPICS: %w", err)
		}
	}
	if len(c.PersistTopics) > 0 && c.DatabaseURL == "" {
		return c, errors.New("UPDRAFT_PERSIST_TOPICS needs UPDRAFT_DATABASE_URL: persistent topics are kept in PostgreSQL")
	}
	if c.MetricsAddr != "" {
		if _, _, err := net.SplitHostPort(c.MetricsAddr); err != nil {
			return c, fmt.Errorf("UPDRAFT_METRICS_ADDR: %q is not a listen address like 127.0.0.1:9090: %w", c.MetricsAddr, err)
		}
		if c.MetricsAddr == c.Addr {
			return c, fmt.Errorf("UPDRAFT_METRICS_ADDR must differ from UPDRAFT_ADDR (%s): it is the private address for /metrics", c.Addr)
		}
	}
	if c.NodeID == "" {
		c.NodeID = defaultNodeID()
	}
	return c, nil
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
		fmt.Fprintln(stderr, "Usage: updraft serve\n\nRuns a gateway node configured by UPDRAFT_* environment variables (see README.md).\nWithout UPDRAFT_REDIS_URL it runs single-node with everything in memory.")
	}
	if err := parseFlags(fs, args); err != nil {
		return err
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
	// The broker is built before the gateway it delivers to: the gateway
	// registers its handlers once built, before anything subscribes. The
	// broker counts its own errors and gaps; embedded nodes export the
	// series too, at zero.
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
	b.RegisterEventHandler(gw.Deliver, gw.DeliverSignal)
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
		var tc struct {
			Tables []string `envconfig:"TRACK_TABLES"`
		}
		_ = envconfig.Process("UPDRAFT", &tc) // a bad value stops the tracker's own start-up
		dc.Tables = tc.Tables
	}
	return demo.Handler(dc)
}
