// Package gateway is Updraft's edge: the HTTP server, one WebSocket session
// per client speaking protocol v1, auth and permissions, the local hub that
// fans broker messages out to this node's subscribers, the HTTP API for
// application servers, and drain on shutdown. It knows nothing of Redis; it
// talks to a broker.Broker.
package gateway

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/updraft/updraft/broker"
	"github.com/updraft/updraft/presence"
	"github.com/updraft/updraft/protocol"
)

// Config configures a gateway. The zero value of a field means its default.
type Config struct {
	// NodeID names this gateway in connect replies and logs. Required.
	NodeID string
	// Broker carries messages between nodes. Required; its Handler must
	// call Server.Deliver.
	Broker broker.Broker
	// DurableHistory says the broker keeps persistent topics in PostgreSQL
	// (package durable): publishes with persist are honoured instead of
	// refused.
	DurableHistory bool
	// JWTSecret verifies client tokens (HS256). Empty: tokens are refused.
	JWTSecret []byte
	// AllowAnonymous grants everything to a connect without a token.
	AllowAnonymous bool
	// APIKey authorises the HTTP API. Empty: the HTTP API refuses all calls.
	APIKey string
	// AllowedOrigins lists the browser origins allowed to open a WebSocket:
	// "https://app.example.com", "http://localhost:*" (any port) or "*"
	// (any origin). Empty: no browser origin; requests without an Origin
	// header (non-browser clients) are always allowed.
	AllowedOrigins []string
	// MaxMessage is the largest client frame in bytes (default 65536).
	MaxMessage int
	// ClientRate is the requests per second a connection may send, with a
	// burst of twice that (default 100).
	ClientRate float64
	// MaxSubscriptions per connection (default 256).
	MaxSubscriptions int
	// SendQueue is the number of messages a connection's outbox holds
	// before it is closed as a slow consumer (default 1024).
	SendQueue int
	// SendQueueBytes caps the outbox in bytes (default 8 MiB), counting
	// what a writer has taken but not yet written. It is raised to
	// 4*MaxMessage when lower, so that the largest event fits.
	SendQueueBytes int
	// NodeQueueBytes caps the bytes queued for all connections of the node
	// together (default 1 GiB); a connection whose push would go past it
	// is closed as a slow consumer.
	NodeQueueBytes int64
	// MaxRecovery is the most messages a subscribe with since replays
	// (default 10000); a longer gap answers recovered:false at once.
	MaxRecovery int
	// Heartbeat is the WebSocket ping interval; a connection silent for two
	// heartbeats is closed (default 25s).
	Heartbeat time.Duration
	// ConnectTimeout is how long a new connection has to send connect
	// (default 10s).
	ConnectTimeout time.Duration
	// WriteTimeout bounds one frame write; a connection that cannot take a
	// frame within it is closed (default 10s).
	WriteTimeout time.Duration
	// DrainTimeout bounds Shutdown (default 15s).
	DrainTimeout time.Duration
	// HTTPIdleTimeout closes a keep-alive HTTP connection that waits this
	// long for its next request (default 60s).
	HTTPIdleTimeout time.Duration
	// BodyTimeout bounds reading the body of POST /api/v1/emit and
	// /api/v1/emit/batch; a body not in by then gets 408 (default 10s).
	BodyTimeout time.Duration
	// StreamIdleTimeout ends a POST /api/v1/stream whose body sends no
	// complete line for this long: watchers get <event>.error, the caller
	// 408 (default 30s).
	StreamIdleTimeout time.Duration
	// Presence keeps who is on which topic (package presence); nil: the
	// presence requests answer unavailable. The Broker's SignalHandler must
	// call Server.DeliverSignal.
	Presence presence.Store
	// PresenceTimeout: a dead node's members leave within it (default 15s).
	PresenceTimeout time.Duration
	// PresenceRate is the track requests per second a connection may send
	// per topic, with a burst of twice that (default 10).
	PresenceRate float64
	// MaxPresenceState is the largest presence state in bytes (default 1024).
	MaxPresenceState int
	// Profiling serves Go's pprof endpoints under /debug/pprof/ (for
	// benchmarks; never on a public address).
	Profiling bool
	// MetricsListener, when set, is where /metrics (and the pprof
	// endpoints with Profiling) are served, by Serve until its drain ends;
	// they are then not served beside the public endpoints. Nil: they are
	// served with everything else.
	MetricsListener net.Listener
	// Logger (default: no logging).
	Logger *zap.Logger
	// Registry receives the gateway's metrics and serves /metrics
	// (default: a fresh registry).
	Registry *prometheus.Registry
	// Site, when set, serves every request that none of the gateway's
	// own endpoints claims (the demo app at /, with UPDRAFT_DEMO=true).
	// The gateway's paths keep priority.
	Site http.Handler
}

