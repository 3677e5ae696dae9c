// Package client is Updraft's Go client: one WebSocket to a gateway that
// carries requests (publish, subscribe, track, members, ping, refresh) and
// delivers the events and presence events of subscribed topics. It speaks
// protocol v1 as described in docs/protocol.md and imports nothing of
// Updraft's but the protocol package.
//
// A Client reconnects by itself. After a drop it waits a randomised
// exponential backoff (full jitter), reconnects, resubscribes every topic
// it had, asking the server for the events it missed (since = the last
// position it saw), and tracks its presence again where it had tracked it
// (see Client.Track). A resubscribe, re-track or refresh that fails
// transiently (unavailable, internal, no reply in time, ...) is retried
// with the same backoff and the same since, and told to Options.OnError:
// only forbidden, bad_request or not_found end a subscription. How it
// reacts to each close code follows the protocol's table: 1012 (node
// draining) reconnects at once, 4000 and 4003 stop the client, 4001 (token
// expired) reconnects only when Options.TokenFunc can supply a new token,
// anything else reconnects after the backoff.
//
// Event and presence handlers and the OnStatus, OnDisconnect, OnReconnect
// and OnError callbacks all run on one goroutine per Client, in the order
// the client saw what they report: the events of one topic arrive in seq
// order and never concurrently. The connection's reader hands events to
// that goroutine through an unbounded queue, so a slow handler never delays the replies
// that other goroutines wait for (a handler may itself call Publish), but
// a handler that persistently falls behind makes the queue, and the memory
// it holds, grow.
package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/updraft/updraft/internal/backoff"
	"github.com/updraft/updraft/protocol"
)

// Version is the client's version, sent in connect as "go/<Version>" unless
// Options.SDK says otherwise.
const Version = "0.1.0"

// CloseAbnormal is the close code reported when a connection ended without
// a close frame and without a disconnect message (a dropped TCP connection,
// a silent server).
const CloseAbnormal = 1006

// Errors returned by a Client, matched with errors.Is. A request refused by
// the server fails with a *protocol.Error (match it with errors.As); a
// request whose connection dropped before its reply fails with a
// *CloseError, and may or may not have taken effect.
var (
	// ErrClosed: Close was called.
	ErrClosed = errors.New("client: closed")
	// ErrSubscribed: Subscribe to a topic the client is already subscribed to.
	ErrSubscribed = errors.New("client: already subscribed")
	// ErrNotSubscribed: Unsubscribe, Track or Untrack on a topic the client
	// is not subscribed to.
	ErrNotSubscribed = errors.New("client: not subscribed")
	// ErrTooLarge: the request is larger than the server accepts
	// (max_message in the connect reply).
	ErrTooLarge = errors.New("client: message too large")
	// ErrNotRecovered, told to Options.OnError: a resubscribe could not
	// recover the events missed since the last position seen (the reply
	// said recovered:false); the subscription goes on from the server's
	// position, and the application must reload its state some other way.
	ErrNotRecovered = errors.New("client: missed events not recovered")
)

// CloseError reports how a connection ended: the WebSocket close status
// when the server sent one, else the code of its disconnect message, else
// CloseAbnormal. It is the Err of a client the server stopped (4000, 4003,
// 4001 without TokenFunc) and the error of requests cut off by a drop.
type CloseError struct {
	Code   int
	Reason string
}

func (e *CloseError) Error() string {
	if e.Reason == "" {
		return fmt.Sprintf("client: connection closed (%d)", e.Code)
	}
	return fmt.Sprintf("client: connection closed (%d %s)", e.Code, e.Reason)
}

// RetryError reports a failure the client recovers from by itself, as
// passed to Options.OnError: a resubscribe, re-track or token refresh the
// server answered with a transient error (unavailable, internal,
// rate_limited, ...) or did not answer in time. The client tries again
// after Delay, the reconnect backoff, keeping what it asked for (a
// resubscribe keeps its since). Err is the server's *protocol.Error (match
// it with errors.As) or the timeout.
type RetryError struct {
	Op      string        // the request: "subscribe", "track" or "refresh"
	Topic   string        // its topic; empty for refresh
	Attempt int           // how many attempts failed in a row, 1 for the first
	Delay   time.Duration // the wait before the next attempt
	Err     error
}

