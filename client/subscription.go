package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/updraft/updraft/protocol"
)

// Subscription is a client's subscription to one topic. It lasts across
// reconnects until Unsubscribe, until the server refuses to renew it
// (forbidden, bad_request or not_found), or until the client stops; Done
// tells when it ended. A resubscribe that fails otherwise (unavailable,
// internal, no reply within RequestTimeout) is retried with the reconnect
// backoff and the same since, and told to Options.OnError.
type Subscription struct {
	c       *Client
	topic   string
	handler func(protocol.Event)
	cfg     subscribeConfig

	// pos is the last position seen: the last event's, or the subscribe
	// reply's when no event came yet. Guarded by c.mu.
	pos protocol.Position
	// result is the last successful subscribe reply. Guarded by c.mu.
	result protocol.SubscribeResult
	// active is set by the first successful subscribe reply. Guarded by c.mu.
	active bool
	// ready is closed with the first subscribe outcome; readyErr says which.
	// Guarded by c.mu.
	ready    chan struct{}
	readyErr error
	// err is why the subscription ended. Guarded by c.mu.
	err  error
	done chan struct{} // closed when the subscription ended

	// gen counts the subscribe requests sent: only the reply to the last
	// one counts. Guarded by c.mu.
	gen uint64
	// failures counts the resubscribes refused or unanswered in a row,
	// which sets the backoff of the next. Guarded by c.mu.
	failures int
	// timer is the pending resubscribe retry, or the timeout of the
	// resubscribe in flight; nil when neither. Guarded by c.mu.
	timer *time.Timer

	// members is the topic's presence list as the client knows it (see
	// Members). Guarded by c.mu.
	members []protocol.Member
	// tracking says the connection should be a member of the topic, with
	// state: set by Track, cleared by Untrack (see Client.Track). Guarded
	// by c.mu.
	tracking bool
	state    json.RawMessage
	// trackedOn is the connection on which the server accepted state: a
	// subscribe reply on any other one makes the client track again.
	// Guarded by c.mu.
	trackedOn *conn
	// trackSem (capacity 1) lets one Track, Untrack or re-track of the
	// topic run at a time, so that the last one sent is the one remembered.
	trackSem chan struct{}
}

// SubscribeOption configures a subscription.
type SubscribeOption func(*subscribeConfig)

type subscribeConfig struct {
	filter      string
	since       protocol.Position
	onResub     func(protocol.SubscribeResult, error)
	hasOnResub  bool
	sinceWanted bool
	rewind      int
	presence    bool                         // subscribe with presence:true
	onPresence  func(protocol.PresenceEvent) // may be nil
	onRetrack   func(error)                  // may be nil
}

// WithRewind asks for the last n retained events before live ones (chat
// scroll-back, a late joiner of a token stream). It applies to the first
// subscribe only: after a reconnect the client resumes with since, from the
// last event it saw.
func WithRewind(n int) SubscribeOption {
	return func(c *subscribeConfig) { c.rewind = n }
}

// WithFilter sets a row filter on a table topic, such as
// "status=eq.paid&amount=gt.100"; the server ANDs it with the filters forced
// by the token.
func WithFilter(filter string) SubscribeOption {
	return func(c *subscribeConfig) { c.filter = filter }
}

// WithSince asks for every event after pos, as when resuming from a
// position stored earlier; Subscription.Result tells whether the server
// could recover them.
func WithSince(pos protocol.Position) SubscribeOption {
	return func(c *subscribeConfig) { c.since, c.sinceWanted = pos, true }
}

// WithOnResubscribe sets a function called after each automatic
// resubscription that follows a reconnect, on the handler goroutine and
// ordered with the events. res.Recovered false means events may have been
// missed (the topic moved to a new epoch or its history no longer reaches
// back): reload the state some other way. A non-nil err means the server
// refused the subscription (forbidden, bad_request or not_found), which
// has then ended; transient failures are retried, not reported here (see
// Options.OnError).
func WithOnResubscribe(fn func(res protocol.SubscribeResult, err error)) SubscribeOption {
	return func(c *subscribeConfig) { c.onResub, c.hasOnResub = fn, fn != nil }
}