// Defaults for Config.
const (
	DefaultMaxMessage        = 64 << 10
	DefaultClientRate        = 100
	DefaultMaxSubscriptions  = 256
	DefaultSendQueue         = 1024
	DefaultSendQueueBytes    = 8 << 20
	DefaultNodeQueueBytes    = 1 << 30
	DefaultMaxRecovery       = 10000
	DefaultHeartbeat         = 25 * time.Second
	DefaultConnectTimeout    = 10 * time.Second
	DefaultWriteTimeout      = 10 * time.Second
	DefaultDrainTimeout      = 15 * time.Second
	DefaultStreamIdleTimeout = 30 * time.Second
	DefaultHTTPIdleTimeout   = 60 * time.Second
	DefaultBodyTimeout       = 10 * time.Second
	// readHeaderTimeout bounds reading a request's headers.
	readHeaderTimeout = 10 * time.Second
)

func (c Config) withDefaults() (Config, error) {
	if c.NodeID == "" {
		return c, errors.New("gateway: Config.NodeID is required")
	}
	if c.Broker == nil {
		return c, errors.New("gateway: Config.Broker is required")
	}
	if len(c.JWTSecret) == 0 && !c.AllowAnonymous {
		return c, errors.New("gateway: no way to authenticate clients: set a JWT secret (UPDRAFT_JWT_SECRET) or allow anonymous access (UPDRAFT_ALLOW_ANONYMOUS=true, development only)")
	}
	if err := ValidateOrigins(c.AllowedOrigins); err != nil {
		return c, fmt.Errorf("gateway: %w", err)
	}
	setDefault(&c.MaxMessage, DefaultMaxMessage)
	setDefault(&c.ClientRate, DefaultClientRate)
	setDefault(&c.MaxSubscriptions, DefaultMaxSubscriptions)
	setDefault(&c.SendQueue, DefaultSendQueue)
	setDefault(&c.SendQueueBytes, DefaultSendQueueBytes)
	c.SendQueueBytes = max(c.SendQueueBytes, 4*c.MaxMessage)
	setDefault(&c.NodeQueueBytes, DefaultNodeQueueBytes)
	setDefault(&c.MaxRecovery, DefaultMaxRecovery)
	setDefault(&c.Heartbeat, DefaultHeartbeat)
	setDefault(&c.ConnectTimeout, DefaultConnectTimeout)
	setDefault(&c.WriteTimeout, DefaultWriteTimeout)
	setDefault(&c.DrainTimeout, DefaultDrainTimeout)
	setDefault(&c.StreamIdleTimeout, DefaultStreamIdleTimeout)
	setDefault(&c.HTTPIdleTimeout, DefaultHTTPIdleTimeout)
	setDefault(&c.BodyTimeout, DefaultBodyTimeout)
	setDefault(&c.PresenceTimeout, DefaultPresenceTimeout)
	setDefault(&c.PresenceRate, DefaultPresenceRate)
	setDefault(&c.MaxPresenceState, DefaultMaxPresenceState)
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	if c.Registry == nil {
		c.Registry = prometheus.NewRegistry()
	}
	return c, nil
}

func setDefault[T int | int64 | float64 | time.Duration](v *T, def T) {
	if *v <= 0 {
		*v = def
	}
}

// Server is one gateway node.
type Server struct {
	cfg     Config
	log     *zap.Logger
	metrics *metrics
	hub     *hub
	writers *writePool
	mux     *http.ServeMux
	// metricsMux serves /metrics and pprof: mux itself, or a separate one
	// for cfg.MetricsListener.
	metricsMux *http.ServeMux
	pres       presenceNode
	origins    []originRule // parsed from cfg.AllowedOrigins

	originLog originLog // rate-limits the log of refused origins

	queued     nodeBytes // the bytes all sessions' outboxes hold
	draining   atomic.Bool
	streamsCut chan struct{} // closed late in a drain: running streams end with E.error

	mu       sync.Mutex            // guards sessions
	sessions map[*session]struct{} // guarded by mu
	wg       sync.WaitGroup        // one per live session
}

