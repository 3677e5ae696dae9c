// Delivery of a Redis node's subscribed topics: the receive loop that reads
// the pub/sub connection, per-topic delivery order (redisSub's position
// tracking; the type is in redis.go), gap detection and filling from
// history, and the periodic check that catches up topics and resubscribes
// those whose subscription stopped delivering. The design is described on
// the Redis type.

package broker

import (
	"context"
	"errors"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/updraft/updraft/internal/backoff"
)

// Backoff of the receive loop (internal/backoff, full jitter) while the
// pub/sub connection cannot be re-established, or Redis refuses it.
const (
	minReceiveBackoff = 10 * time.Millisecond
	maxReceiveBackoff = time.Second
)

// fillTimeout bounds one read of a gap fill or of a periodic check. A fill
// found on the receive loop stalls it for at most this long; when it fails
// the topic is left to the periodic check.
const fillTimeout = 2 * time.Second

// checkBatch is the number of topics whose positions one pipelined round
// trip of the periodic check reads.
const checkBatch = 1000

// receive is the receive loop: it reads the pub/sub connection until
// Close, delivering messages and releasing confirmations.
func (r *Redis) receive() {
	defer close(r.loopDone)
	ctx := context.Background() // no deadline: the read waits for traffic; Close unblocks it
	// lost grows while reads fail in a row, and refusing while error
	// replies come in a row (a refusal is also what a reconnect to a Redis
	// that rejects the password reads, attempt after attempt); the first
	// refusal after a good read does not wait.
	policy := backoff.Policy{Min: minReceiveBackoff, Max: maxReceiveBackoff}
	lost, refusing := backoff.Backoff{Policy: policy}, backoff.Backoff{Policy: policy}
	refusedLast := false // an error reply came since the last good read
	for {
		msg, err := r.ps.Receive(ctx)
		var refused redis.Error
		if errors.As(err, &refused) && !r.closed.Load() {
			// An error reply: the connection is fine (go-redis keeps it).
			r.lastRefusal.Store(&err)
			r.refusals.Add(1)
			r.metrics.error()
			if !refusedLast {
				r.log.Warn("redis refused a pub/sub command", zap.Error(err))
				refusedLast = true
				continue
			}
			d := refusing.Next()
			r.log.Debug("redis refused a pub/sub command again", zap.Error(err), zap.Duration("backoff", d))
			if !backoff.Sleep(r.done, d) {
				return
			}
			continue
		}
		if err != nil {
			if r.closed.Load() {
				return
			}
			r.dropBarriers()
			r.metrics.error()
			d := lost.Next()
			if lost.Attempts() == 1 {
				r.log.Warn("redis pub/sub connection lost; reconnecting", zap.Error(err))
			} else {
				r.log.Debug("redis pub/sub reconnect failed", zap.Error(err), zap.Duration("backoff", d))
			}
			if !backoff.Sleep(r.done, d) {
				return
			}
			continue
		}
		refusedLast = false
		refusing.Reset()
		if lost.Attempts() > 0 {
			// A read after an error: the connection was re-established and
			// every channel resubscribed, and what was published meanwhile
			// is lost. Fill every topic now rather than at the next checks.
			lost.Reset()
			r.log.Info("redis pub/sub connection restored; channels resubscribed")
			select {
			case r.recheck <- struct{}{}:
			default: // a check is already due
			}
		}
		switch m := msg.(type) {
		case *redis.Message:
			r.deliver(m)
		case *redis.Pong:
			r.releaseBarrier(m.Payload)
		case *redis.Subscription:
			// Confirmations are proved by the PING barrier instead: these
			// cannot be told apart from resubscriptions on reconnect.
		}
	}
}

