package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/updraft/updraft/presence"
	"github.com/updraft/updraft/protocol"
)

// Presence on this node.
//
// The presence store (Config.Presence) is the truth: who is on a topic,
// with what state, until when. Events travel between nodes as broker
// signals on the topic (Broker.Signal): unsequenced, so they take no seq
// and stay out of history. Each node:
//
//   - tracks, updates and untracks its own connections' members and
//     signals join, update and leave at once (unsubscribe, untrack and a
//     closed connection are leaves);
//   - heartbeats all its members every Timings.Heartbeat, in one store
//     call; members the store lost (a Redis restart) are tracked again and
//     signalled as joins;
//   - sweeps, every Timings.Sweep, the topics some local subscriber
//     watches for presence: the store hands each expired member (a dead
//     node's) to exactly one sweeper, which signals its leave.
//
// Members are stored with a lifetime of Timings.TTL, renewed at every
// heartbeat, so that a dead node's members leave within the timeout:
// presence.Timing derives all three from it, and says why that holds.
type presenceNode struct {
	mu    sync.Mutex
	local map[presence.Entry]presence.Member // guarded by mu: members tracked through this node
	// watched counts, per topic, the local subscriptions that asked for
	// presence: the topics this node sweeps.
	watched map[string]int // guarded by mu
}

// Presence defaults.
const (
	DefaultPresenceTimeout  = 15 * time.Second
	DefaultPresenceRate     = 10
	DefaultMaxPresenceState = 1024
)

const errNoPresence = "presence is not configured on this server"

// presenceTiming is this node's presence timings: presence.Timing owns
// the fractions of the timeout.
func (s *Server) presenceTiming() presence.Timings { return presence.Timing(s.cfg.PresenceTimeout) }

// tracked is a session's membership on one topic (reader goroutine only).
type tracked struct {
	member  presence.Member
	limiter rateLimiter
}

func memberOf(m presence.Member) protocol.Member {
	return protocol.Member{Key: m.Key, Conn: m.Conn, State: m.State, Joined: m.Joined}
}

// membersOf converts a member list for the wire; it is never nil, so that
// an empty list is sent as [] (see protocol.SubscribeResult).
func membersOf(ms []presence.Member) []protocol.Member {
	out := make([]protocol.Member, len(ms))
	for i, m := range ms {
		out[i] = memberOf(m)
	}
	return out
}

// signalPresence tells every node's presence subscribers of topic about a
// join, update or leave. A lost signal is logged: the store stays right,
// and members and subscribe replies read it.
func (s *Server) signalPresence(topic, event string, m presence.Member) {
	payload, err := json.Marshal(protocol.PresenceEvent{Type: protocol.TypePresence, Topic: topic, Event: event, Member: memberOf(m)})
	if err != nil {
		s.log.Error("encoding a presence event", zap.Error(err))
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), brokerTimeout)
	defer cancel()
	if err := s.cfg.Broker.Signal(ctx, topic, payload); err != nil {
		s.log.Warn("presence event not sent", zap.String("topic", topic), zap.String("event", event), zap.Error(err))
		return
	}
	s.metrics.presenceEvents.WithLabelValues(event).Inc()
}

// DeliverSignal is the broker's SignalHandler: it queues a presence event
// for this node's subscribers of topic that asked for presence.
func (s *Server) DeliverSignal(topic string, payload []byte) {
	sh := s.hub.shard(topic)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	for sub := range sh.topics[topic] {
		if !sub.presence {
			continue
		}
		if sub.holding.Load() && sub.holdPresence(payload) {
			continue
		}
		sub.sess.send(payload)
	}
}

// watch counts a local presence subscription of topic (delta +1 or -1).
func (s *Server) watch(topic string, delta int) {
	s.pres.mu.Lock()
	defer s.pres.mu.Unlock()
	if s.pres.watched[topic] += delta; s.pres.watched[topic] <= 0 {
		delete(s.pres.watched, topic)
	}
}