func (e *RetryError) Error() string {
	what := e.Op
	if e.Topic != "" {
		what += " " + e.Topic
	}
	return fmt.Sprintf("client: %s failed (attempt %d), retrying in %v: %v", what, e.Attempt, e.Delay.Round(time.Millisecond), e.Err)
}

func (e *RetryError) Unwrap() error { return e.Err }

// Status is the state of a Client's connection, as reported to
// Options.OnStatus. The names mirror the statuses of the JavaScript SDK.
type Status int

// Statuses, in the order a client normally goes through them.
const (
	StatusIdle         Status = iota // not connected yet
	StatusConnecting                 // Dial in progress
	StatusConnected                  // connected; requests go out at once
	StatusReconnecting               // the connection dropped; reconnecting
	StatusDisconnected               // stopped for good: Close, or a close code that forbids reconnecting
)

var statusNames = [...]string{"idle", "connecting", "connected", "reconnecting", "disconnected"}

func (s Status) String() string {
	if s >= 0 && int(s) < len(statusNames) {
		return statusNames[s]
	}
	return fmt.Sprintf("Status(%d)", int(s))
}

// Options configure a Client. The zero value of each field means its
// documented default.
type Options struct {
	// Token is the JWT sent with connect; empty connects anonymously.
	// Ignored when TokenFunc is set. A successful Refresh replaces it.
	Token string
	// TokenFunc, when set, supplies the token before every connect, the
	// first included. It lets the client reconnect after the server closed
	// with 4001 (token expired); without it, 4001 stops the client.
	TokenFunc func(ctx context.Context) (string, error)
	// Header is sent with the WebSocket handshake (for example Origin).
	Header http.Header
	// SDK names the client in connect. Default "go/" + Version.
	SDK string
	// OnStatus, when set, is called on every status change.
	OnStatus func(Status)
	// OnDisconnect, when set, is called when an established connection
	// ends other than by Close, with the code and reason the client acts on
	// (see CloseError).
	OnDisconnect func(code int, reason string)
	// OnError, when set, is told of every failure the application did not
	// ask about directly, so that none passes silently: each resubscribe,
	// re-track or refresh the client will retry (a *RetryError), and each
	// subscription the server refused to renew after a reconnect
	// (forbidden, bad_request or not_found), which has then ended (its
	// Done is closed and its Err says the same), and each resubscribe that
	// could not recover the events missed (ErrNotRecovered, as
	// WithOnResubscribe's recovered:false says).
	OnError func(error)
	// OnReconnect, when set, is called before each reconnect attempt with
	// the attempt's number (1 for the first after a drop), how long the
	// client waits before making it, and why it reconnects: the dropped
	// connection's *CloseError before the first attempt, the previous
	// attempt's error before the others.
	OnReconnect func(attempt int, delay time.Duration, cause error)
	// MinBackoff is the backoff ceiling of the first reconnect attempt; it
	// doubles with each failed attempt up to MaxBackoff. The actual sleep is
	// random in [0, ceiling]. The same backoff paces the retries of a
	// resubscribe, re-track or refresh (see OnError). Defaults 100ms and 10s.
	MinBackoff time.Duration
	MaxBackoff time.Duration
	// RequestTimeout bounds each request and each connect handshake in
	// addition to the caller's context. Default 10s; negative means none.
	RequestTimeout time.Duration
	// ReadLimit is the largest frame accepted from the server, in bytes.
	// The server packs many messages into one frame under load, so this is
	// larger than the server's own limit. Default 32 MiB.
	ReadLimit int64
	// Logger receives the client's diagnostics, through the standard
	// library's log/slog so the SDK imposes no logging library. Default:
	// none. A program logging with zap passes a slog.Logger over its core,
	// slog.New(zapslog.NewHandler(logger.Core())) with
	// go.uber.org/zap/exp/zapslog.
	Logger *slog.Logger

	// rand returns a random int64 in [0, n) for the backoff; tests replace
	// it. Nil means math/rand/v2's.
	rand func(n int64) int64
	// heartbeatUnit is the unit of the connect reply's heartbeat; tests
	// shorten it. Default a second, as the protocol says.
	heartbeatUnit time.Duration
}

// Defaults of Options.
const (
	DefaultMinBackoff     = 100 * time.Millisecond
	DefaultMaxBackoff     = 10 * time.Second
	DefaultRequestTimeout = 10 * time.Second
	DefaultReadLimit      = 32 << 20
)

