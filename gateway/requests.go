package gateway

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/updraft/updraft/broker"
	"github.com/updraft/updraft/protocol"
)

// brokerTimeout bounds one broker call made for a client request.
const brokerTimeout = 5 * time.Second

// handle answers one decoded request of a connected session (or a connect).
func (sess *session) handle(req *protocol.Request) {
	switch req.Type {
	case protocol.TypeConnect:
		sess.handleConnect(req)
	case protocol.TypeRefresh:
		sess.handleRefresh(req)
	case protocol.TypePing:
		sess.replyOK(req.Ref, nil)
	case protocol.TypeSubscribe:
		sess.handleSubscribe(req)
	case protocol.TypeUnsubscribe:
		sess.handleUnsubscribe(req)
	case protocol.TypePublish:
		sess.handlePublish(req)
	case protocol.TypeHistory:
		sess.handleHistory(req)
	case protocol.TypeTrack:
		sess.handleTrack(req)
	case protocol.TypeUntrack:
		sess.handleUntrack(req)
	case protocol.TypeMembers:
		sess.handleMembers(req)
	}
}

func (sess *session) handleConnect(req *protocol.Request) {
	if sess.connected.Load() {
		sess.replyError(req.Ref, protocol.CodeBadRequest, "already connected")
		return
	}
	claims, err := sess.srv.authenticate(req.Token)
	if err != nil {
		sess.replyError(req.Ref, protocol.CodeUnauthorized, err.Error())
		sess.close(protocol.CloseUnauthorized, "unauthorized")
		return
	}
	sess.claims = claims
	sess.key = claims.Subject
	if sess.key == "" {
		sess.key = sess.id
	}
	sess.armExpiry()
	sess.connected.Store(true)
	sess.replyOK(req.Ref, protocol.ConnectResult{
		Session:    sess.id,
		Node:       sess.srv.cfg.NodeID,
		Heartbeat:  int(sess.srv.cfg.Heartbeat / time.Second),
		MaxMessage: sess.srv.cfg.MaxMessage,
	})
}

func (sess *session) handleRefresh(req *protocol.Request) {
	if req.Token == "" {
		sess.replyError(req.Ref, protocol.CodeBadRequest, "refresh needs a token")
		return
	}
	claims, err := sess.srv.authenticate(req.Token)
	if err != nil {
		sess.replyError(req.Ref, protocol.CodeUnauthorized, err.Error())
		return
	}
	if claims.Subject != sess.claims.Subject && sess.claims.Subject != "" {
		sess.replyError(req.Ref, protocol.CodeForbidden, errSubChanged.Error())
		return
	}
	sess.claims = claims
	sess.key = claims.Subject
	sess.armExpiry()
	sess.replyOK(req.Ref, nil)
}

// armExpiry closes the session with 4001 when its token's exp passes.
func (sess *session) armExpiry() {
	if sess.expiry != nil {
		sess.expiry.Stop()
		sess.expiry = nil
	}
	exp := sess.claims.expiry()
	if exp.IsZero() {
		return
	}
	sess.expiry = time.AfterFunc(time.Until(exp), func() {
		sess.close(protocol.CloseUnauthorized, errTokenExpire.Error())
	})
}

// maxRewind caps rewind, and maxRecover the messages since may replay (a
// persistent topic's history can be far longer than anyone should replay).
const (
	maxRewind  = 100000
	maxRecover = 100000
)

const errNoDurable = "durable history is not configured on this server (UPDRAFT_DATABASE_URL)"

// recoveryTimeout bounds how long recovered history may wait for room in
// a client's outbox before the client counts as a slow consumer.
const recoveryTimeout = 30 * time.Second