// New validates cfg and returns a gateway ready to serve.
func New(cfg Config) (*Server, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	origins, _ := parseOrigins(cfg.AllowedOrigins) // validated by withDefaults
	s := &Server{
		cfg:        cfg,
		origins:    origins,
		log:        cfg.Logger,
		queued:     nodeBytes{max: cfg.NodeQueueBytes},
		hub:        newHub(),
		writers:    newWritePool(),
		sessions:   make(map[*session]struct{}),
		streamsCut: make(chan struct{}),
		pres:       presenceNode{local: map[presence.Entry]presence.Member{}, watched: map[string]int{}},
	}
	s.metrics = newMetrics(cfg.Registry, &s.queued)
	s.mux = http.NewServeMux()
	s.mux.HandleFunc("GET /api/realtime", s.serveWebSocket)
	s.mux.HandleFunc("POST /api/v1/emit", s.serveEmit)
	s.mux.HandleFunc("POST /api/v1/emit/batch", s.serveEmitBatch)
	s.mux.HandleFunc("POST /api/v1/stream", s.serveStream)
	s.mux.HandleFunc("GET /api/v1/history", s.serveHistory)
	s.mux.HandleFunc("GET /api/v1/presence", s.serveMembers)
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	s.mux.HandleFunc("GET /readyz", s.serveReady)
	if cfg.Site != nil {
		s.mux.Handle("/", cfg.Site)
	}
	s.metricsMux = s.mux
	if cfg.MetricsListener != nil {
		s.metricsMux = http.NewServeMux()
	}
	s.metricsMux.Handle("GET /metrics", promhttp.HandlerFor(cfg.Registry, promhttp.HandlerOpts{}))
	if cfg.Profiling {
		s.metricsMux.HandleFunc("/debug/pprof/", pprof.Index)
		s.metricsMux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		s.metricsMux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		s.metricsMux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		s.metricsMux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return s, nil
}

// ServeHTTP routes the gateway's endpoints.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

func (s *Server) serveReady(w http.ResponseWriter, r *http.Request) {
	if s.draining.Load() {
		writeError(w, protocol.CodeUnavailable, "draining")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), time.Second)
	defer cancel()
	if err := s.cfg.Broker.Ping(ctx); err != nil {
		writeError(w, protocol.CodeUnavailable, "broker unreachable: "+err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready", "node": s.cfg.NodeID})
}

// Serve accepts connections on ln until ctx is cancelled, then drains:
// see Shutdown. It returns nil after a clean drain.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	hs := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: readHeaderTimeout,
		// Idle keep-alive connections are closed: holders of many would
		// use up the node's file descriptors. Bodies have their own
		// deadlines (BodyTimeout, StreamIdleTimeout), so no ReadTimeout.
		IdleTimeout: s.cfg.HTTPIdleTimeout,
		ErrorLog:    zap.NewStdLog(s.log.Named("http")),
		BaseContext: func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	errc := make(chan error, 2)
	go func() { errc <- hs.Serve(ln) }()
	if ml := s.cfg.MetricsListener; ml != nil {
		ms := &http.Server{
			Handler:           s.metricsMux,
			ReadHeaderTimeout: readHeaderTimeout,
			IdleTimeout:       s.cfg.HTTPIdleTimeout,
			ErrorLog:          hs.ErrorLog,
		}
		go func() {
			if err := ms.Serve(ml); !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("metrics: %w", err)
			}
		}()
		// Metrics stay up through the drain, which they show.
		defer ms.Close()
	}
	pctx, stopPresence := context.WithCancel(ctx)
	defer stopPresence()
	go s.presenceLoop(pctx)
	go s.heartbeatLoop(pctx)
	select {
	case err := <-errc:
		return fmt.Errorf("gateway: serving: %w", err)
	case <-ctx.Done():
	}
	return s.Shutdown(hs)
}

// Shutdown drains the node: it turns unready, stops accepting, tells its
// clients to reconnect elsewhere (close 1012) a batch at a time so they do
// not stampede the other nodes, and waits for them to go, all within
// DrainTimeout. What each client had queued is written before its 1012.
func (s *Server) Shutdown(hs *http.Server) error {
	start := time.Now()
	deadline := start.Add(s.cfg.DrainTimeout)
	s.draining.Store(true)

	// Stop accepting; wait for in-flight HTTP API calls (hijacked WebSocket
	// connections are not waited for by net/http: they are ours to drain).
	sctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	httpDone := make(chan struct{})
	go func() {
		hs.Shutdown(sctx) //nolint:errcheck // bounded by sctx
		close(httpDone)
	}()
	// Token streams are HTTP requests that can run for minutes: they may go
	// on for three quarters of the drain, then end with E.error so that
	// their watchers are not left waiting for a node that is gone.
	cutStreams := time.AfterFunc(s.cfg.DrainTimeout*3/4, func() { close(s.streamsCut) })
	defer cutStreams.Stop()

	sessions := s.liveSessions()
	s.log.Info("draining", zap.Int("sessions", len(sessions)), zap.Duration("timeout", s.cfg.DrainTimeout))
	// Tell every client within half the drain time, in up to 20 batches.
	const batches = 20
	per := (len(sessions) + batches - 1) / batches
	pause := s.cfg.DrainTimeout / 2 / batches
	for i := 0; i < len(sessions); i += per {
		for _, sess := range sessions[i:min(i+per, len(sessions))] {
			sess.close(protocol.CloseDraining, "node draining")
		}
		if i+per < len(sessions) {
			time.Sleep(pause) // pacing between batches, not waiting for a condition
		}
	}

	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Until(deadline)):
		left := s.liveSessions()
		s.log.Warn("drain timeout: closing remaining connections", zap.Int("sessions", len(left)))
		for _, sess := range left {
			sess.conn.CloseNow()
		}
		select {
		case <-done:
		case <-time.After(2 * time.Second):
			s.log.Warn("sessions still cleaning up after drain timeout")
		}
	}
	select {
	case <-httpDone:
	case <-sctx.Done():
	}
	s.log.Info("drained", zap.Duration("took", time.Since(start)))
	return nil
}

func (s *Server) liveSessions() []*session {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*session, 0, len(s.sessions))
	for sess := range s.sessions {
		out = append(out, sess)
	}
	return out
}

// newID returns a random identifier with a prefix, e.g. "s_k3j4...".
func newID(prefix string) string {
	var b [10]byte
	rand.Read(b[:])
	return prefix + base32.HexEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:])
}