// deliver decodes a message of a subscribed topic and hands it to the
// Handler, after the messages missing before it. Messages of topics not
// (or no longer) subscribed are dropped.
func (r *Redis) deliver(m *redis.Message) {
	topic, ok := topicOf(m.Channel)
	if !ok {
		return
	}
	r.subsMu.RLock()
	s := r.subs[topic]
	r.subsMu.RUnlock()
	if s == nil || !s.active.Load() {
		return
	}
	if sig, ok := strings.CutPrefix(m.Payload, signalPrefix); ok {
		r.onSignal(topic, []byte(sig))
		return
	}
	pos, pub, err := decodePayload(m.Payload)
	if err != nil {
		r.log.Warn("dropping an undecodable redis message", zap.String("channel", m.Channel), zap.Error(err))
		r.metrics.error()
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.active.Load() {
		r.advance(s, Message{Topic: topic, Position: pos, Publication: pub})
	}
}

// advance delivers msg, a live message of s's topic, unless it was
// delivered already, after filling the gap before it from history. s.mu
// must be held.
func (r *Redis) advance(s *redisSub, msg Message) {
	switch {
	case !s.based:
		s.based = true
		s.moveTo(msg.Epoch)
	case s.fillFailed:
		return // the checker fills the topic from history, msg included
	case msg.Epoch == s.epoch:
		if msg.Seq <= s.last {
			return // delivered already, from history
		}
		if msg.Seq > s.last+1 && !r.fill(s, msg.Topic, msg.Epoch, s.last+1, msg.Seq-1) {
			s.fillFailed = true
			return
		}
	case msg.Epoch == s.retired:
		return // a late message of the epoch delivery moved away from
	case msg.Seq > 1:
		// A new epoch: its seqs below msg are in its history. The old
		// epoch's missing messages, if any, went with the old history.
		if !r.fill(s, msg.Topic, msg.Epoch, 1, msg.Seq-1) {
			s.fillFailed = true
			return
		}
	default:
		s.moveTo(msg.Epoch)
	}
	s.last = msg.Seq
	r.handler(msg)
}

// moveTo makes epoch the topic's delivery epoch, before its first seq.
// s.mu must be held.
func (s *redisSub) moveTo(epoch string) {
	if epoch != s.epoch {
		s.retired, s.epoch, s.last = s.epoch, epoch, 0
	}
}

// behind reports whether pos, a position of the topic read from Redis, has
// messages the node has not delivered. s.mu must be held.
func (s *redisSub) behind(pos Position) bool {
	if pos.Epoch == "" || pos.Seq == 0 || pos.Epoch == s.retired {
		return false // no epoch, or an observation older than what was delivered
	}
	return pos.Epoch != s.epoch || pos.Seq > s.last
}

// fill delivers the messages from..to of topic's epoch that history still
// holds, in seq order, skipping those delivered already, and leaves s at
// (epoch, to): the missing messages history no longer holds are reported
// as unfillable. It reads at most Retention.Size entries in one round
// trip, the newest of the range, since history retains no more. It returns
// false, having changed nothing, when history could not be read. s.mu must
// be held.
func (r *Redis) fill(s *redisSub, topic, epoch string, from, to uint64) bool {
	lo := from
	if size := uint64(r.retention.Size); to-from+1 > size {
		lo = to - size + 1
	}
	ctx, cancel := context.WithTimeout(r.ctx, fillTimeout)
	defer cancel()
	var meta *redis.SliceCmd
	var entries *redis.XMessageSliceCmd
	_, err := r.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		meta = p.HMGet(ctx, metaKey(topic), "epoch", "seq")
		entries = p.XRangeN(ctx, historyKey(topic), strconv.FormatUint(lo, 10), strconv.FormatUint(to, 10), int64(to-lo+1))
		return nil
	})
	if err != nil {
		if !r.closed.Load() {
			r.report("redis history read to fill a gap", topic, err)
		}
		return false
	}
	s.moveTo(epoch)
	var msgs []Message
	if latest, err := parseMeta(meta.Val()); err != nil {
		r.report("redis meta read to fill a gap", topic, err)
	} else if latest.Epoch == epoch { // else the epoch's history is gone
		msgs = make([]Message, 0, len(entries.Val()))
		for _, x := range entries.Val() {
			m, err := historyMessage(topic, epoch, x)
			if err != nil {
				r.report("dropping an undecodable redis history entry", topic, err)
				continue
			}
			if m.Seq > s.last && m.Seq <= to {
				msgs = append(msgs, m)
			}
		}
	}
	// Reported before delivery: whoever sees the messages sees the counts.
	if lost := int(min(to-from+1, uint64(math.MaxInt))) - len(msgs); lost > 0 {
		r.log.Warn("messages lost by redis pub/sub are no longer in history",
			zap.String("topic", topic), zap.String("epoch", epoch),
			zap.Uint64("from", from), zap.Uint64("to", to), zap.Int("lost", lost))
		r.metrics.gapUnfillable(lost)
		r.onGapUnfillable(topic, lost)
	}
	if len(msgs) > 0 {
		r.log.Debug("filling a gap in redis delivery from history",
			zap.String("topic", topic), zap.String("epoch", epoch), zap.Int("messages", len(msgs)))
		r.metrics.gapFilled(len(msgs))
		r.onGapFilled(topic, len(msgs))
	}
	for _, m := range msgs {
		s.last = m.Seq
		r.handler(m)
	}
	s.last = to
	return true
}