func (sess *session) handleSubscribe(req *protocol.Request) {
	topic := req.Topic
	if err := protocol.ValidateTopic(topic); err != nil {
		sess.replyError(req.Ref, protocol.CodeBadRequest, err.Error())
		return
	}
	if !protocol.MatchAny(sess.claims.Subscribe, topic) {
		sess.replyError(req.Ref, protocol.CodeForbidden, "not allowed to subscribe to "+topic)
		return
	}
	// The effective filter: the token's forced filters, which the client
	// cannot lift, ANDed with the client's own.
	filter := sess.claims.forcedOn(topic)
	if req.Filter != "" {
		if !protocol.IsTable(topic) {
			sess.replyError(req.Ref, protocol.CodeBadRequest, "filters apply to table topics only; "+topic+" is an application topic")
			return
		}
		own, err := protocol.ParseFilter(req.Filter)
		if err != nil {
			sess.replyError(req.Ref, protocol.CodeBadRequest, err.Error())
			return
		}
		filter = filter.And(own)
	}
	if req.Presence {
		if err := protocol.ValidatePresence(topic); err != nil {
			sess.replyError(req.Ref, protocol.CodeBadRequest, err.Error())
			return
		}
	}
	switch {
	case req.Presence && sess.srv.cfg.Presence == nil:
		sess.replyError(req.Ref, protocol.CodeUnavailable, errNoPresence)
		return
	case req.Rewind < 0 || req.Rewind > maxRewind:
		sess.replyError(req.Ref, protocol.CodeBadRequest, fmt.Sprintf("rewind must be between 0 and %d", maxRewind))
		return
	case req.Rewind > 0 && req.Since != nil:
		sess.replyError(req.Ref, protocol.CodeBadRequest, "since and rewind cannot be combined")
		return
	}
	old, resubscribe := sess.subs[topic]
	if !resubscribe && len(sess.subs) >= sess.srv.cfg.MaxSubscriptions {
		sess.replyError(req.Ref, protocol.CodeTooLarge,
			fmt.Sprintf("subscription limit reached: at most %d per connection (UPDRAFT_MAX_SUBSCRIPTIONS)", sess.srv.cfg.MaxSubscriptions))
		return
	}

	// Go live first, holding live messages back, then read what the client
	// must get before them: no message can fall between the two.
	sub := &subscription{sess: sess, topic: topic, filter: filter, presence: req.Presence}
	sub.holding.Store(true)
	sess.srv.hub.add(sub)
	if sub.presence {
		sess.srv.watch(topic, +1)
	}
	if resubscribe {
		sess.srv.hub.remove(old) // the node keeps its one broker reference
		if old.presence {
			sess.srv.watch(topic, -1)
		}
	} else {
		ctx, cancel := context.WithTimeout(sess.ctx, brokerTimeout)
		err := sess.srv.cfg.Broker.Subscribe(ctx, topic)
		cancel()
		if err != nil {
			sess.srv.hub.remove(sub)
			if sub.presence {
				sess.srv.watch(topic, -1)
			}
			sess.brokerError(req.Ref, "subscribe", err)
			return
		}
		sess.srv.metrics.subscriptions.Inc()
	}
	sess.subs[topic] = sub

	ctx, cancel := context.WithTimeout(sess.ctx, brokerTimeout)
	cu, err := sess.srv.catchUp(ctx, topic, req.Since, req.Rewind)
	cancel()
	if err != nil {
		sess.unsubscribe(sub)
		sess.brokerError(req.Ref, "subscribe", err)
		return
	}
	res := protocol.SubscribeResult{Epoch: cu.latest.Epoch, Seq: cu.latest.Seq, Recovered: cu.recovered}
	if sub.presence {
		// Read after the subscription joined the hub: a change after the
		// read reaches it as an event, held until after this reply.
		ctx, cancel := context.WithTimeout(sess.ctx, brokerTimeout)
		ms, err := sess.srv.cfg.Presence.Members(ctx, topic)
		cancel()
		if err != nil {
			sess.unsubscribe(sub)
			sess.presenceError(req.Ref, "subscribe", err)
			return
		}
		res.Members = membersOf(ms)
	}
	sess.replyOK(req.Ref, res)
	// Filtering after catchUp leaves cu.from where the history read ended,
	// whether or not its last message passed the filter.
	if err := sess.sendHistory(filterMessages(cu.messages, filter)); err != nil {
		if !errors.Is(err, errQueueClosed) {
			sess.slowConsumer()
		}
		return
	}
	sub.release(cu.from)
}

