package gateway

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/updraft/updraft/broker"
	"github.com/updraft/updraft/internal/strhash"
	"github.com/updraft/updraft/protocol"
)

const hubShards = 64

// hub maps topics to this node's local subscriptions. It is sharded by
// topic hash so that subscribe churn on one topic does not stall fan-out on
// others.
type hub struct {
	shards [hubShards]hubShard
}

type hubShard struct {
	mu     sync.RWMutex
	topics map[string]map[*subscription]struct{} // guarded by mu
}

// subscription is one session's subscription to one topic.
//
// A new subscription starts out holding: Deliver parks the topic's live
// messages in held instead of queueing them, while the session reads what
// the client must get first (its position, recovered history). release
// then sends the held messages past that point and switches to live
// delivery, so the client sees no gap and no duplicate.
type subscription struct {
	// The fields Deliver reads for every message come first, to share a
	// cache line.
	sess    *session
	holding atomic.Bool // set until release; read lock-free by Deliver
	// filter decides which of the topic's messages this subscription gets
	// (table topics only): the token's forced filters ANDed with the
	// client's own. Set before the subscription joins the hub, never
	// changed: subscribing again makes a new subscription.
	filter protocol.Filter
	// floor is the last position sent by release: a live message at or
	// below it in its epoch already reached the client from history (the
	// broker's stream can lag behind a history read). Written once before
	// holding is cleared, read only after.
	floor broker.Position

	topic    string
	presence bool // the subscriber asked for presence events
	mu       sync.Mutex
	held     []heldMessage // guarded by mu; live messages parked while holding
}

type heldMessage struct {
	epoch    string
	seq      uint64
	frame    []byte
	presence bool // a presence event: no position, always sent on release
}

// hold parks a live message while the subscription is being set up. It
// reports false when the subscription went live meanwhile, and the caller
// sends the message itself. Too many parked messages close the session as
// a slow consumer.
func (sub *subscription) hold(m *broker.Message, frame []byte) bool {
	sub.mu.Lock()
	defer sub.mu.Unlock()
	if !sub.holding.Load() {
		return false
	}
	if len(sub.held) >= sub.sess.srv.cfg.SendQueue {
		sub.sess.slowConsumer()
		return true
	}
	sub.held = append(sub.held, heldMessage{epoch: m.Epoch, seq: m.Seq, frame: frame})
	return true
}

// holdPresence parks a presence event while the subscription is being set
// up, so that it follows the subscribe reply (whose member list it may
// change). It reports false when the subscription went live meanwhile.
func (sub *subscription) holdPresence(frame []byte) bool {
	sub.mu.Lock()
	defer sub.mu.Unlock()
	if !sub.holding.Load() {
		return false
	}
	if len(sub.held) >= sub.sess.srv.cfg.SendQueue {
		sub.sess.slowConsumer()
		return true
	}
	sub.held = append(sub.held, heldMessage{frame: frame, presence: true})
	return true
}

// release sends the parked messages that come after pos (a later epoch, or
// a higher seq in pos's epoch) and makes the subscription live. Messages
// delivered meanwhile wait for it, so order is kept.
func (sub *subscription) release(pos broker.Position) {
	sub.mu.Lock()
	defer sub.mu.Unlock()
	for _, h := range sub.held {
		if h.presence {
			sub.sess.send(h.frame)
			continue
		}
		if h.epoch != pos.Epoch || h.seq > pos.Seq {
			sub.sess.send(h.frame)
			pos = broker.Position{Epoch: h.epoch, Seq: h.seq}
		}
	}
	sub.held = nil
	sub.floor = pos
	sub.holding.Store(false)
}

// sent reports whether a live message already reached the client during
// the subscription's catch-up.
func (sub *subscription) sent(m *broker.Message) bool {
	return m.Seq <= sub.floor.Seq && m.Epoch == sub.floor.Epoch
}

func newHub() *hub {
	h := &hub{}
	for i := range h.shards {
		h.shards[i].topics = make(map[string]map[*subscription]struct{})
	}
	return h
}

// shard picks a topic's shard by its FNV-1a hash (allocation-free).
func (h *hub) shard(topic string) *hubShard {
	return &h.shards[strhash.FNV32a(topic)%hubShards]
}

func (h *hub) add(sub *subscription) {
	sh := h.shard(sub.topic)
	sh.mu.Lock()
	set := sh.topics[sub.topic]
	if set == nil {
		set = make(map[*subscription]struct{})
		sh.topics[sub.topic] = set
	}
	set[sub] = struct{}{}
	sh.mu.Unlock()
}

func (h *hub) remove(sub *subscription) {
	sh := h.shard(sub.topic)
	sh.mu.Lock()
	if set := sh.topics[sub.topic]; set != nil {
		delete(set, sub)
		if len(set) == 0 {
			delete(sh.topics, sub.topic)
		}
	}
	sh.mu.Unlock()
}

// Deliver fans a message out to this node's subscribers of its topic. It is
// the broker's Handler: it encodes the event once and queues the same bytes
// for every subscriber without blocking; a subscriber whose queue is full
// is closed as a slow consumer. A filtered subscriber gets the message as
// its view of the table shows it (see viewOf): as it is, as an INSERT or a
// DELETE when the row moves in or out of its filter, or not at all. The
// entering and leaving variants are encoded at most once each, when a
// subscriber needs them, and the rows are decoded at most once, when a
// subscriber has a filter.
func (s *Server) Deliver(m broker.Message) {
	sh := s.hub.shard(m.Topic)
	sh.mu.RLock()
	set := sh.topics[m.Topic]
	if len(set) == 0 {
		sh.mu.RUnlock()
		return
	}
	rows := rowsOf(&m)
	var frames viewFrames
	full := frames.frame(viewAsIs, &m)
	n := 0
	for sub := range set {
		frame := full
		if !sub.filter.IsZero() {
			v := rows.viewOf(sub.filter)
			if v == viewNone {
				continue
			}
			frame = frames.frame(v, &m)
		}
		if sub.holding.Load() && sub.hold(&m, frame) || sub.sent(&m) {
			continue
		}
		if sub.sess.send(frame) {
			n++
		}
	}
	sh.mu.RUnlock()
	s.metrics.messagesOut.Add(float64(n))
	if m.TS > 0 {
		s.metrics.fanout.Observe(float64(time.Now().UnixMilli()-m.TS) / 1e3)
	}
}

// eventOf is m as the wire event.
func eventOf(m *broker.Message) protocol.Event {
	return protocol.Event{
		Topic: m.Topic, Event: m.Event, Epoch: m.Epoch, Seq: m.Seq, TS: m.TS,
		From: m.From, Data: m.Data, Old: m.Old, Truncated: m.Truncated,
	}
}
