package broker

import (
	"bytes"
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/updraft/updraft/internal/strhash"
)

// MemoryConfig configures NewMemory. The zero value is usable.
type MemoryConfig struct {
	// Retention bounds each topic's history; zero fields take their
	// defaults.
	Retention Retention
}

// memShards is the number of shards of the topic map: topics on different
// shards never contend for a lock.
const memShards = 64

// Memory is the in-process Broker of a single node: the embedded default
// when no Redis is configured.
//
// Guarantees beyond the Broker contract:
//   - Publish calls the Handler synchronously, on the publishing goroutine,
//     while holding the topic's lock; so a topic's messages reach the
//     Handler in seq order and Publish returns after delivery. The Handler
//     must therefore not call back into the Memory for the same topic.
//   - The Message handed to the Handler and those returned by History share
//     their Data and Old with the retained copy: keep them, never modify
//     them. Publish copies the publisher's slices, so the publisher may
//     reuse its buffers.
//   - A topic's history expires lazily: the first call that touches a topic
//     idle for longer than Retention.TTL drops its history; a background
//     sweep, stopped by Close, also forgets idle topics nobody subscribes to,
//     so abandoned topics do not hold memory.
type Memory struct {
	retention Retention
	handler   Handler       // set before the first Subscribe: see RegisterEventHandler
	onSignal  SignalHandler // likewise

	shards [memShards]memShard
	coord  memCoord // leases and cursors: see lease.go

	closed atomic.Bool
	stop   chan struct{} // closed by Close: stops the sweeper
	swept  chan struct{} // closed by the sweeper when it returns
}

var _ Broker = (*Memory)(nil)

type memShard struct {
	mu     sync.RWMutex
	topics map[string]*memTopic // guarded by mu
}

// memTopic is one topic's state. Lock order: memShard.mu, then memTopic.mu.
// A topic is removed from its shard only under the shard's write lock and
// its own lock, so a goroutine that locked a topic found in the map holds a
// live topic.
type memTopic struct {
	mu    sync.Mutex
	refs  int       // guarded by mu: Subscribe calls without Unsubscribe
	epoch string    // guarded by mu: "" until the epoch's first publish
	seq   uint64    // guarded by mu: seq of the newest message
	last  time.Time // guarded by mu: time of the last publish
	ring  []Message // guarded by mu: retained messages; once full, ring[head] is the oldest
	head  int       // guarded by mu
}

// NewMemory returns a Memory broker. Close it to stop its sweeper.
func NewMemory(cfg MemoryConfig) *Memory {
	m := &Memory{
		retention: cfg.Retention.withDefaults(),
		stop:      make(chan struct{}),
		swept:     make(chan struct{}),
	}
	m.RegisterEventHandler(nil, nil)
	for i := range m.shards {
		m.shards[i].topics = make(map[string]*memTopic)
	}
	go m.sweeper()
	return m
}

// RegisterEventHandler implements Broker.
func (m *Memory) RegisterEventHandler(h Handler, s SignalHandler) {
	if h == nil {
		h = func(Message) {}
	}
	if s == nil {
		s = func(string, []byte) {}
	}
	m.handler, m.onSignal = h, s
}

// Publish implements Broker.
func (m *Memory) Publish(ctx context.Context, topic string, pub Publication) (Position, error) {
	if err := m.check(ctx); err != nil {
		return Position{}, err
	}
	if pub.TS == 0 {
		pub.TS = nowMillis()
	}
	// Copy the payload outside the lock, in one allocation.
	if n := len(pub.Data) + len(pub.Old); n > 0 {
		buf := make([]byte, n)
		copy(buf, pub.Data)
		copy(buf[len(pub.Data):], pub.Old)
		data, old := buf[:len(pub.Data):len(pub.Data)], buf[len(pub.Data):]
		pub.Data, pub.Old = nil, nil
		if len(data) > 0 {
			pub.Data = data
		}
		if len(old) > 0 {
			pub.Old = old
		}
	}

	t := m.lockTopic(topic, true)
	defer t.mu.Unlock()
	if m.closed.Load() { // checked under the topic lock: see Close
		return Position{}, ErrClosed
	}
	now := time.Now()
	t.expire(now, m.retention.TTL)
	if t.epoch == "" {
		t.epoch = newEpoch()
	}
	t.seq++
	t.last = now
	msg := Message{Topic: topic, Position: Position{Epoch: t.epoch, Seq: t.seq}, Publication: pub}
	t.push(msg, m.retention.Size)
	if t.refs > 0 {
		m.handler(msg)
	}
	return msg.Position, nil
}

