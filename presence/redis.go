package presence

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/updraft/updraft/internal/rediserr"
)

// RedisConfig configures NewRedis.
type RedisConfig struct {
	// URL locates Redis, e.g. redis://:password@host:6379/0 (see
	// redis.ParseURL). Required.
	URL string
	// Lazy makes NewRedis return without checking that Redis answers, for
	// a node that may start before its Redis: calls fail with
	// ErrUnavailable until Redis is up.
	Lazy bool
	// Now is the clock; nil means time.Now. Every node of a cluster
	// compares expiries with its own clock: keep them in sync.
	Now func() time.Time
}

// Redis key layout. Both keys carry the topic as a Redis Cluster hash tag,
// so one topic's keys live in one slot and its scripts may touch both.
//
//	updraft:{<topic>}:presence      hash        conn → member JSON (encodeHead)
//	updraft:{<topic>}:presence:exp  sorted set  conn scored by expiry, Unix ms
//
// Every write and heartbeat sets both keys' TTL to safetyFactor × ttl (never
// shortening it; see Timings.KeyTTL), so the keys of a topic whose nodes
// all died vanish even if nobody sweeps it.
func membersKey(topic string) string { return "updraft:{" + topic + "}:presence" }
func expiryKey(topic string) string  { return "updraft:{" + topic + "}:presence:exp" }

var (
	//go:embed presence_track.lua
	trackLua string
	//go:embed presence_untrack.lua
	untrackLua string
	//go:embed presence_sweep.lua
	sweepLua string

	// The scripts run with EVALSHA and fall back to EVAL when Redis does
	// not know them (after a restart or SCRIPT FLUSH).
	trackScript   = redis.NewScript(trackLua)
	untrackScript = redis.NewScript(untrackLua)
	sweepScript   = redis.NewScript(sweepLua)
)

// Redis is the Store of a cluster of nodes joined by one Redis.
//
// Track, Untrack and Sweep are Lua scripts (presence_*.lua), each atomic
// on its topic's two keys; Members reads both keys in one MULTI; Heartbeat
// is one pipeline of, per topic it names, a ZADD XX GT and a ZMSCORE of
// its entries and a PEXPIRE GT per key: one round trip in all.
type Redis struct {
	client *redis.Client
	now    func() time.Time
	closed atomic.Bool
}

var _ Store = (*Redis)(nil)

// NewRedis connects to Redis and checks it answers (unless cfg.Lazy).
// Close the Redis to release its connections.
func NewRedis(ctx context.Context, cfg RedisConfig) (*Redis, error) {
	if cfg.URL == "" {
		return nil, errors.New("presence: RedisConfig.URL is required")
	}
	opt, err := redis.ParseURL(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("presence: RedisConfig.URL %q: %w", redactURL(cfg.URL), err)
	}
	r := &Redis{client: redis.NewClient(opt), now: cfg.Now}
	if r.now == nil {
		r.now = time.Now
	}
	if !cfg.Lazy {
		if err := r.client.Ping(ctx).Err(); err != nil {
			_ = r.client.Close()
			return nil, fmt.Errorf("presence: RedisConfig.URL %q: %w: %w", redactURL(cfg.URL), ErrUnavailable, err)
		}
	}
	return r, nil
}

// redactURL hides a password in u, for error messages.
func redactURL(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return "(unparsable URL)"
	}
	return p.Redacted()
}

// Track implements Store with presence_track.lua.
func (r *Redis) Track(ctx context.Context, topic string, m Member, node string, ttl time.Duration) (bool, error) {
	if err := r.check(ctx, "track", topic); err != nil {
		return false, err
	}
	state, err := checkTrack(topic, m, ttl)
	if err != nil {
		return false, err
	}
	m.State = state
	now := r.now()
	if m.Joined == 0 {
		m.Joined = now.UnixMilli()
	}
	n, err := trackScript.Run(ctx, r.client,
		[]string{membersKey(topic), expiryKey(topic)},
		m.Conn, encodeHead(m, node), m.Joined, expiryOf(now, ttl), safetyTTL(ttl),
	).Int()
	if err != nil {
		return false, r.fail(ctx, "track", topic, err)
	}
	return n == 1, nil
}

