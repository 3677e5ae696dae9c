package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"

	"github.com/updraft/updraft/protocol"
)

// WithPresence subscribes with presence: the subscribe reply lists the
// topic's members (Subscription.Members, Result().Members), and h receives
// the topic's presence events (a member joined, updated its state or
// left) in the order the server sent them. h runs on the client's handler
// goroutine, like the event handler: never concurrently with it or with
// any other handler, and in order with the topic's events. h may be nil
// when Subscription.Members is all that is wanted.
//
// Presence events are not replayed: after a reconnect the resubscribe
// reply lists the members afresh (WithOnResubscribe receives it in order
// with the events), and the events of the drop are lost.
func WithPresence(h func(protocol.PresenceEvent)) SubscribeOption {
	return func(c *subscribeConfig) { c.presence, c.onPresence = true, h }
}

// WithOnRetrack sets a function called after each automatic re-track (see
// Client.Track) on the handler goroutine, ordered with the events. err is
// nil when the server accepted the state again, else why it failed. A
// transient failure (unavailable, internal, rate_limited, no reply in
// time) is retried on the same connection after the reconnect backoff,
// and told to Options.OnError as a *RetryError too. A refusal of the state
// itself (too_large, bad_request, ...) is not retried: the client still
// remembers the state and tries again after the next reconnect, and a
// Track can set it now. Failures are also logged.
func WithOnRetrack(fn func(err error)) SubscribeOption {
	return func(c *subscribeConfig) { c.onRetrack = fn }
}

// Members returns the topic's members as the client knows them: the list
// of the latest (re)subscribe reply with every presence event received
// since applied (join and update put the event's member in place of the one
// with the same conn, leave removes it). It may include changes whose
// events the handler has not received yet. Without WithPresence it is nil.
func (s *Subscription) Members() []protocol.Member {
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	return slices.Clone(s.members)
}

// Track makes this connection a member of topic, with state, or updates
// its state when it is one already. The client must be subscribed to
// topic (else ErrNotSubscribed). state is marshalled with encoding/json
// and must encode to a JSON object (1 KiB by default, else too_large);
// nil, or anything that encodes to null, tracks without state. Updates
// faster than the server allows fail with rate_limited. While the client
// is reconnecting, Track waits for the connection. Track and Untrack calls
// on one topic run one at a time.
//
// The client remembers the state of the last Track the server did not
// refuse, until Untrack or until the subscription ends (Unsubscribe
// included), and tracks it again after every reconnect, once it has
// resubscribed the topic: presence outlives a dropped connection as
// subscriptions do. WithOnRetrack and the log report failures. A Track
// cut off by a dropped connection (a *CloseError) or by ctx may or may not
// have reached the server, but its state is remembered, and so is in
// place after the next reconnect.
func (c *Client) Track(ctx context.Context, topic string, state any) error {
	req := &protocol.Request{Type: protocol.TypeTrack, Topic: topic}
	if state != nil {
		raw, err := marshal(state)
		if err != nil {
			return fmt.Errorf("client: track %s: encoding state: %w", topic, err)
		}
		if string(raw) != "null" {
			req.State = raw
		}
	}
	ctx, cancel := c.requestContext(ctx)
	defer cancel()
	s, err := c.lockTrack(ctx, req)
	if err != nil {
		return err
	}
	defer s.unlockTrack()
	_, cn, err := c.roundTrip(ctx, req)
	var perr *protocol.Error
	if errors.As(err, &perr) || errors.Is(err, ErrTooLarge) {
		return err // the server kept the state it had, and so does the client
	}
	c.mu.Lock()
	if c.subs[topic] == s {
		s.tracking, s.state, s.trackedOn = true, req.State, nil
		if err == nil {
			s.trackedOn = cn
		}
	}
	c.mu.Unlock()
	return err
}

// Untrack ends this connection's membership of topic, and the client
// forgets the state it would track again after a reconnect. Unsubscribe
// untracks too. Untrack while reconnecting, or cut off by a dropped
// connection, returns nil: the server forgets the members of a closed
// connection.
func (c *Client) Untrack(ctx context.Context, topic string) error {
	req := &protocol.Request{Type: protocol.TypeUntrack, Topic: topic}
	ctx, cancel := c.requestContext(ctx)
	defer cancel()
	s, err := c.lockTrack(ctx, req)
	if err != nil {
		return err
	}
	defer s.unlockTrack()
	c.mu.Lock()
	s.tracking, s.state, s.trackedOn = false, nil, nil
	cn := c.conn
	var p *pendingCall
	if cn != nil {
		p, err = cn.start(req)
	}
	c.mu.Unlock()
	if cn == nil {
		return nil
	}
	if err == nil {
		_, err = p.wait(ctx)
	}
	var lost *CloseError
	if errors.As(err, &lost) {
		return nil
	}
	if err != nil {
		return c.opError(req, err)
	}
	return nil
}

// Members asks the server for topic's members. It needs permission to
// subscribe to topic (else forbidden), not a subscription.
func (c *Client) Members(ctx context.Context, topic string) ([]protocol.Member, error) {
	if err := protocol.ValidateTopic(topic); err != nil {
		return nil, err
	}
	r, err := c.request(ctx, &protocol.Request{Type: protocol.TypeMembers, Topic: topic})
	if err != nil {
		return nil, err
	}
	var res protocol.MembersResult
	if err := json.Unmarshal(r.Data, &res); err != nil {
		return nil, fmt.Errorf("client: members %s: bad reply data: %w", topic, err)
	}
	return res.Members, nil
}