// Subscribe subscribes to topic and returns once the server accepted.
// h receives the topic's events in seq order on the client's handler
// goroutine (see the package documentation); it may be nil. While the
// client is reconnecting, Subscribe waits for the connection. A refusal
// wraps the server's *protocol.Error (forbidden, bad_request, ...).
func (c *Client) Subscribe(ctx context.Context, topic string, h func(protocol.Event), opts ...SubscribeOption) (*Subscription, error) {
	if err := protocol.ValidateTopic(topic); err != nil {
		return nil, err
	}
	s := &Subscription{c: c, topic: topic, handler: h, ready: make(chan struct{}), done: make(chan struct{}), trackSem: make(chan struct{}, 1)}
	for _, o := range opts {
		o(&s.cfg)
	}
	if s.cfg.sinceWanted {
		s.pos = s.cfg.since
	}

	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return nil, err
	}
	if c.subs[topic] != nil {
		c.mu.Unlock()
		return nil, fmt.Errorf("%w: %s", ErrSubscribed, topic)
	}
	c.subs[topic] = s
	if c.conn != nil {
		c.sendSubscribeLocked(c.conn, s) // else attach sends it
	}
	c.mu.Unlock()

	ctx, cancel := c.requestContext(ctx)
	defer cancel()
	select {
	case <-s.ready:
	case <-ctx.Done():
		c.mu.Lock()
		if !s.active {
			// A late ok reply unsubscribes.
			c.endLocked(s, fmt.Errorf("client: subscribe %s: %w", topic, ctx.Err()))
		}
		c.mu.Unlock()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if s.readyErr != nil {
		return nil, s.readyErr
	}
	return s, nil
}

// Unsubscribe ends the subscription to topic. The handler gets no event
// after Unsubscribe returned.
func (c *Client) Unsubscribe(ctx context.Context, topic string) error {
	c.mu.Lock()
	s := c.subs[topic]
	c.mu.Unlock()
	if s == nil {
		return fmt.Errorf("%w: %s", ErrNotSubscribed, topic)
	}
	return s.Unsubscribe(ctx)
}

// Topic returns the subscription's topic.
func (s *Subscription) Topic() string { return s.topic }

// Position returns the last position the client saw on the topic: the last
// event's, or the subscribe reply's when no event came since. It is what
// the client sends as since when it resubscribes.
func (s *Subscription) Position() protocol.Position {
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	return s.pos
}

// Result returns the server's last successful reply to subscribing,
// renewed on each resubscription.
func (s *Subscription) Result() protocol.SubscribeResult {
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	return s.result
}

// Done is closed when the subscription ended; Err tells why.
func (s *Subscription) Done() <-chan struct{} { return s.done }

// Err returns nil while the subscription lasts and after Unsubscribe; else
// why it ended: the server refused to renew it, or the client stopped.
func (s *Subscription) Err() error {
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	return s.err
}

// Unsubscribe ends the subscription. The handler gets no event after
// Unsubscribe returned. If the connection drops meanwhile, the server
// forgot the subscription anyway and Unsubscribe returns nil.
func (s *Subscription) Unsubscribe(ctx context.Context) error {
	c := s.c
	c.mu.Lock()
	if c.subs[s.topic] != s {
		c.mu.Unlock()
		return fmt.Errorf("%w: %s", ErrNotSubscribed, s.topic)
	}
	c.endLocked(s, nil)
	cn := c.conn
	if cn == nil {
		c.mu.Unlock()
		return nil // nothing to tell a server we are not connected to
	}
	// Queued under the lock, so it precedes any later subscribe to the topic.
	p, err := cn.start(&protocol.Request{Type: protocol.TypeUnsubscribe, Topic: s.topic})
	c.mu.Unlock()
	if err == nil {
		ctx, cancel := c.requestContext(ctx)
		defer cancel()
		_, err = p.wait(ctx)
	}
	var lost *CloseError
	if errors.As(err, &lost) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("client: unsubscribe %s: %w", s.topic, err)
	}
	return nil
}