// checker runs the periodic check until Close, and an urgent one when the
// receive loop asks for it; an urgent check that could not read Redis is
// repeated at the next tick.
func (r *Redis) checker() {
	defer close(r.checkDone)
	tick := time.NewTicker(r.checkInterval)
	defer tick.Stop()
	urgent := false
	for {
		select {
		case <-r.done:
			return
		case <-tick.C:
		case <-r.recheck:
			urgent = true
		}
		if r.check(urgent) {
			urgent = false
		}
	}
}

// checkedTopic is a subscribed topic as the checker sees it.
type checkedTopic struct {
	name string
	sub  *redisSub
}

// check reads the latest position of every subscribed topic, a batch of
// topics per round trip, and fills the topics behind: at once when urgent,
// otherwise those found behind by the previous check as well. It reports
// false when Redis could not be read.
func (r *Redis) check(urgent bool) bool {
	r.subsMu.RLock()
	topics := make([]checkedTopic, 0, len(r.subs))
	for name, s := range r.subs {
		if s.active.Load() {
			topics = append(topics, checkedTopic{name, s})
		}
	}
	r.subsMu.RUnlock()
	for batch := range slices.Chunk(topics, checkBatch) {
		if r.closed.Load() {
			return true
		}
		ctx, cancel := context.WithTimeout(r.ctx, fillTimeout)
		cmds := make([]*redis.SliceCmd, len(batch))
		_, err := r.client.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, t := range batch {
				cmds[i] = p.HMGet(ctx, metaKey(t.name), "epoch", "seq")
			}
			return nil
		})
		cancel()
		var rerr redis.Error
		if err != nil && !errors.As(err, &rerr) { // else some command failed, not the connection
			if !r.closed.Load() {
				r.log.Debug("redis position check failed", zap.Error(err))
				r.metrics.error()
			}
			return false
		}
		for i, t := range batch {
			vals, err := cmds[i].Result()
			var latest Position
			if err == nil {
				latest, err = parseMeta(vals)
			}
			if err != nil {
				r.report("redis position check", t.name, err)
				continue
			}
			if r.catchUp(t, latest, urgent) {
				r.resubscribe(t)
			}
		}
	}
	return true
}

// catchUp fills t up to latest, read by a check, if it is behind and the
// fill is due. It reports whether the fill was confirmed by two checks: the
// subscription itself may be lost.
func (r *Redis) catchUp(t checkedTopic, latest Position, urgent bool) (confirmed bool) {
	s := t.sub
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.active.Load() || !s.based {
		return false
	}
	if !s.behind(latest) {
		s.pending = Position{}
		return false
	}
	confirmed = s.behind(s.pending) // behind since the previous check
	if !urgent && !s.fillFailed && !confirmed {
		s.pending = latest // maybe in flight: look again next time
		return false
	}
	from := uint64(1)
	if latest.Epoch == s.epoch {
		from = s.last + 1
	}
	if !r.fill(s, t.name, latest.Epoch, from, latest.Seq) {
		s.pending = latest // fill at the next check
		return false
	}
	s.pending, s.fillFailed = Position{}, false
	return confirmed && !urgent
}

// resubscribe sends SUBSCRIBE for t again, in case Redis dropped the
// subscription while the connection lived: Redis ignores a SUBSCRIBE of a
// subscribed channel. It gives way to a Subscribe or Unsubscribe of the
// topic in progress, which decides the subscription.
func (r *Redis) resubscribe(t checkedTopic) {
	select {
	case t.sub.lock <- struct{}{}:
	default:
		return
	}
	defer func() { <-t.sub.lock }()
	if t.sub.count == 0 {
		return
	}
	r.log.Info("redis subscription stopped delivering; filled from history and subscribed again", zap.String("topic", t.name))
	// Without a deadline, like Subscribe: go-redis drops a connection
	// whose write was cancelled. WriteTimeout bounds it.
	if err := r.ps.Subscribe(context.WithoutCancel(r.ctx), channelName(t.name)); err != nil && !r.closed.Load() {
		r.report("redis resubscribe", t.name, err)
	}
}
