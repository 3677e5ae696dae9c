package presence

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/updraft/updraft/internal/strhash"
)

// MemoryConfig configures NewMemory. The zero value is usable.
type MemoryConfig struct {
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// memShards is the number of shards of the topic map: topics on different
// shards never contend for a lock.
const memShards = 64

// Memory is the in-process Store of a single node: the embedded default
// when no Redis is configured.
//
// Guarantees beyond the Store contract: every call on a topic runs under
// its shard's lock, so Sweep's exactly-once holds by mutual exclusion. A
// topic left without members is forgotten. Nothing expires in the
// background: expired members stay until swept, as with Redis (whose
// keys' safety-net TTL has no counterpart here: the process is the node).
// States are copied in and out, so callers may keep or reuse them.
type Memory struct {
	now    func() time.Time
	shards [memShards]memShard
	closed atomic.Bool
}

var _ Store = (*Memory)(nil)

type memShard struct {
	mu     sync.Mutex
	topics map[string]map[string]*memEntry // guarded by mu: topic → conn → membership
}

// memEntry is one membership.
type memEntry struct {
	m      Member
	node   string
	expiry int64 // Unix ms: live while now < expiry
}

// NewMemory returns a Memory store.
func NewMemory(cfg MemoryConfig) *Memory {
	m := &Memory{now: cfg.Now}
	if m.now == nil {
		m.now = time.Now
	}
	for i := range m.shards {
		m.shards[i].topics = make(map[string]map[string]*memEntry)
	}
	return m
}

// Track implements Store.
func (s *Memory) Track(ctx context.Context, topic string, m Member, node string, ttl time.Duration) (bool, error) {
	if err := s.check(ctx); err != nil {
		return false, err
	}
	state, err := checkTrack(topic, m, ttl)
	if err != nil {
		return false, err
	}
	now := s.now()
	sh := s.shard(topic)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	members := sh.topics[topic]
	if members == nil {
		members = make(map[string]*memEntry)
		sh.topics[topic] = members
	}
	if e := members[m.Conn]; e != nil {
		e.m.Key, e.m.State = m.Key, state
		e.node, e.expiry = node, expiryOf(now, ttl)
		return false, nil
	}
	m.State = state
	if m.Joined == 0 {
		m.Joined = now.UnixMilli()
	}
	members[m.Conn] = &memEntry{m: m, node: node, expiry: expiryOf(now, ttl)}
	return true, nil
}

// Untrack implements Store.
func (s *Memory) Untrack(ctx context.Context, topic, conn string) (Member, bool, error) {
	if err := s.check(ctx); err != nil {
		return Member{}, false, err
	}
	sh := s.shard(topic)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	members := sh.topics[topic]
	e := members[conn]
	if e == nil {
		return Member{}, false, nil
	}
	delete(members, conn)
	if len(members) == 0 {
		delete(sh.topics, topic)
	}
	return e.m, true, nil // e.m.State is no longer shared
}

// Members implements Store.
func (s *Memory) Members(ctx context.Context, topic string) ([]Member, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	now := s.now().UnixMilli()
	sh := s.shard(topic)
	sh.mu.Lock()
	var out []Member
	for _, e := range sh.topics[topic] {
		if now < e.expiry {
			m := e.m
			m.State = bytes.Clone(m.State)
			out = append(out, m)
		}
	}
	sh.mu.Unlock()
	sortMembers(out)
	return out, nil
}

// Heartbeat implements Store.
func (s *Memory) Heartbeat(ctx context.Context, node string, entries []Entry, ttl time.Duration) ([]Entry, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	if ttl <= 0 {
		return nil, fmt.Errorf("%w: ttl %v is not positive", ErrInvalid, ttl)
	}
	expiry := expiryOf(s.now(), ttl)
	var missing []Entry
	for _, en := range entries {
		sh := s.shard(en.Topic)
		sh.mu.Lock()
		if e := sh.topics[en.Topic][en.Conn]; e != nil {
			e.expiry = max(e.expiry, expiry)
		} else {
			missing = append(missing, en)
		}
		sh.mu.Unlock()
	}
	return missing, nil
}

// Sweep implements Store.
func (s *Memory) Sweep(ctx context.Context, topic string, now time.Time) ([]Member, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	ms := now.UnixMilli()
	sh := s.shard(topic)
	sh.mu.Lock()
	var out []Member
	members := sh.topics[topic]
	for conn, e := range members {
		if e.expiry <= ms {
			out = append(out, e.m)
			delete(members, conn)
		}
	}
	if members != nil && len(members) == 0 {
		delete(sh.topics, topic)
	}
	sh.mu.Unlock()
	sortMembers(out)
	return out, nil
}

// Close implements Store.
func (s *Memory) Close() error {
	if !s.closed.CompareAndSwap(false, true) {
		return ErrClosed
	}
	return nil
}

func (s *Memory) check(ctx context.Context) error {
	if s.closed.Load() {
		return ErrClosed
	}
	return ctx.Err()
}

// shard picks a topic's shard by its FNV-1a hash (allocation-free).
func (s *Memory) shard(topic string) *memShard {
	return &s.shards[strhash.FNV32a(topic)%memShards]
}