// endLocked ends s with err (nil for Unsubscribe) and forgets it.
func (c *Client) endLocked(s *Subscription, err error) {
	select {
	case <-s.done:
		return
	default:
	}
	s.err = err
	close(s.done)
	s.stopTimerLocked()
	if s.readyErr == nil && !s.active {
		s.readyErr = err
		if err == nil {
			s.readyErr = fmt.Errorf("%w: %s", ErrNotSubscribed, s.topic)
		}
		close(s.ready)
	}
	if c.subs[s.topic] == s {
		delete(c.subs, s.topic)
	}
}

// sendSubscribeLocked sends s's subscribe request on cn, with since when
// the client has seen a position on the topic. A resubscribe (s was
// active) that gets no reply within RequestTimeout is retried; the first
// subscribe is bounded by Subscribe's context instead.
func (c *Client) sendSubscribeLocked(cn *conn, s *Subscription) {
	s.stopTimerLocked() // this request replaces a pending retry
	req := &protocol.Request{Type: protocol.TypeSubscribe, Topic: s.topic, Filter: s.cfg.filter, Presence: s.cfg.presence}
	if s.pos.Epoch != "" || s.cfg.sinceWanted {
		since := s.pos
		req.Since = &since
	} else if !s.active {
		req.Rewind = s.cfg.rewind
	}
	replays := req.Since != nil || req.Rewind > 0
	s.gen++
	gen := s.gen
	ref, err := cn.send(req, func(r *protocol.Reply, err error) { c.subscribed(cn, s, gen, replays, r, err) })
	var lost *CloseError
	switch {
	case err == nil:
		if s.active && c.opts.RequestTimeout > 0 {
			timeout := c.opts.RequestTimeout
			var tm *time.Timer
			tm = time.AfterFunc(timeout, func() {
				c.mu.Lock()
				defer c.mu.Unlock()
				// Not if the reply came, or a later request replaced this one.
				if s.timer == tm && s.gen == gen && c.conn == cn {
					cn.forget(ref)
					c.resubscribeFailedLocked(cn, s, fmt.Errorf("no reply within %v: %w", timeout, context.DeadlineExceeded))
				}
			})
			s.timer = tm // before the callback can read it: c.mu is held
		}
	case !errors.As(err, &lost):
		// Cannot be sent at all (too large): the server will never accept it.
		c.endLocked(s, fmt.Errorf("client: subscribe %s: %w", s.topic, err))
	}
	// On a lost connection, attach sends it again on the next one.
}

// stopTimerLocked stops s's pending retry or timeout.
func (s *Subscription) stopTimerLocked() {
	if s.timer != nil {
		s.timer.Stop()
		s.timer = nil
	}
}

// resubscribeFailedLocked handles a resubscribe on cn that failed with a
// transient err: it tells OnError and sends the resubscribe again, with
// the same since, after the backoff. A reconnect meanwhile resubscribes at
// once instead.
func (c *Client) resubscribeFailedLocked(cn *conn, s *Subscription, err error) {
	s.stopTimerLocked()
	s.failures++
	d := c.retryDelay(s.failures)
	var tm *time.Timer
	tm = time.AfterFunc(d, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		// Not if a reconnect resubscribed meanwhile, or the subscription ended.
		if s.timer == tm && c.conn == cn && c.subs[s.topic] == s {
			c.sendSubscribeLocked(cn, s)
		}
	})
	s.timer = tm // before the callback can read it: c.mu is held
	rerr := &RetryError{Op: protocol.TypeSubscribe, Topic: s.topic, Attempt: s.failures, Delay: d, Err: err}
	c.log.Warn("client: resubscribe failed, retrying", slog.String("topic", s.topic), slog.Int("attempt", s.failures),
		slog.Duration("delay", d), slog.Any("error", err))
	c.reportLocked(rerr)
}