func (sess *session) handleTrack(req *protocol.Request) {
	s := sess.srv
	if err := protocol.ValidatePresence(req.Topic); err != nil {
		sess.replyError(req.Ref, protocol.CodeBadRequest, err.Error())
		return
	}
	switch {
	case s.cfg.Presence == nil:
		sess.replyError(req.Ref, protocol.CodeUnavailable, errNoPresence)
		return
	case sess.subs[req.Topic] == nil:
		sess.replyError(req.Ref, protocol.CodeBadRequest, "track needs a subscription to "+req.Topic+": subscribe first")
		return
	}
	state := bytes.TrimSpace(req.State)
	switch {
	case len(state) > s.cfg.MaxPresenceState:
		sess.replyError(req.Ref, protocol.CodeTooLarge, fmt.Sprintf("presence state of %d bytes; at most %d (UPDRAFT_PRESENCE_MAX_STATE)", len(state), s.cfg.MaxPresenceState))
		return
	case len(state) > 0 && state[0] != '{':
		sess.replyError(req.Ref, protocol.CodeBadRequest, "presence state must be a JSON object")
		return
	}
	t := sess.tracked[req.Topic]
	if t == nil {
		t = &tracked{
			member:  presence.Member{Key: sess.key, Conn: sess.id, Joined: time.Now().UnixMilli()},
			limiter: newRateLimiter(s.cfg.PresenceRate),
		}
	}
	if !t.limiter.allow(time.Now()) {
		sess.replyError(req.Ref, protocol.CodeRateLimited, fmt.Sprintf("presence updates on %s are limited to %g per second (UPDRAFT_PRESENCE_RATE)", req.Topic, s.cfg.PresenceRate))
		return
	}
	m := t.member
	m.Key, m.State = sess.key, bytes.Clone(state)
	ctx, cancel := context.WithTimeout(sess.ctx, brokerTimeout)
	joined, err := s.cfg.Presence.Track(ctx, req.Topic, m, s.cfg.NodeID, s.presenceTiming().TTL)
	cancel()
	if err != nil {
		sess.presenceError(req.Ref, "track", err)
		return
	}
	t.member = m
	sess.tracked[req.Topic] = t
	s.pres.mu.Lock()
	s.pres.local[presence.Entry{Topic: req.Topic, Conn: sess.id}] = m
	s.pres.mu.Unlock()
	event := protocol.PresenceUpdate
	if joined {
		event = protocol.PresenceJoin
	}
	s.signalPresence(req.Topic, event, m)
	sess.replyOK(req.Ref, struct{}{})
}

func (sess *session) handleUntrack(req *protocol.Request) {
	if sess.srv.cfg.Presence == nil {
		sess.replyError(req.Ref, protocol.CodeUnavailable, errNoPresence)
		return
	}
	if err := sess.untrack(req.Topic); err != nil {
		sess.presenceError(req.Ref, "untrack", err)
		return
	}
	sess.replyOK(req.Ref, struct{}{})
}

// untrack ends the session's membership on topic, if any, and signals the
// leave. The local record goes even when the store cannot be reached: the
// member then expires and is swept, with its leave.
func (sess *session) untrack(topic string) error {
	if _, ok := sess.tracked[topic]; !ok {
		return nil
	}
	s := sess.srv
	delete(sess.tracked, topic)
	s.pres.mu.Lock()
	delete(s.pres.local, presence.Entry{Topic: topic, Conn: sess.id})
	s.pres.mu.Unlock()
	// The session may be over: its context is no use here.
	ctx, cancel := context.WithTimeout(context.Background(), brokerTimeout)
	m, ok, err := s.cfg.Presence.Untrack(ctx, topic, sess.id)
	cancel()
	if err != nil {
		return err
	}
	if ok {
		s.signalPresence(topic, protocol.PresenceLeave, m)
	}
	return nil
}

func (sess *session) handleMembers(req *protocol.Request) {
	s := sess.srv
	if err := protocol.ValidatePresence(req.Topic); err != nil {
		sess.replyError(req.Ref, protocol.CodeBadRequest, err.Error())
		return
	}
	switch {
	case s.cfg.Presence == nil:
		sess.replyError(req.Ref, protocol.CodeUnavailable, errNoPresence)
		return
	case !protocol.MatchAny(sess.claims.Subscribe, req.Topic):
		sess.replyError(req.Ref, protocol.CodeForbidden, "not allowed to see who is on "+req.Topic)
		return
	}
	ctx, cancel := context.WithTimeout(sess.ctx, brokerTimeout)
	ms, err := s.cfg.Presence.Members(ctx, req.Topic)
	cancel()
	if err != nil {
		sess.presenceError(req.Ref, "members", err)
		return
	}
	sess.replyOK(req.Ref, protocol.MembersResult{Members: membersOf(ms)})
}