// catchUpResult is what a new subscription gets before live messages.
type catchUpResult struct {
	latest    broker.Position  // the topic's position when read
	messages  []broker.Message // history to deliver first, ascending
	from      broker.Position  // live delivery continues after this
	recovered bool
}

// catchUp reads the topic's position and, for since or rewind, the history
// to deliver. since recovers only within the topic's current epoch, and
// only when history still holds every message after since.Seq; otherwise
// nothing is replayed and recovered is false. since {"", 0} means from
// the start of the retained history.
func (s *Server) catchUp(ctx context.Context, topic string, since *protocol.Position, rewind int) (catchUpResult, error) {
	var r catchUpResult
	switch {
	case rewind > 0:
		page, err := s.cfg.Broker.History(ctx, topic, broker.HistoryQuery{Limit: rewind})
		if err != nil {
			return r, err
		}
		r.latest, r.messages, r.recovered = page.Latest, page.Messages, true
	case since != nil:
		page, err := s.cfg.Broker.History(ctx, topic, broker.HistoryQuery{After: since.Seq, Limit: maxRecover + 1})
		if err != nil {
			return r, err
		}
		r.latest = page.Latest
		sameEpoch := since.Epoch == page.Latest.Epoch || since.Epoch == "" && since.Seq == 0
		complete := since.Seq >= page.Latest.Seq ||
			len(page.Messages) > 0 && len(page.Messages) <= maxRecover && page.Messages[0].Seq == since.Seq+1
		if sameEpoch && since.Seq <= page.Latest.Seq && complete {
			r.messages, r.recovered = page.Messages, true
			r.from = broker.Position{Epoch: page.Latest.Epoch, Seq: since.Seq}
		}
	default:
		latest, err := s.cfg.Broker.Latest(ctx, topic)
		if err != nil {
			return r, err
		}
		r.latest = latest
	}
	if n := len(r.messages); n > 0 {
		r.from = r.messages[n-1].Position
	} else if !r.recovered || rewind > 0 {
		r.from = r.latest
	}
	return r, nil
}

// filterMessages returns what a subscription filtered by f sees of msgs,
// in order (see viewOf). A zero f keeps them all. msgs is left as it is: a
// broker may share it.
func filterMessages(msgs []broker.Message, f protocol.Filter) []broker.Message {
	return viewMessages(msgs, f)
}

// sendHistory queues recovered messages, packed into frame-sized items,
// waiting for the writer when the outbox is full.
func (sess *session) sendHistory(msgs []broker.Message) error {
	if len(msgs) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(sess.ctx, recoveryTimeout)
	defer cancel()
	var chunk []byte
	for i := range msgs {
		m := &msgs[i]
		if len(chunk) > 0 {
			chunk = append(chunk, protocol.Separator)
		}
		ev := eventOf(m)
		chunk = protocol.AppendEvent(chunk, &ev)
		if len(chunk) >= maxFrameOut/2 || i == len(msgs)-1 {
			if err := sess.queue.pushWait(ctx, chunk, sess.startWriter); err != nil {
				return err
			}
			chunk = nil
		}
	}
	sess.srv.metrics.messagesOut.Add(float64(len(msgs)))
	return nil
}

func (sess *session) handleUnsubscribe(req *protocol.Request) {
	if err := protocol.ValidateTopic(req.Topic); err != nil {
		sess.replyError(req.Ref, protocol.CodeBadRequest, err.Error())
		return
	}
	if sub, ok := sess.subs[req.Topic]; ok {
		sess.unsubscribe(sub)
	}
	sess.replyOK(req.Ref, nil)
}