// subscribed handles the reply to the subscribe number gen of s, sent on
// cn. replays says the request asked the server to replay history (since
// or rewind): then the reply's position is not where events start.
func (c *Client) subscribed(cn *conn, s *Subscription, gen uint64, replays bool, r *protocol.Reply, err error) {
	if err != nil {
		return // the connection ended; the next one resubscribes
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-s.done:
		// Ended while the request was in flight. Unless the topic was
		// subscribed again (whose request follows this one), make sure the
		// server forgets it.
		if r.OK && c.subs[s.topic] == nil && c.conn == cn {
			_, _ = cn.send(&protocol.Request{Type: protocol.TypeUnsubscribe, Topic: s.topic}, nil)
		}
		return
	default:
	}
	if gen != s.gen {
		return // a later request (a retry after a timeout) replaced this one
	}
	s.stopTimerLocked()
	resub := s.active
	if !r.OK {
		if resub && !endsSubscription(r.Error) {
			c.resubscribeFailedLocked(cn, s, r.Error)
			return
		}
		err := fmt.Errorf("client: subscribe %s: %w", s.topic, r.Error)
		c.endLocked(s, err)
		if resub {
			c.reportLocked(err)
			if s.cfg.hasOnResub {
				fn := s.cfg.onResub
				c.disp.push(func() { fn(protocol.SubscribeResult{}, err) }, false)
			}
		}
		c.log.Warn("client: subscription refused", slog.String("topic", s.topic), slog.Any("error", r.Error))
		return
	}
	s.failures = 0
	var res protocol.SubscribeResult
	if err := json.Unmarshal(r.Data, &res); err != nil {
		c.log.Warn("client: bad subscribe reply data", slog.String("topic", s.topic), slog.Any("error", err))
	}
	s.result = res
	if s.cfg.presence {
		// A copy: presence events edit it, and Result shares res.
		s.members = slices.Clone(res.Members)
	}
	if !replays || !res.Recovered {
		// The server delivers only what follows its reply: start from its
		// position, unless events beyond it came already.
		if s.pos.Epoch != res.Epoch || s.pos.Seq < res.Seq {
			s.pos = protocol.Position{Epoch: res.Epoch, Seq: res.Seq}
		}
	}
	s.active = true
	if s.readyErr == nil {
		select {
		case <-s.ready:
		default:
			close(s.ready)
		}
	}
	if resub && replays && !res.Recovered {
		c.log.Warn("client: resubscribed without recovering the missed events", slog.String("topic", s.topic))
		c.reportLocked(fmt.Errorf("%w: %s resumes at %s/%d", ErrNotRecovered, s.topic, res.Epoch, res.Seq))
	}
	if resub && s.cfg.hasOnResub {
		fn := s.cfg.onResub
		c.disp.push(func() { fn(res, nil) }, false)
	}
	if s.tracking && s.trackedOn != cn {
		// A new connection: the server forgot the member. The reader
		// goroutine, counted in wg, keeps wg above zero here.
		c.wg.Add(1)
		go c.retrack(cn, s)
	}
}

// event records an event's position and queues it for its handler. An
// event at or below the position already seen (same epoch) is a duplicate
// and is dropped.
func (c *Client) event(ev protocol.Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.subs[ev.Topic]
	if s == nil {
		return // unsubscribed meanwhile
	}
	if ev.Epoch != "" && ev.Epoch == s.pos.Epoch && ev.Seq <= s.pos.Seq {
		c.log.Debug("client: duplicate event dropped", slog.String("topic", ev.Topic), slog.Uint64("seq", ev.Seq))
		return
	}
	s.pos = ev.Position()
	if s.handler != nil {
		c.disp.push(func() { s.deliver(ev) }, false)
	}
}

// deliver calls the handler unless the subscription ended meanwhile.
func (s *Subscription) deliver(ev protocol.Event) {
	select {
	case <-s.done:
	default:
		s.handler(ev)
	}
}