// presenceError answers a request whose presence store call failed (see
// storeError).
func (sess *session) presenceError(ref, op string, err error) {
	e := storeError(sess.logger(), op, presenceStore, err)
	sess.replyError(ref, e.Code, e.Message)
}

// serveMembers answers GET /api/v1/presence?topic=T.
func (s *Server) serveMembers(w http.ResponseWriter, r *http.Request) {
	if !s.authorizeAPI(w, r) {
		return
	}
	topic := r.URL.Query().Get("topic")
	if err := protocol.ValidatePresence(topic); err != nil {
		apiErrorOf(invalid(err)).write(w)
		return
	}
	if s.cfg.Presence == nil {
		writeError(w, protocol.CodeUnavailable, errNoPresence)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), brokerTimeout)
	defer cancel()
	ms, err := s.cfg.Presence.Members(ctx, topic)
	if err != nil {
		apiErrorOf(storeError(s.log, "members", presenceStore, err, zap.String("topic", topic))).write(w)
		return
	}
	writeJSON(w, http.StatusOK, protocol.MembersResult{Members: membersOf(ms)})
}

// presenceLoop heartbeats this node's members and sweeps the topics it
// watches until ctx ends.
func (s *Server) presenceLoop(ctx context.Context) {
	if s.cfg.Presence == nil {
		return
	}
	tm := s.presenceTiming()
	beat := time.NewTicker(tm.Heartbeat)
	defer beat.Stop()
	sweep := time.NewTicker(tm.Sweep)
	defer sweep.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-beat.C:
			s.heartbeat(ctx)
		case now := <-sweep.C:
			s.sweep(ctx, now)
		}
	}
}

// heartbeat renews this node's members and tracks again those the store
// lost.
func (s *Server) heartbeat(ctx context.Context) {
	s.pres.mu.Lock()
	entries := make([]presence.Entry, 0, len(s.pres.local))
	for e := range s.pres.local {
		entries = append(entries, e)
	}
	s.pres.mu.Unlock()
	if len(entries) == 0 {
		return
	}
	tm := s.presenceTiming()
	hctx, cancel := context.WithTimeout(ctx, tm.Heartbeat)
	missing, err := s.cfg.Presence.Heartbeat(hctx, s.cfg.NodeID, entries, tm.TTL)
	cancel()
	if err != nil {
		s.log.Warn("presence heartbeat failed", zap.Int("members", len(entries)), zap.Error(err))
		return
	}
	for _, e := range missing {
		s.pres.mu.Lock()
		m, ok := s.pres.local[e]
		s.pres.mu.Unlock()
		if !ok {
			continue // untracked meanwhile
		}
		tctx, cancel := context.WithTimeout(ctx, brokerTimeout)
		joined, err := s.cfg.Presence.Track(tctx, e.Topic, m, s.cfg.NodeID, tm.TTL)
		cancel()
		if err != nil {
			s.log.Warn("presence: tracking a lost member again failed", zap.String("topic", e.Topic), zap.Error(err))
			continue
		}
		if joined {
			s.signalPresence(e.Topic, protocol.PresenceJoin, m)
		}
	}
	if len(missing) > 0 {
		s.log.Info("presence: tracked members again that the store had lost", zap.Int("members", len(missing)))
	}
}

// sweep removes the expired members of the watched topics and signals
// their leaves.
func (s *Server) sweep(ctx context.Context, now time.Time) {
	s.pres.mu.Lock()
	topics := make([]string, 0, len(s.pres.watched))
	for t := range s.pres.watched {
		topics = append(topics, t)
	}
	s.pres.mu.Unlock()
	for _, t := range topics {
		sctx, cancel := context.WithTimeout(ctx, brokerTimeout)
		gone, err := s.cfg.Presence.Sweep(sctx, t, now)
		cancel()
		if err != nil {
			s.log.Warn("presence sweep failed", zap.String("topic", t), zap.Error(err))
		}
		for _, m := range gone {
			s.signalPresence(t, protocol.PresenceLeave, m)
		}
	}
}