// Untrack implements Store with presence_untrack.lua.
func (r *Redis) Untrack(ctx context.Context, topic, conn string) (Member, bool, error) {
	if err := r.check(ctx, "untrack", topic); err != nil {
		return Member{}, false, err
	}
	s, err := untrackScript.Run(ctx, r.client, []string{membersKey(topic), expiryKey(topic)}, conn).Text()
	if errors.Is(err, redis.Nil) {
		return Member{}, false, nil
	}
	if err != nil {
		return Member{}, false, r.fail(ctx, "untrack", topic, err)
	}
	m, err := decodeMember(s)
	if err != nil {
		return Member{}, true, fmt.Errorf("presence: untrack %q: %w", topic, err)
	}
	return m, true, nil
}

// Members implements Store: the live conns and every member's JSON, read
// in one MULTI.
func (r *Redis) Members(ctx context.Context, topic string) ([]Member, error) {
	if err := r.check(ctx, "members", topic); err != nil {
		return nil, err
	}
	now := strconv.FormatInt(r.now().UnixMilli(), 10)
	var live *redis.StringSliceCmd
	var all *redis.MapStringStringCmd
	cmds, err := r.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		live = p.ZRangeByScore(ctx, expiryKey(topic), &redis.ZRangeBy{Min: "(" + now, Max: "+inf"})
		all = p.HGetAll(ctx, membersKey(topic))
		return nil
	})
	if err = rediserr.TxError(err, cmds); err != nil {
		return nil, r.fail(ctx, "members", topic, err)
	}
	vals := all.Val()
	out := make([]Member, 0, len(live.Val()))
	for _, conn := range live.Val() {
		s, ok := vals[conn]
		if !ok {
			continue
		}
		m, err := decodeMember(s)
		if err != nil {
			return nil, fmt.Errorf("presence: members %q: %w", topic, err)
		}
		out = append(out, m)
	}
	sortMembers(out)
	return out, nil
}

// Heartbeat implements Store in one pipeline: per topic, ZADD XX GT of
// its entries (XX: never adds a member; GT: never shortens an expiry),
// ZMSCORE of the same entries (a nil score is a missing member), then
// PEXPIRE GT of the topic's keys. The keys exist with a TTL whenever they
// hold a member, so GT only keeps a longer safety net in place.
func (r *Redis) Heartbeat(ctx context.Context, node string, entries []Entry, ttl time.Duration) ([]Entry, error) {
	if err := r.check(ctx, "heartbeat", node); err != nil {
		return nil, err
	}
	if ttl <= 0 {
		return nil, fmt.Errorf("%w: ttl %v is not positive", ErrInvalid, ttl)
	}
	if len(entries) == 0 {
		return nil, nil
	}
	expiry := float64(expiryOf(r.now(), ttl))
	safety := safetyTTL(ttl)
	// Entries grouped by topic, in order of first appearance.
	var topics []string
	byTopic := make(map[string][]int)
	for i, e := range entries {
		if _, ok := byTopic[e.Topic]; !ok {
			topics = append(topics, e.Topic)
		}
		byTopic[e.Topic] = append(byTopic[e.Topic], i)
	}
	p := r.client.Pipeline()
	scores := make([]*redis.FloatSliceCmd, len(topics))
	for ti, t := range topics {
		idx := byTopic[t]
		zs := make([]redis.Z, len(idx))
		conns := make([]string, len(idx))
		for j, i := range idx {
			zs[j] = redis.Z{Score: expiry, Member: entries[i].Conn}
			conns[j] = entries[i].Conn
		}
		p.ZAddArgs(ctx, expiryKey(t), redis.ZAddArgs{XX: true, GT: true, Members: zs})
		scores[ti] = p.ZMScore(ctx, expiryKey(t), conns...)
		p.Do(ctx, "PEXPIRE", membersKey(t), safety, "GT")
		p.Do(ctx, "PEXPIRE", expiryKey(t), safety, "GT")
	}
	if _, err := p.Exec(ctx); err != nil {
		return nil, r.fail(ctx, "heartbeat", node, err)
	}
	// ZMSCORE answers 0 for a missing member (go-redis maps nil to 0);
	// a live expiry is a positive Unix time.
	var missing []bool
	for ti, t := range topics {
		for j, score := range scores[ti].Val() {
			if score == 0 {
				if missing == nil {
					missing = make([]bool, len(entries))
				}
				missing[byTopic[t][j]] = true
			}
		}
	}
	var out []Entry
	for i, m := range missing {
		if m {
			out = append(out, entries[i])
		}
	}
	return out, nil
}

