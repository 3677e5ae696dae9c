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

// requestHandlers is the gateway's half of the request table: one handler
// per type of protocol.RequestTypes, which DecodeRequest accepts
// (TestRequestHandlersCoverRequestTypes keeps the two equal).
var requestHandlers = map[string]func(*session, *protocol.Request){
	protocol.TypeConnect:     (*session).handleConnect,
	protocol.TypeRefresh:     (*session).handleRefresh,
	protocol.TypePing:        (*session).handlePing,
	protocol.TypeSubscribe:   (*session).handleSubscribe,
	protocol.TypeUnsubscribe: (*session).handleUnsubscribe,
	protocol.TypePublish:     (*session).handlePublish,
	protocol.TypeHistory:     (*session).handleHistory,
	protocol.TypeTrack:       (*session).handleTrack,
	protocol.TypeUntrack:     (*session).handleUntrack,
	protocol.TypeMembers:     (*session).handleMembers,
}

// handle answers one decoded request of a connected session (or a connect).
// A type that decoded but has no handler is a bug of ours, answered
// internal rather than left without a reply.
func (sess *session) handle(req *protocol.Request) {
	h := requestHandlers[req.Type]
	if h == nil {
		sess.logger().Error("request type without a handler", zap.String("type", req.Type))
		sess.replyError(req.Ref, protocol.CodeInternal, "no handler for "+req.Type)
		return
	}
	h(sess, req)
}

func (sess *session) handlePing(req *protocol.Request) { sess.replyOK(req.Ref, nil) }

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

// maxRewind caps rewind. Config.MaxRecovery caps the messages since may
// replay (a persistent topic's history can be far longer than anyone
// should replay).
const maxRewind = 100000

// Recovered and rewound history is read and sent a page at a time, each
// page sent before the next is read, so that a catch-up holds one page
// however long the gap: at most recoveryPage messages, and about
// recoveryPageBytes (the page size follows the size of the messages of
// the page before; the first assumes messages of MaxMessage bytes).
const (
	recoveryPage      = 1000
	recoveryPageBytes = 4 << 20
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
	if err := sess.replay(&cu, filter); err != nil {
		switch {
		case errors.Is(err, errQueueClosed):
		case errors.Is(err, errReplayBroken):
			// The reply promised every message: the client must come
			// back with since rather than miss some.
			sess.logger().Warn("replay cut short", zap.String("topic", topic), zap.Error(err))
			sess.slowConsumer()
		default:
			sess.slowConsumer()
		}
		return
	}
	sub.release(cu.from)
}

// catchUp is a new subscription's way to live delivery: the topic's
// position, and for since or rewind the history to replay first, read a
// page at a time (see recoveryPage).
type catchUp struct {
	topic     string
	latest    broker.Position  // the topic's position when read
	recovered bool             // for the reply
	page      []broker.Message // read, not yet sent; ascending
	// from is the last position read: live delivery continues after it,
	// and the next page starts after it.
	from broker.Position
	// contiguous: the next page must start right after from (a gap is
	// lost history). Rewind's first read may start above its window, as
	// history retains less than asked.
	contiguous bool
	window     int // seqs the next page spans
}

// more reports whether pages remain to be read after page.
func (cu *catchUp) more() bool {
	return cu.recovered && cu.from.Seq < cu.latest.Seq
}

// query is the read of the window after cu.from, bounded above by the
// latest position (what comes later is held live).
func (cu *catchUp) query() broker.HistoryQuery {
	hi := min(cu.from.Seq+uint64(cu.window), cu.latest.Seq)
	return broker.HistoryQuery{After: cu.from.Seq, Before: hi + 1, Limit: cu.window}
}

// took records page as read: from moves to its end (or, for an empty
// page, past the window it covered), and the next window is sized after
// its messages.
func (cu *catchUp) took(page []broker.Message) {
	cu.page = page
	if len(page) == 0 {
		cu.from.Seq = min(cu.from.Seq+uint64(cu.window), cu.latest.Seq)
		return
	}
	cu.from = page[len(page)-1].Position
	cu.window = pageWindow(page, recoveryPageBytes, recoveryPage)
}