// withDefaults returns o with defaults filled in, or an error naming the
// first invalid setting.
func (o Options) withDefaults() (Options, error) {
	if o.SDK == "" {
		o.SDK = "go/" + Version
	}
	if o.MinBackoff == 0 {
		o.MinBackoff = DefaultMinBackoff
	}
	if o.MaxBackoff == 0 {
		o.MaxBackoff = DefaultMaxBackoff
	}
	if o.RequestTimeout == 0 {
		o.RequestTimeout = DefaultRequestTimeout
	}
	if o.ReadLimit == 0 {
		o.ReadLimit = DefaultReadLimit
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.heartbeatUnit == 0 {
		o.heartbeatUnit = time.Second
	}
	switch {
	case o.MinBackoff < 0:
		return o, fmt.Errorf("client: MinBackoff %v is negative", o.MinBackoff)
	case o.MaxBackoff < o.MinBackoff:
		return o, fmt.Errorf("client: MaxBackoff %v is below MinBackoff %v", o.MaxBackoff, o.MinBackoff)
	case o.ReadLimit < 0:
		return o, fmt.Errorf("client: ReadLimit %d is negative", o.ReadLimit)
	}
	return o, nil
}

// backoff is the policy of the reconnects and of the retries of a
// resubscribe, re-track or refresh (internal/backoff owns the arithmetic).
func (o Options) backoff() backoff.Policy {
	return backoff.Policy{Min: o.MinBackoff, Max: o.MaxBackoff, Rand: o.rand}
}

// Client is a connection to an Updraft gateway that survives drops. Its
// methods are safe for concurrent use. Close releases it.
type Client struct {
	url  string
	opts Options
	log  *slog.Logger

	ctx    context.Context // cancelled by Close; bounds every goroutine below
	cancel context.CancelFunc
	wg     sync.WaitGroup // the run loop and each conn's reader and writer
	disp   *dispatcher    // runs handlers and callbacks
	refs   atomic.Uint64  // the last request ref used

	mu sync.Mutex
	// conn is the connected connection; nil between connections. Guarded by mu.
	conn *conn
	// connected is closed when conn becomes non-nil or the client stops, and
	// replaced by an open channel when conn drops. Guarded by mu.
	connected chan struct{}
	// subs are the wanted subscriptions by topic. Guarded by mu.
	subs map[string]*Subscription
	// token is the token for the next connect when TokenFunc is nil. Guarded by mu.
	token string
	// status is the last status reported. Guarded by mu.
	status Status
	// session and node name the current or last connection. Guarded by mu.
	session, node string
	// err is why the client stopped; nil while it runs. Guarded by mu.
	err error
	// done is closed when err is set.
	done chan struct{}
	// closeCalled is set by the first Close. Guarded by mu.
	closeCalled bool
}

// Dial connects to the gateway at url (ws:// or wss://, path
// /api/realtime), sends connect and waits for the reply. It fails when the
// server cannot be reached or refuses the connection; a refusal wraps the
// server's *protocol.Error (code unauthorized for a bad token). ctx bounds
// the first connection only; once Dial returned, the client lives until
// Close or until the server stops it.
func Dial(ctx context.Context, url string, opts Options) (*Client, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	c := &Client{
		url:       url,
		opts:      opts,
		log:       opts.Logger.With(slog.String("url", url)),
		disp:      newDispatcher(),
		connected: make(chan struct{}),
		subs:      make(map[string]*Subscription),
		token:     opts.Token,
		done:      make(chan struct{}),
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	go c.disp.loop()

	c.mu.Lock()
	c.setStatusLocked(StatusConnecting)
	c.mu.Unlock()

	hctx, cancel := c.requestContext(ctx)
	cn, err := c.connect(hctx)
	cancel()
	if err == nil && !c.attach(cn) {
		err = ErrClosed // unreachable: nobody else can stop the client yet
	}
	if err != nil {
		c.stop(err)
		c.shutdown()
		return nil, err
	}
	c.wg.Add(1)
	go c.run(cn)
	return c, nil
}

// Close closes the connection (status 1000), stops reconnecting and waits
// for the client's goroutines. Pending requests fail with ErrClosed, events
// still queued for handlers are dropped, and OnStatus receives
// StatusDisconnected last. A handler running at that moment may still be
// finishing when Close returns, which lets a handler call Close. Calling
// Close again does nothing. It always returns nil.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closeCalled {
		c.mu.Unlock()
		return nil
	}
	c.closeCalled = true
	c.stopLocked(ErrClosed)
	cn := c.conn
	c.conn = nil
	c.mu.Unlock()

	if cn != nil {
		cn.close()
	}
	c.shutdown()
	return nil
}