// Sweep implements Store with presence_sweep.lua.
func (r *Redis) Sweep(ctx context.Context, topic string, now time.Time) ([]Member, error) {
	if err := r.check(ctx, "sweep", topic); err != nil {
		return nil, err
	}
	vals, err := sweepScript.Run(ctx, r.client,
		[]string{membersKey(topic), expiryKey(topic)}, now.UnixMilli(),
	).StringSlice()
	if err != nil {
		return nil, r.fail(ctx, "sweep", topic, err)
	}
	out := make([]Member, 0, len(vals))
	var bad error
	for _, s := range vals {
		m, err := decodeMember(s)
		if err != nil {
			bad = err // removed all the same: report it, keep the others
			continue
		}
		out = append(out, m)
	}
	sortMembers(out)
	if bad != nil {
		return out, fmt.Errorf("presence: sweep %q: %w", topic, bad)
	}
	return out, nil
}

// Close implements Store.
func (r *Redis) Close() error {
	if !r.closed.CompareAndSwap(false, true) {
		return ErrClosed
	}
	return r.client.Close()
}

// check fails a call on a closed store or with a done context.
func (r *Redis) check(ctx context.Context, op, name string) error {
	if r.closed.Load() {
		return ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("presence: %s %q: %w", op, name, err)
	}
	return nil
}

// fail wraps an error of a Redis call: ErrClosed after Close, the
// context's error when the caller gave up, ErrUnavailable when Redis could
// not be reached or answered that it cannot serve for now (LOADING after a
// restart and the like: see rediserr.Transient).
func (r *Redis) fail(ctx context.Context, op, name string, err error) error {
	if r.closed.Load() {
		return ErrClosed
	}
	if ctxErr := ctx.Err(); ctxErr != nil {
		return fmt.Errorf("presence: %s %q: %w", op, name, ctxErr)
	}
	var rerr redis.Error
	if errors.As(err, &rerr) && !rediserr.Transient(err) {
		return fmt.Errorf("presence: %s %q: %w", op, name, err) // Redis answered, with an error
	}
	return fmt.Errorf("presence: %s %q: %w: %w", op, name, ErrUnavailable, err)
}

// safetyTTL is the keys' safety-net TTL in milliseconds.
func safetyTTL(ttl time.Duration) int64 { return safetyFactor * max(ttl.Milliseconds(), 1) }

// errMalformed: a stored member is not what encodeHead wrote.
var errMalformed = errors.New("presence: malformed stored member")

// stored is a member as kept in Redis: with its owning node.
type stored struct {
	Member
	Node string `json:"node"`
}

// encodeHead returns m's stored JSON up to and including `"joined":`; the
// track script appends the join time and the closing brace, so the join
// time always ends the value. State is copied verbatim (encoding/json
// would compact it).
func encodeHead(m Member, node string) string {
	b := make([]byte, 0, 64+len(m.Key)+len(m.Conn)+len(node)+len(m.State))
	b = append(b, `{"key":`...)
	b = appendString(b, m.Key)
	b = append(b, `,"conn":`...)
	b = appendString(b, m.Conn)
	b = append(b, `,"node":`...)
	b = appendString(b, node)
	if len(m.State) > 0 {
		b = append(b, `,"state":`...)
		b = append(b, m.State...)
	}
	b = append(b, `,"joined":`...)
	return string(b)
}

// appendString appends s as a JSON string.
func appendString(b []byte, s string) []byte {
	q, _ := json.Marshal(s) // a string always marshals
	return append(b, q...)
}

// decodeMember parses a stored member.
func decodeMember(s string) (Member, error) {
	var st stored
	if err := json.Unmarshal([]byte(s), &st); err != nil {
		return Member{}, fmt.Errorf("%w: %w", errMalformed, err)
	}
	return st.Member, nil
}
