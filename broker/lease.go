package broker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"
)

// Errors of the Coordinator, matched with errors.Is.
var (
	// ErrLeaseHeld: AcquireLease found the lease held by someone else.
	ErrLeaseHeld = errors.New("broker: lease held by another")
	// ErrLeaseLost: the caller's lease expired or was taken over; the call
	// had no effect. The caller is no longer the leader.
	ErrLeaseLost = errors.New("broker: lease lost")
)

// Lease is a held leadership: its name and its fencing token.
//
// Token is "<fence>:<random>": fence comes from a counter that only grows
// (INCR), so a later leader's fence is larger; the random part keeps a
// token unique even when the store lost its counter (a Redis restart
// without persistence), so that a leader deposed by that restart can never
// present a token equal to its successor's.
type Lease struct {
	Name  string
	Token string
}

// Fence returns the counter part of the lease's token: larger for later
// leaders. Zero when the token is malformed.
func (l Lease) Fence() uint64 {
	for i := 0; i < len(l.Token); i++ {
		if l.Token[i] == ':' {
			n, _ := strconv.ParseUint(l.Token[:i], 10, 64)
			return n
		}
	}
	return 0
}

// Coordinator elects one leader among processes that share a store and
// lets only that leader publish. The tracker uses it: several trackers
// run, one holds the lease and publishes database changes; a deposed
// leader (paused, partitioned, or simply late) can publish nothing,
// because every batch is checked against the current lease in the same
// atomic step that publishes it.
//
// Both brokers implement it: Redis across processes (SET NX PX on a lease
// key, a fencing counter, and one Lua script per batch), Memory within one
// process.
type Coordinator interface {
	// AcquireLease takes lease name for ttl when nobody holds it, with a
	// new fencing token. It returns ErrLeaseHeld when it is held, even by
	// the caller (renew instead).
	AcquireLease(ctx context.Context, name string, ttl time.Duration) (Lease, error)

	// RenewLease extends l to ttl from now. ErrLeaseLost when l expired or
	// another took it over.
	RenewLease(ctx context.Context, l Lease, ttl time.Duration) error

	// ReleaseLease gives l up at once, so that a standby can take over
	// without waiting for it to expire. Releasing a lease no longer held is
	// not an error.
	ReleaseLease(ctx context.Context, l Lease) error

	// PublishFenced publishes msgs in order (each as Publish would) and
	// stores cursor as l.Name's cursor, as one atomic step, if and only if
	// l is still held; otherwise it returns ErrLeaseLost and nothing was
	// published. msgs may be empty: the cursor alone is stored. The
	// positions are returned in the order of msgs.
	PublishFenced(ctx context.Context, l Lease, msgs []Item, cursor string) ([]Position, error)

	// Cursor returns the cursor last stored under name by PublishFenced;
	// "" when none.
	Cursor(ctx context.Context, name string) (string, error)
}

// newToken returns a fencing token for fence.
func newToken(fence int64) string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return strconv.FormatInt(fence, 10) + ":" + hex.EncodeToString(b[:])
}

// memCoord is Memory's Coordinator state.
type memCoord struct {
	mu      sync.Mutex
	leases  map[string]memLease // guarded by mu
	fences  map[string]int64    // guarded by mu
	cursors map[string]string   // guarded by mu
}

type memLease struct {
	token   string
	expires time.Time
}

var _ Coordinator = (*Memory)(nil)

// held reports whether l is the live lease. c.mu must be held.
func (c *memCoord) held(l Lease, now time.Time) bool {
	cur, ok := c.leases[l.Name]
	return ok && cur.token == l.Token && now.Before(cur.expires)
}

// AcquireLease implements Coordinator.
func (m *Memory) AcquireLease(ctx context.Context, name string, ttl time.Duration) (Lease, error) {
	if err := m.check(ctx); err != nil {
		return Lease{}, err
	}
	c := &m.coord
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	if cur, ok := c.leases[name]; ok && now.Before(cur.expires) {
		return Lease{}, ErrLeaseHeld
	}
	if c.leases == nil {
		c.leases, c.fences, c.cursors = map[string]memLease{}, map[string]int64{}, map[string]string{}
	}
	c.fences[name]++
	l := Lease{Name: name, Token: newToken(c.fences[name])}
	c.leases[name] = memLease{token: l.Token, expires: now.Add(ttl)}
	return l, nil
}

// RenewLease implements Coordinator.
func (m *Memory) RenewLease(ctx context.Context, l Lease, ttl time.Duration) error {
	if err := m.check(ctx); err != nil {
		return err
	}
	c := &m.coord
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	if !c.held(l, now) {
		return ErrLeaseLost
	}
	c.leases[l.Name] = memLease{token: l.Token, expires: now.Add(ttl)}
	return nil
}

// ReleaseLease implements Coordinator.
func (m *Memory) ReleaseLease(ctx context.Context, l Lease) error {
	if m.closed.Load() {
		return ErrClosed
	}
	c := &m.coord
	c.mu.Lock()
	defer c.mu.Unlock()
	if cur, ok := c.leases[l.Name]; ok && cur.token == l.Token {
		delete(c.leases, l.Name)
	}
	return nil
}

// PublishFenced implements Coordinator. The lease is checked and the batch
// published under the coordinator's lock, so a lease cannot change hands
// in the middle of a batch.
func (m *Memory) PublishFenced(ctx context.Context, l Lease, msgs []Item, cursor string) ([]Position, error) {
	if err := m.check(ctx); err != nil {
		return nil, err
	}
	c := &m.coord
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.held(l, time.Now()) {
		return nil, ErrLeaseLost
	}
	// Not ctx: a batch is all or nothing.
	pos, err := m.PublishBatch(context.Background(), msgs)
	if err != nil {
		return nil, fmt.Errorf("broker: fenced publish: %w", err)
	}
	c.cursors[l.Name] = cursor
	return pos, nil
}

// Cursor implements Coordinator.
func (m *Memory) Cursor(ctx context.Context, name string) (string, error) {
	if err := m.check(ctx); err != nil {
		return "", err
	}
	m.coord.mu.Lock()
	defer m.coord.mu.Unlock()
	return m.coord.cursors[name], nil
}