func (sess *session) unsubscribe(sub *subscription) {
	delete(sess.subs, sub.topic)
	sess.srv.hub.remove(sub)
	sess.srv.metrics.subscriptions.Dec()
	if sub.presence {
		sess.srv.watch(sub.topic, -1)
	}
	if err := sess.untrack(sub.topic); err != nil {
		sess.logger().Warn("presence untrack failed: the member will expire", zap.String("topic", sub.topic), zap.Error(err))
	}
	// The session may already be over: the broker reference must still go.
	ctx, cancel := context.WithTimeout(context.Background(), brokerTimeout)
	defer cancel()
	if err := sess.srv.cfg.Broker.Unsubscribe(ctx, sub.topic); err != nil {
		sess.logger().Warn("broker unsubscribe failed", zap.String("topic", sub.topic), zap.Error(err))
	}
}

func (sess *session) unsubscribeAll() {
	for _, sub := range sess.subs {
		sess.unsubscribe(sub)
	}
}

func (sess *session) handlePublish(req *protocol.Request) {
	if err := protocol.ValidatePublish(req.Topic, req.Event); err != nil {
		code := protocol.CodeBadRequest
		if errors.Is(err, protocol.ErrTableTopic) {
			code = protocol.CodeForbidden
		}
		sess.replyError(req.Ref, code, err.Error())
		return
	}
	if !protocol.MatchAny(sess.claims.Publish, req.Topic) {
		sess.replyError(req.Ref, protocol.CodeForbidden, "not allowed to publish to "+req.Topic)
		return
	}
	if req.Persist && !sess.srv.cfg.DurableHistory {
		sess.replyError(req.Ref, protocol.CodeUnavailable, errNoDurable)
		return
	}
	ctx, cancel := context.WithTimeout(sess.ctx, brokerTimeout)
	pos, err := sess.srv.cfg.Broker.Publish(ctx, req.Topic, broker.Publication{Event: req.Event, Data: req.Data, From: sess.key, Persist: req.Persist})
	cancel()
	if err != nil {
		sess.brokerError(req.Ref, "publish", err)
		return
	}
	sess.srv.metrics.messagesInClient.Inc()
	sess.replyOK(req.Ref, protocol.Position{Epoch: pos.Epoch, Seq: pos.Seq})
}

func (sess *session) handleHistory(req *protocol.Request) {
	if err := protocol.ValidateTopic(req.Topic); err != nil {
		sess.replyError(req.Ref, protocol.CodeBadRequest, err.Error())
		return
	}
	if req.Limit < 0 {
		sess.replyError(req.Ref, protocol.CodeBadRequest, "limit must not be negative")
		return
	}
	if !protocol.MatchAny(sess.claims.Subscribe, req.Topic) {
		sess.replyError(req.Ref, protocol.CodeForbidden, "not allowed to read the history of "+req.Topic)
		return
	}
	ctx, cancel := context.WithTimeout(sess.ctx, brokerTimeout)
	res, err := sess.srv.history(ctx, req.Topic, req.Before, req.Limit, sess.claims.forcedOn(req.Topic))
	cancel()
	if err != nil {
		sess.brokerError(req.Ref, "history", err)
		return
	}
	sess.replyOK(req.Ref, res)
}

// brokerError answers a request whose broker call failed.
func (sess *session) brokerError(ref, op string, err error) {
	if unavailable(err) {
		sess.replyError(ref, protocol.CodeUnavailable, op+" failed: the message store is unreachable, try again")
		return
	}
	sess.logger().Error(op+" failed", zap.Error(err))
	sess.replyError(ref, protocol.CodeInternal, op+" failed")
}