// shutdown stops every goroutine of a client that was stopped.
func (c *Client) shutdown() {
	c.cancel()
	c.wg.Wait()
	c.disp.stop()
}

// Done is closed when the client stops for good: Close was called or the
// server closed with a code that forbids reconnecting. Err tells which.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err returns nil while the client runs, ErrClosed after Close, or why the
// server stopped it: a *CloseError (4000, 4003, or 4001 without TokenFunc)
// or the error of a refused reconnect.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Status returns the client's current status.
func (c *Client) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.status
}

// Session returns the session id of the current (or last) connection, the
// id the server uses for it everywhere, such as presence's conn.
func (c *Client) Session() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.session
}

// Node returns the id of the gateway node of the current (or last)
// connection.
func (c *Client) Node() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.node
}

// Publish publishes an event on an application topic and returns the
// position the server gave it. data is marshalled with encoding/json
// (a json.RawMessage passes as it is); nil sends no data. While the client
// is reconnecting, Publish waits for the connection.
func (c *Client) Publish(ctx context.Context, topic, event string, data any) (protocol.Position, error) {
	var pos protocol.Position
	if err := protocol.ValidatePublish(topic, event); err != nil {
		return pos, err
	}
	req := &protocol.Request{Type: protocol.TypePublish, Topic: topic, Event: event}
	if data != nil {
		raw, err := marshal(data)
		if err != nil {
			return pos, fmt.Errorf("client: publish %s: encoding data: %w", topic, err)
		}
		req.Data = raw
	}
	r, err := c.request(ctx, req)
	if err != nil {
		return pos, err
	}
	if err := json.Unmarshal(r.Data, &pos); err != nil {
		return pos, fmt.Errorf("client: publish %s: bad reply data: %w", topic, err)
	}
	return pos, nil
}

// Ping asks the server for an ok reply: a round trip through the session.
func (c *Client) Ping(ctx context.Context) error {
	_, err := c.request(ctx, &protocol.Request{Type: protocol.TypePing})
	return err
}

// Refresh replaces the connection's token before it expires. Unless
// TokenFunc is set, the new token is also the one used to reconnect.
//
// A transient failure (unavailable, internal, rate_limited, a dropped
// connection, no reply within RequestTimeout) does not end it: Refresh
// tells OnError (a *RetryError) and sends the token again after the
// reconnect backoff, on the next connection if the connection dropped,
// until the server accepts or refuses the token (unauthorized, forbidden,
// bad_request) or ctx ends, which then returns the last failure.
// RequestTimeout bounds each attempt, not the whole.
func (c *Client) Refresh(ctx context.Context, token string) error {
	for failures := 0; ; {
		_, err := c.request(ctx, &protocol.Request{Type: protocol.TypeRefresh, Token: token})
		if err == nil {
			break
		}
		if !transient(err) || ctx.Err() != nil {
			return err
		}
		if cerr := c.Err(); cerr != nil {
			return cerr // stopped for good, perhaps by this very drop
		}
		failures++
		d := c.retryDelay(failures)
		c.mu.Lock()
		c.reportLocked(&RetryError{Op: protocol.TypeRefresh, Attempt: failures, Delay: d, Err: err})
		c.mu.Unlock()
		c.log.Warn("client: refresh failed, retrying", slog.Int("attempt", failures), slog.Duration("delay", d), slog.Any("error", err))
		if !c.sleep(d, ctx.Done(), c.done) {
			if cerr := c.Err(); cerr != nil {
				return cerr
			}
			return err
		}
	}
	c.mu.Lock()
	c.token = token
	c.mu.Unlock()
	return nil
}

// request sends req on the current connection, waiting for one while the
// client reconnects, and returns the ok reply. A failed reply is returned as
// an error wrapping its *protocol.Error.
func (c *Client) request(ctx context.Context, req *protocol.Request) (*protocol.Reply, error) {
	ctx, cancel := c.requestContext(ctx)
	defer cancel()
	r, _, err := c.roundTrip(ctx, req)
	return r, err
}