// catchUp reads the topic's position and, for since or rewind, the first
// page of history to deliver. since recovers only within the topic's
// current epoch, when the gap is at most Config.MaxRecovery messages, and
// only when history still holds every message after since.Seq; otherwise
// nothing is replayed and recovered is false. since {"", 0} means from the
// start of the retained history.
func (s *Server) catchUp(ctx context.Context, topic string, since *protocol.Position, rewind int) (catchUp, error) {
	cu := catchUp{topic: topic, window: max(1, min(recoveryPage, recoveryPageBytes/s.cfg.MaxMessage))}
	switch {
	case rewind > 0:
		latest, err := s.cfg.Broker.Latest(ctx, topic)
		if err != nil {
			return cu, err
		}
		cu.latest, cu.recovered = latest, true
		cu.from = broker.Position{Epoch: latest.Epoch, Seq: latest.Seq - min(latest.Seq, uint64(rewind))}
		if !cu.more() {
			return cu, nil
		}
		page, err := s.cfg.Broker.History(ctx, topic, cu.query())
		if err != nil {
			return cu, err
		}
		cu.took(page.Messages)
		cu.contiguous = len(page.Messages) > 0
	case since != nil:
		// The first page comes with the position it is read against;
		// it is not bounded above yet.
		cu.from = broker.Position{Seq: since.Seq}
		q := broker.HistoryQuery{After: since.Seq, Limit: cu.window}
		if since.Seq == 0 {
			q = broker.HistoryQuery{Before: uint64(cu.window) + 1, Limit: cu.window}
		}
		page, err := s.cfg.Broker.History(ctx, topic, q)
		if err != nil {
			return cu, err
		}
		cu.latest = page.Latest
		sameEpoch := since.Epoch == page.Latest.Epoch || since.Epoch == "" && since.Seq == 0
		inReach := since.Seq <= page.Latest.Seq && page.Latest.Seq-since.Seq <= uint64(s.cfg.MaxRecovery)
		complete := since.Seq == page.Latest.Seq || len(page.Messages) > 0 && follows(page.Messages, since.Seq)
		if !sameEpoch || !inReach || !complete {
			cu.from = page.Latest
			return cu, nil
		}
		cu.recovered, cu.contiguous = true, true
		cu.from.Epoch = page.Latest.Epoch
		cu.took(page.Messages)
	default:
		latest, err := s.cfg.Broker.Latest(ctx, topic)
		if err != nil {
			return cu, err
		}
		cu.latest, cu.from = latest, latest
	}
	return cu, nil
}

// follows reports whether msgs run from seq after+1 without a gap.
func follows(msgs []broker.Message, after uint64) bool {
	for i := range msgs {
		if msgs[i].Seq != after+uint64(i)+1 {
			return false
		}
	}
	return true
}

// errReplayBroken: a later page of a replay could not be read, or history
// no longer held it.
var errReplayBroken = errors.New("gateway: replay could not be completed")