// unavailable reports whether a broker error means "try again later"
// rather than a bug.
func unavailable(err error) bool {
	return errors.Is(err, broker.ErrUnavailable) || errors.Is(err, broker.ErrClosed) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)
}

// rateLimitGrace is how long a connection may keep going over its rate
// limit before it is closed with 4029; a second without a refused request
// ends the streak.
const (
	rateLimitGrace = 10 * time.Second
	rateLimitCalm  = time.Second
)

// rateLimiter is a token bucket: rate tokens per second, burst of twice
// that. It is used by one goroutine only.
type rateLimiter struct {
	rate, burst, tokens float64
	last                time.Time
	overSince           time.Time // start of the current streak of refusals
	lastRefused         time.Time
}

func newRateLimiter(rate float64) rateLimiter {
	return rateLimiter{rate: rate, burst: 2 * rate, tokens: 2 * rate}
}

func (l *rateLimiter) allow(now time.Time) bool {
	if !l.last.IsZero() {
		l.tokens = min(l.burst, l.tokens+now.Sub(l.last).Seconds()*l.rate)
	}
	l.last = now
	if l.tokens >= 1 {
		l.tokens--
		return true
	}
	if l.lastRefused.IsZero() || now.Sub(l.lastRefused) > rateLimitCalm {
		l.overSince = now
	}
	l.lastRefused = now
	return false
}

// overFor is how long the connection has been refused requests without a
// calm second in between.
func (l *rateLimiter) overFor(now time.Time) time.Duration {
	if l.lastRefused.IsZero() || now.Sub(l.lastRefused) > rateLimitCalm {
		return 0
	}
	return now.Sub(l.overSince)
}

// History limits.
const (
	defaultHistoryLimit = 50
	maxHistoryLimit     = 1000
)

// maxHistoryScan bounds the messages a filtered history request reads
// while looking for limit matching ones.
const maxHistoryScan = 10 * maxHistoryLimit

// history answers a history request: the limit newest messages below
// before that filter matches. With a filter it reads on, page by page
// towards older messages, until it has limit matches, history ends, or
// maxHistoryScan messages were read.
func (s *Server) history(ctx context.Context, topic string, before uint64, limit int, filter protocol.Filter) (protocol.HistoryResult, error) {
	switch {
	case limit <= 0:
		limit = defaultHistoryLimit
	case limit > maxHistoryLimit:
		limit = maxHistoryLimit
	}
	pageSize := limit
	if !filter.IsZero() {
		pageSize = maxHistoryLimit
	}
	var (
		epoch   string
		pages   [][]broker.Message // matching messages per page, newest page first
		found   int
		scanned int
	)
	for {
		page, err := s.cfg.Broker.History(ctx, topic, broker.HistoryQuery{Before: before, Limit: pageSize})
		if err != nil {
			return protocol.HistoryResult{}, err
		}
		if len(pages) == 0 {
			epoch = page.Latest.Epoch
		} else if page.Latest.Epoch != epoch {
			break // a new epoch began meanwhile: older pages are gone
		}
		scanned += len(page.Messages)
		kept := filterMessages(page.Messages, filter)
		pages = append(pages, kept)
		found += len(kept)
		if filter.IsZero() || found >= limit || len(page.Messages) < pageSize || scanned >= maxHistoryScan {
			break
		}
		before = page.Messages[0].Seq
	}
	res := protocol.HistoryResult{Epoch: epoch, Messages: make([]protocol.HistoryMessage, 0, min(found, limit))}
	for i := len(pages) - 1; i >= 0; i-- {
		for _, m := range pages[i] {
			res.Messages = append(res.Messages, protocol.HistoryMessage{Seq: m.Seq, Event: m.Event, TS: m.TS, From: m.From, Data: m.Data, Old: m.Old, Truncated: m.Truncated})
		}
	}
	if extra := len(res.Messages) - limit; extra > 0 {
		res.Messages = res.Messages[extra:] // keep the newest
	}
	return res, nil
}