// PublishBatch implements Broker: each item is published in turn.
func (m *Memory) PublishBatch(ctx context.Context, items []Item) ([]Position, error) {
	if err := m.check(ctx); err != nil {
		return nil, err
	}
	pos := make([]Position, len(items))
	for i, it := range items {
		p, err := m.Publish(context.WithoutCancel(ctx), it.Topic, it.Publication)
		if err != nil {
			return pos[:i], err
		}
		pos[i] = p
	}
	return pos, nil
}

// Subscribe implements Broker. It never waits: the subscription is active
// as soon as the topic's reference count is raised.
func (m *Memory) Subscribe(ctx context.Context, topic string) error {
	if err := m.check(ctx); err != nil {
		return err
	}
	t := m.lockTopic(topic, true)
	defer t.mu.Unlock()
	if m.closed.Load() {
		return ErrClosed
	}
	t.refs++
	return nil
}

// Unsubscribe implements Broker. It drops the reference even when ctx is
// already done, so that callers can clean up with the context of a
// connection that just ended.
func (m *Memory) Unsubscribe(_ context.Context, topic string) error {
	if m.closed.Load() {
		return ErrClosed
	}
	t := m.lockTopic(topic, false)
	if t == nil {
		return ErrNotSubscribed
	}
	defer t.mu.Unlock()
	if t.refs == 0 {
		return ErrNotSubscribed
	}
	t.refs--
	return nil
}

// Latest implements Broker. A topic never published, or whose history
// expired, has no epoch yet: Latest returns the zero Position.
func (m *Memory) Latest(ctx context.Context, topic string) (Position, error) {
	if err := m.check(ctx); err != nil {
		return Position{}, err
	}
	t := m.lockTopic(topic, false)
	if t == nil {
		return Position{}, nil
	}
	defer t.mu.Unlock()
	t.expire(time.Now(), m.retention.TTL)
	return t.position(), nil
}

// History implements Broker.
func (m *Memory) History(ctx context.Context, topic string, q HistoryQuery) (HistoryPage, error) {
	if err := m.check(ctx); err != nil {
		return HistoryPage{}, err
	}
	t := m.lockTopic(topic, false)
	if t == nil {
		return HistoryPage{}, nil
	}
	defer t.mu.Unlock()
	t.expire(time.Now(), m.retention.TTL)
	page := HistoryPage{Latest: t.position()}
	n := uint64(len(t.ring))
	if n == 0 {
		return page, nil
	}
	lo, hi, ok := selectSeqs(t.seq-n+1, t.seq, q)
	if !ok {
		return page, nil
	}
	page.Messages = make([]Message, 0, hi-lo+1)
	first := t.seq - n + 1
	for s := lo; s <= hi; s++ {
		page.Messages = append(page.Messages, t.ring[(t.head+int(s-first))%len(t.ring)])
	}
	return page, nil
}

// selectSeqs narrows the retained seqs [first, last] to those q selects,
// applying Limit: with After the oldest are kept, otherwise the newest. ok
// is false when nothing is selected.
func selectSeqs(first, last uint64, q HistoryQuery) (lo, hi uint64, ok bool) {
	if first == 0 || first > last || q.After >= last || (q.Before != 0 && q.Before <= first) {
		return 0, 0, false
	}
	lo, hi = first, last
	if q.After >= lo {
		lo = q.After + 1
	}
	if q.Before != 0 && q.Before <= hi {
		hi = q.Before - 1
	}
	if lo > hi {
		return 0, 0, false
	}
	if q.Limit > 0 && hi-lo+1 > uint64(q.Limit) {
		if q.After != 0 {
			hi = lo + uint64(q.Limit) - 1
		} else {
			lo = hi - uint64(q.Limit) + 1
		}
	}
	return lo, hi, true
}