// replay sends cu's page, then reads and sends the next ones until the
// position the reply announced, each page sent before the next is read.
// A page that does not follow the one before (history moved on, or a new
// epoch began) ends it with errReplayBroken.
func (sess *session) replay(cu *catchUp, filter protocol.Filter) error {
	for {
		// Filtering leaves cu.from where the read ended, whether or not its
		// last message passed the filter.
		if err := sess.sendHistory(filterMessages(cu.page, filter)); err != nil {
			return err
		}
		cu.page = nil
		if !cu.more() {
			return nil
		}
		ctx, cancel := context.WithTimeout(sess.ctx, brokerTimeout)
		page, err := sess.srv.cfg.Broker.History(ctx, cu.topic, cu.query())
		cancel()
		switch {
		case err != nil:
			return fmt.Errorf("%w: %w", errReplayBroken, err)
		case page.Latest.Epoch != cu.latest.Epoch:
			return fmt.Errorf("%w: %s began a new epoch", errReplayBroken, cu.topic)
		case cu.contiguous && (len(page.Messages) == 0 || !follows(page.Messages, cu.from.Seq)):
			return fmt.Errorf("%w: history of %s no longer holds seq %d", errReplayBroken, cu.topic, cu.from.Seq+1)
		}
		cu.took(page.Messages)
		cu.contiguous = cu.contiguous || len(page.Messages) > 0
	}
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
		e := invalid(err)
		sess.replyError(req.Ref, e.Code, e.Message)
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

// brokerError answers a request whose broker call failed (see
// storeError).
func (sess *session) brokerError(ref, op string, err error) {
	e := storeError(sess.logger(), op, messageStore, err)
	sess.replyError(ref, e.Code, e.Message)
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

// historyReplyBytes is what a history reply may carry: half a connection's
// outbox, so that a reply always fits one that is not already half full
// (and two unread ones close the connection as a slow consumer).
func (s *Server) historyReplyBytes() int { return s.cfg.SendQueueBytes / 2 }

// messageBytes is about what m takes encoded, in an event or a history
// reply.
func messageBytes(m *broker.Message) int {
	return len(m.Data) + len(m.Old) + len(m.Event) + len(m.From) + 128
}

// pageWindow sizes the next read of history after msgs so that it holds
// about budget bytes: at most limit messages and at least one.
func pageWindow(msgs []broker.Message, budget, limit int) int {
	if len(msgs) == 0 {
		return limit
	}
	size := 0
	for i := range msgs {
		size += messageBytes(&msgs[i])
	}
	return max(1, min(limit, budget/max(1, size/len(msgs))))
}

// history answers a history request: the limit newest messages below
// before that filter matches, as many of them as fit historyReplyBytes
// (the newest first; at least one). It reads page by page towards older
// messages, each page sized to hold about the reply's bytes (the first
// assumes messages of MaxMessage bytes), until it has limit matches or
// the reply is full, history ends, or maxHistoryScan messages were read.
func (s *Server) history(ctx context.Context, topic string, before uint64, limit int, filter protocol.Filter) (protocol.HistoryResult, error) {
	switch {
	case limit <= 0:
		limit = defaultHistoryLimit
	case limit > maxHistoryLimit:
		limit = maxHistoryLimit
	}
	budget := s.historyReplyBytes()
	window := max(1, min(maxHistoryLimit, budget/s.cfg.MaxMessage))
	var (
		epoch   string
		pages   [][]broker.Message // matching messages per page, newest page first
		found   int
		bytes   int
		scanned int
		full    bool
	)
	for {
		n := window
		if filter.IsZero() {
			n = min(n, limit-found)
		}
		page, err := s.cfg.Broker.History(ctx, topic, broker.HistoryQuery{Before: before, Limit: n})
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
		// Newest first: keep what fits the reply.
		k := len(kept)
		for k > 0 && found < limit {
			size := messageBytes(&kept[k-1])
			if bytes+size > budget && found > 0 {
				full = true
				break
			}
			bytes += size
			found++
			k--
		}
		pages = append(pages, kept[k:])
		if full || found >= limit || len(page.Messages) < n || scanned >= maxHistoryScan {
			break
		}
		before = page.Messages[0].Seq
		window = pageWindow(page.Messages, budget, maxHistoryLimit)
	}
	res := protocol.HistoryResult{Epoch: epoch, Messages: make([]protocol.HistoryMessage, 0, found)}
	for i := len(pages) - 1; i >= 0; i-- {
		for _, m := range pages[i] {
			res.Messages = append(res.Messages, protocol.HistoryMessage{Seq: m.Seq, Event: m.Event, TS: m.TS, From: m.From, Data: m.Data, Old: m.Old, Truncated: m.Truncated})
		}
	}
	return res, nil
}