// roundTrip is request without RequestTimeout; it also returns the
// connection that carried req (nil when none did).
func (c *Client) roundTrip(ctx context.Context, req *protocol.Request) (*protocol.Reply, *conn, error) {
	for {
		c.mu.Lock()
		cn, wait, err := c.conn, c.connected, c.err
		c.mu.Unlock()
		if err != nil {
			return nil, nil, err
		}
		if cn == nil {
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return nil, nil, c.opError(req, ctx.Err())
			}
		}
		r, err := cn.call(ctx, req)
		var ns notSentError
		if errors.As(err, &ns) {
			c.detach(cn) // ended before the run loop noticed; wait for the next
			continue
		}
		if err != nil {
			return nil, cn, c.opError(req, err)
		}
		return r, cn, nil
	}
}

// requestContext bounds a request by RequestTimeout.
func (c *Client) requestContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if c.opts.RequestTimeout > 0 {
		return context.WithTimeout(ctx, c.opts.RequestTimeout)
	}
	return context.WithCancel(ctx)
}

// opError names the request in errors from the server and the context;
// the client's own errors already say what they are.
func (c *Client) opError(req *protocol.Request, err error) error {
	var perr *protocol.Error
	if errors.As(err, &perr) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		if req.Topic != "" {
			return fmt.Errorf("client: %s %s: %w", req.Type, req.Topic, err)
		}
		return fmt.Errorf("client: %s: %w", req.Type, err)
	}
	return err
}

// nextToken returns the token for a connect.
func (c *Client) nextToken(ctx context.Context) (string, error) {
	if c.opts.TokenFunc != nil {
		tok, err := c.opts.TokenFunc(ctx)
		if err != nil {
			return "", fmt.Errorf("client: TokenFunc: %w", err)
		}
		return tok, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.token, nil
}

// attach makes cn the current connection: it resubscribes every wanted
// topic, then lets waiting requests through. It reports false, closing cn,
// when the client stopped meanwhile.
func (c *Client) attach(cn *conn) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		_ = cn.ws.CloseNow()
		return false
	}
	c.conn = cn
	c.session, c.node = cn.session, cn.node
	for _, s := range c.subs {
		c.sendSubscribeLocked(cn, s)
	}
	close(c.connected)
	c.setStatusLocked(StatusConnected)
	c.log.Debug("client: connected", slog.String("session", cn.session), slog.String("node", cn.node))
	return true
}

// detach stops using cn for new requests once it ended.
func (c *Client) detach(cn *conn) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.detachLocked(cn)
}

func (c *Client) detachLocked(cn *conn) {
	if c.conn == cn && c.err == nil {
		c.conn = nil
		c.connected = make(chan struct{})
	}
}

// dropped forgets cn after it ended and reports whether the client still
// runs; if so it tells OnDisconnect.
func (c *Client) dropped(cn *conn, ce *CloseError) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.detachLocked(cn)
	if c.err != nil {
		return false
	}
	c.log.Info("client: connection lost", slog.Int("code", ce.Code), slog.String("reason", ce.Reason))
	if fn := c.opts.OnDisconnect; fn != nil {
		code, reason := ce.Code, ce.Reason
		c.disp.push(func() { fn(code, reason) }, true)
	}
	return true
}

// stop stops the client for good with err.
func (c *Client) stop(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stopLocked(err)
}

func (c *Client) stopLocked(err error) {
	if c.err != nil {
		return
	}
	c.err = err
	close(c.done)
	select {
	case <-c.connected:
	default:
		close(c.connected) // wake waiting requests; they find err
	}
	for _, s := range c.subs {
		c.endLocked(s, err)
	}
	c.setStatusLocked(StatusDisconnected)
}

// reportLocked tells OnError of err, in order with the events.
func (c *Client) reportLocked(err error) {
	if fn := c.opts.OnError; fn != nil {
		c.disp.push(func() { fn(err) }, false)
	}
}

func (c *Client) setStatusLocked(s Status) {
	if c.status == s {
		return
	}
	c.status = s
	if fn := c.opts.OnStatus; fn != nil {
		c.disp.push(func() { fn(s) }, true)
	}
}