// Signal implements Broker: the SignalHandler is called synchronously,
// under the topic's lock, when the topic is subscribed.
func (m *Memory) Signal(ctx context.Context, topic string, payload []byte) error {
	if err := m.check(ctx); err != nil {
		return err
	}
	t := m.lockTopic(topic, false)
	if t == nil {
		return nil
	}
	defer t.mu.Unlock()
	if t.refs > 0 && !m.closed.Load() {
		m.onSignal(topic, bytes.Clone(payload))
	}
	return nil
}

// Ping implements Broker: a Memory is reachable until it is closed.
func (m *Memory) Ping(ctx context.Context) error {
	return m.check(ctx)
}

// Close implements Broker. It stops the sweeper and waits for any Handler
// call in progress: once Close returns, the Handler is not called again.
func (m *Memory) Close() error {
	if !m.closed.CompareAndSwap(false, true) {
		return ErrClosed
	}
	close(m.stop)
	<-m.swept
	// Publish checks closed under its topic's lock and delivers under it, so
	// taking every topic's lock once waits out the deliveries in progress;
	// later ones see closed.
	for i := range m.shards {
		s := &m.shards[i]
		s.mu.RLock()
		for _, t := range s.topics {
			t.mu.Lock()
			//lint:ignore SA2001 an empty critical section is the point: a barrier
			t.mu.Unlock()
		}
		s.mu.RUnlock()
	}
	return nil
}

func (m *Memory) check(ctx context.Context) error {
	if m.closed.Load() {
		return ErrClosed
	}
	return ctx.Err()
}

// shard picks a topic's shard by its FNV-1a hash (allocation-free).
func (m *Memory) shard(topic string) *memShard {
	return &m.shards[strhash.FNV32a(topic)%memShards]
}

// lockTopic returns topic's state with its lock held, creating it when
// create is set; without create it returns nil for an unknown topic. The
// topic is locked before the shard is released (see memTopic).
func (m *Memory) lockTopic(topic string, create bool) *memTopic {
	s := m.shard(topic)
	s.mu.RLock()
	if t := s.topics[topic]; t != nil {
		t.mu.Lock()
		s.mu.RUnlock()
		return t
	}
	s.mu.RUnlock()
	if !create {
		return nil
	}
	s.mu.Lock()
	t := s.topics[topic]
	if t == nil {
		t = &memTopic{}
		s.topics[topic] = t
	}
	t.mu.Lock()
	s.mu.Unlock()
	return t
}

// sweeper periodically drops expired histories and forgets topics that
// hold neither history nor subscribers, until Close.
func (m *Memory) sweeper() {
	defer close(m.swept)
	every := min(max(m.retention.TTL, 10*time.Millisecond), time.Minute)
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-m.stop:
			return
		case now := <-tick.C:
			m.sweep(now)
		}
	}
}

func (m *Memory) sweep(now time.Time) {
	for i := range m.shards {
		s := &m.shards[i]
		s.mu.Lock()
		for name, t := range s.topics {
			t.mu.Lock()
			t.expire(now, m.retention.TTL)
			if t.refs == 0 && t.epoch == "" {
				delete(s.topics, name)
			}
			t.mu.Unlock()
		}
		s.mu.Unlock()
	}
}

// expire drops the topic's history when it has been idle for longer than
// ttl; the next publish then starts a new epoch. t.mu must be held.
func (t *memTopic) expire(now time.Time, ttl time.Duration) {
	if t.epoch != "" && now.Sub(t.last) > ttl {
		t.epoch, t.seq, t.ring, t.head = "", 0, nil, 0
	}
}

// position returns the topic's latest position. t.mu must be held.
func (t *memTopic) position() Position {
	if t.epoch == "" {
		return Position{}
	}
	return Position{Epoch: t.epoch, Seq: t.seq}
}

// push appends msg to the ring, overwriting the oldest message once size
// messages are retained. The ring grows on demand, so a quiet topic costs
// little. t.mu must be held.
func (t *memTopic) push(msg Message, size int) {
	if len(t.ring) < size {
		t.ring = append(t.ring, msg)
		return
	}
	t.ring[t.head] = msg
	t.head = (t.head + 1) % len(t.ring)
}
