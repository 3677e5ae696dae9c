package broker

import (
	"context"
	_ "embed"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Coordinator keys. The lease and cursor of one name share a hash tag; a
// fenced batch also touches its topics' keys, so PublishFenced needs a
// single Redis (or every key in one Cluster slot).
//
//	updraft:lease:{<name>}        string  the holder's token, with the lease's TTL
//	updraft:lease:{<name>}:fence  string  the fencing counter (INCR), no TTL
//	updraft:cursor:{<name>}       string  the cursor stored by the last fenced batch
func leaseKey(name string) string  { return "updraft:lease:{" + name + "}" }
func fenceKey(name string) string  { return "updraft:lease:{" + name + "}:fence" }
func cursorKey(name string) string { return "updraft:cursor:{" + name + "}" }

//go:embed publish_fenced.lua
var publishFencedLua string

var publishFencedScript = redis.NewScript(publishFnLua + publishFencedLua)

// acquireScript: KEYS lease, fence; ARGV ttl (ms), random suffix. Sets the
// lease to "<fence>:<suffix>" when free and returns the token, else false.
var acquireScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local token = redis.call('INCR', KEYS[2]) .. ':' .. ARGV[2]
redis.call('SET', KEYS[1], token, 'PX', ARGV[1])
return token
`)

// renewScript: KEYS lease; ARGV token, ttl (ms). 1 when renewed, 0 when the
// lease is not the caller's.
var renewScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
`)

// releaseScript: KEYS lease; ARGV token. Deletes the lease if it is the
// caller's.
var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
`)

var _ Coordinator = (*Redis)(nil)

// AcquireLease implements Coordinator.
func (r *Redis) AcquireLease(ctx context.Context, name string, ttl time.Duration) (Lease, error) {
	if r.closed.Load() {
		return Lease{}, ErrClosed
	}
	suffix := newToken(0)[2:] // the random part only
	token, err := acquireScript.Run(ctx, r.client, []string{leaseKey(name), fenceKey(name)},
		max(ttl.Milliseconds(), 1), suffix).Text()
	switch {
	case err == redis.Nil:
		return Lease{}, ErrLeaseHeld
	case err != nil:
		return Lease{}, r.fail(ctx, "acquire lease", name, err)
	}
	return Lease{Name: name, Token: token}, nil
}

// RenewLease implements Coordinator.
func (r *Redis) RenewLease(ctx context.Context, l Lease, ttl time.Duration) error {
	if r.closed.Load() {
		return ErrClosed
	}
	ok, err := renewScript.Run(ctx, r.client, []string{leaseKey(l.Name)}, l.Token, max(ttl.Milliseconds(), 1)).Int()
	if err != nil {
		return r.fail(ctx, "renew lease", l.Name, err)
	}
	if ok != 1 {
		return ErrLeaseLost
	}
	return nil
}

// ReleaseLease implements Coordinator.
func (r *Redis) ReleaseLease(ctx context.Context, l Lease) error {
	if r.closed.Load() {
		return ErrClosed
	}
	if err := releaseScript.Run(ctx, r.client, []string{leaseKey(l.Name)}, l.Token).Err(); err != nil {
		return r.fail(ctx, "release lease", l.Name, err)
	}
	return nil
}

// PublishFenced implements Coordinator with one run of publish_fenced.lua.
func (r *Redis) PublishFenced(ctx context.Context, l Lease, msgs []Item, cursor string) ([]Position, error) {
	if r.closed.Load() {
		return nil, ErrClosed
	}
	pos, err := r.runBatch(ctx, publishFencedScript, []string{leaseKey(l.Name), cursorKey(l.Name)}, []any{l.Token, cursor}, msgs)
	if err != nil && strings.Contains(err.Error(), "LEASE_LOST") { // Redis may prefix "ERR "
		return nil, ErrLeaseLost
	}
	if err != nil {
		return nil, r.fail(ctx, "fenced publish", l.Name, err)
	}
	return pos, nil
}

// Cursor implements Coordinator.
func (r *Redis) Cursor(ctx context.Context, name string) (string, error) {
	if r.closed.Load() {
		return "", ErrClosed
	}
	c, err := r.client.Get(ctx, cursorKey(name)).Result()
	if err == redis.Nil {
		return "", nil
	}
	if err != nil {
		return "", r.fail(ctx, "read cursor", name, err)
	}
	return c, nil
}