// lockTrack returns the subscription to req.Topic with its trackSem held.
func (c *Client) lockTrack(ctx context.Context, req *protocol.Request) (*Subscription, error) {
	c.mu.Lock()
	s, err := c.subs[req.Topic], c.err
	c.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if s == nil {
		return nil, fmt.Errorf("%w: %s", ErrNotSubscribed, req.Topic)
	}
	ended := fmt.Errorf("%w: %s", ErrNotSubscribed, req.Topic)
	select {
	case s.trackSem <- struct{}{}:
	case <-s.done:
		return nil, ended
	case <-ctx.Done():
		return nil, c.opError(req, ctx.Err())
	}
	select {
	case <-s.done:
		s.unlockTrack()
		return nil, ended
	default:
		return s, nil
	}
}

func (s *Subscription) unlockTrack() { <-s.trackSem }

// retrack tracks s's remembered state again on cn, a new connection on
// which the topic was just resubscribed, and reports each outcome to
// WithOnRetrack. A transient failure (unavailable, internal, rate_limited,
// no reply in time) is also told to OnError and retried on cn after the
// backoff; a refusal of the state itself waits for the next reconnect or
// Track. A Track that went out on cn meanwhile makes it unnecessary; a
// drop of cn leaves it to the next connection.
func (c *Client) retrack(cn *conn, s *Subscription) {
	defer c.wg.Done()
	for failures := 0; ; {
		done, err := c.retrackOnce(cn, s)
		if done {
			return
		}
		if fn := s.cfg.onRetrack; fn != nil {
			c.disp.push(func() {
				select {
				case <-s.done:
				default:
					fn(err)
				}
			}, false)
		}
		if err == nil || !transient(err) {
			return
		}
		failures++
		d := c.retryDelay(failures)
		c.mu.Lock()
		c.reportLocked(&RetryError{Op: protocol.TypeTrack, Topic: s.topic, Attempt: failures, Delay: d, Err: err})
		c.mu.Unlock()
		if !c.sleep(d, s.done, cn.done) {
			return
		}
	}
}

// retrackOnce sends one re-track of s on cn and returns its error; done
// says there is nothing to report or retry: the state is in place, or it
// is no longer wanted on cn, or cn or the client ended.
func (c *Client) retrackOnce(cn *conn, s *Subscription) (done bool, err error) {
	select {
	case s.trackSem <- struct{}{}:
	case <-s.done:
		return true, nil
	case <-cn.done:
		return true, nil
	case <-c.ctx.Done():
		return true, nil
	}
	defer s.unlockTrack()
	c.mu.Lock()
	if c.conn != cn || c.subs[s.topic] != s || !s.tracking || s.trackedOn == cn {
		c.mu.Unlock()
		return true, nil
	}
	req := &protocol.Request{Type: protocol.TypeTrack, Topic: s.topic, State: s.state}
	p, err := cn.start(req)
	c.mu.Unlock()
	if err == nil {
		ctx, cancel := c.requestContext(c.ctx)
		_, err = p.wait(ctx)
		cancel()
	}
	var lost *CloseError
	switch {
	case err == nil:
		c.mu.Lock()
		s.trackedOn = cn // the state cannot have changed: trackSem is held
		c.mu.Unlock()
		c.log.Debug("client: tracked again", slog.String("topic", s.topic))
		return false, nil
	case errors.As(err, &lost) || c.ctx.Err() != nil:
		return true, nil // the next connection tracks again, or the client closed
	}
	err = c.opError(req, err)
	c.log.Warn("client: tracking again after a reconnect failed", slog.String("topic", s.topic), slog.Any("error", err))
	return false, err
}

// presence applies a presence event to its topic's member list and queues
// it for the presence handler. Presence events of a topic subscribed
// without presence are dropped.
func (c *Client) presence(ev protocol.PresenceEvent) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.subs[ev.Topic]
	if s == nil || !s.cfg.presence {
		c.log.Debug("client: presence message for a topic without presence ignored", slog.String("topic", ev.Topic), slog.String("event", ev.Event))
		return
	}
	s.members = applyPresence(s.members, ev)
	if h := s.cfg.onPresence; h != nil {
		c.disp.push(func() {
			select {
			case <-s.done: // ended meanwhile
			default:
				h(ev)
			}
		}, false)
	}
}

// applyPresence returns members with ev applied: join and update put
// ev.Member in place of the member with its conn (or add it), leave
// removes that member. An unknown event changes nothing.
func applyPresence(members []protocol.Member, ev protocol.PresenceEvent) []protocol.Member {
	i := slices.IndexFunc(members, func(m protocol.Member) bool { return m.Conn == ev.Member.Conn })
	switch ev.Event {
	case protocol.PresenceJoin, protocol.PresenceUpdate:
		if i >= 0 {
			members[i] = ev.Member
		} else {
			members = append(members, ev.Member)
		}
	case protocol.PresenceLeave:
		if i >= 0 {
			members = slices.Delete(members, i, i+1)
		}
	}
	return members
}
