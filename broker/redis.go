package broker

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/updraft/updraft/internal/rediserr"
)

// RedisConfig configures NewRedis.
type RedisConfig struct {
	// URL locates Redis, e.g. redis://:password@host:6379/0 (see
	// redis.ParseURL). Required.
	URL string
	// Lazy makes NewRedis return without checking that Redis answers, for
	// a node that may start before its Redis: calls fail with
	// ErrUnavailable until Redis is up, and the receive loop connects as
	// soon as it can. Ping tells when Redis answers.
	Lazy bool
	// Retention bounds each topic's history; zero fields take their
	// defaults. Every node of a cluster should use the same values: the
	// node that publishes applies its own.
	Retention Retention
	// Logger receives the broker's background events (lost and restored
	// connections, undecodable payloads); nil means no logging.
	Logger *zap.Logger
	// Metrics, when set, counts every error Redis returns once NewRedis
	// has returned, in the foreground (Publish, History, ...) and in the
	// background (the pub/sub connection), and the messages of the gaps
	// reported to OnGapFilled and OnGapUnfillable; NewRedis itself returns
	// its error instead. Caller cancellations are not counted.
	Metrics *Metrics

	// CheckInterval is how often the node compares each subscribed topic's
	// latest position in Redis with what it delivered, to catch a
	// subscription that stopped delivering while publishes still succeed
	// (default 1s). A topic found behind on two checks in a row is filled
	// from history. Each check reads every subscribed topic's meta key,
	// pipelined: one round trip per 1000 topics.
	CheckInterval time.Duration
	// OnGapFilled, when set, is called with a topic and the number n of
	// messages about to be delivered from history because the live stream
	// lost them (or, rarely, because they were late by more than two
	// checks). It must not block.
	OnGapFilled func(topic string, n int)
	// OnGapUnfillable, when set, is called with a topic and the number n of
	// messages the live stream lost that history no longer holds (trimmed
	// or expired): they are never delivered. It is called before the
	// messages after them are delivered, and must not block.
	OnGapUnfillable func(topic string, n int)
}

// DefaultCheckInterval is RedisConfig.CheckInterval's default.
const DefaultCheckInterval = time.Second

// Redis key and channel layout. Every name carries the topic as a Redis
// Cluster hash tag, so one topic's keys live in one slot.
//
//	updraft:{<topic>}:meta     hash   epoch, seq
//	updraft:{<topic>}:history  stream entries "<seq>-0", field "p": the encoded publication
//	updraft:msg:{<topic>}      channel carrying "<epoch>:<seq>:<encoded publication>"
//
// The encoding is described in codec.go.
func metaKey(topic string) string    { return "updraft:{" + topic + "}:meta" }
func historyKey(topic string) string { return "updraft:{" + topic + "}:history" }
func channelName(topic string) string {
	return channelPrefix + topic + channelSuffix
}

const (
	channelPrefix = "updraft:msg:{"
	channelSuffix = "}"
)

// topicOf returns the topic of a channel named by channelName.
func topicOf(channel string) (string, bool) {
	rest, ok := strings.CutPrefix(channel, channelPrefix)
	if !ok {
		return "", false
	}
	return strings.CutSuffix(rest, channelSuffix)
}

//go:embed publish_fn.lua
var publishFnLua string

//go:embed publish.lua
var publishLua string

//go:embed publish_batch.lua
var publishBatchLua string

// The scripts run with EVALSHA and fall back to EVAL when Redis does not
// know them (after a restart or SCRIPT FLUSH).
var (
	publishScript      = redis.NewScript(publishFnLua + publishLua)
	publishBatchScript = redis.NewScript(publishFnLua + publishBatchLua)
)

// Subscription confirmation: Subscribe sends SUBSCRIBE, then a PING with a
// unique payload on the same pub/sub connection, and returns when the
// receive loop reads that PING's reply. Redis answers a connection's
// commands in order, so the reply proves the SUBSCRIBE took effect (or was
// refused: see subscribeConfirmed). If the connection is replaced after
// SUBSCRIBE was written, go-redis resubscribes every channel it knows, ours
// included, before any other command on the new connection, so a reply
// read from the new connection proves it as well; a reply lost with the old
// connection, or not read within confirmTimeout, is asked for again.
const (
	confirmAttempts = 3
	confirmTimeout  = 3 * time.Second
)

// Redis is the Broker of a cluster of nodes joined by one Redis.
//
// Publishing runs publish.lua (see the file): positions are assigned in
// Redis, and history and the live stream never disagree. Each node holds
// one pub/sub connection and at most one Redis subscription per topic,
// reference counted across the node's callers. One goroutine reads the
// pub/sub connection, decodes each message once and calls the Handler.
//
// Redis pub/sub is at most once: a pub/sub connection that is killed,
// dropped for exceeding its output buffer limit or re-established loses the
// messages published meanwhile, and a subscription can stop delivering
// while publishes still succeed. The node therefore tracks, per topic, the
// last position it delivered, and makes delivery exactly once and in order
// (the Broker contract):
//
//   - Baseline: once Redis confirmed the subscription, Subscribe reads the
//     topic's latest position, and every message after it is delivered:
//     a loss right after subscribing is caught too. A message at or below
//     it still in flight was published before Subscribe returned, and is
//     dropped rather than delivered after its successors. Until the
//     baseline is known (or when it could not be read) the first message
//     delivered sets it.
//   - A live message of the same epoch at or below the last delivered seq
//     is a duplicate (already filled from history) and dropped; one above
//     the next expected seq reveals a gap, which is read from the history
//     stream (one XRANGE of at most Retention.Size entries, in a MULTI with
//     the topic's meta so that the epoch is checked) and delivered before
//     it. A message of a new epoch moves delivery to that epoch, filling
//     the new epoch's seqs below it; the old epoch's undelivered messages
//     went with its history. Late messages of the epoch just left are
//     dropped.
//   - Every CheckInterval a checker goroutine reads the latest position of
//     every subscribed topic (pipelined) and fills a topic found behind on
//     two checks in a row (so that messages in flight are not taken for
//     losses), then sends SUBSCRIBE again in case the subscription itself
//     was lost (a no-op for Redis when it was not). When the receive loop
//     reads again after a connection error, it asks the checker to fill
//     every topic at once instead of waiting two checks: the messages
//     published while the connection was down are lost for sure.
//   - Fills and live delivery of a topic are serialised by the topic's
//     delivery lock. A fill the receive loop cannot read (the command
//     connection failed) is left to the checker: the topic's live messages
//     are dropped until the checker has filled it from history.
//
// Missing messages history no longer holds are reported through
// OnGapUnfillable and the log, filled ones through OnGapFilled. Messages
// of an epoch that ended while they were missing cannot be counted.
//
// When the pub/sub connection drops (Redis restarted, connection killed),
// go-redis reconnects on the receive loop's next read and resubscribes
// every channel; the loop retries with backoff until Redis is back, and a
// Redis that lost its data starts new epochs. A silently dead connection is
// detected by TCP keep-alive (go-redis probes after 30s idle and gives up
// after 3 unanswered probes 5s apart); meanwhile the checker delivers from
// history.
//
// The Handler runs on the receive loop or, for fills, on the checker, never
// concurrently for one topic; a slow Handler delays every topic of the
// node. It must not call Subscribe or Unsubscribe: both wait for the
// topic's delivery in progress.
type Redis struct {
	client    *redis.Client
	ps        *redis.PubSub // receiving: only the receive loop; commands: safe for concurrent use
	retention Retention
	handler   Handler       // set before the first Subscribe: see RegisterEventHandler
	onSignal  SignalHandler // likewise
	log       *zap.Logger
	metrics   *Metrics // nil counts nothing

	checkInterval   time.Duration
	onGapFilled     func(topic string, n int)
	onGapUnfillable func(topic string, n int)

	subsMu sync.RWMutex
	subs   map[string]*redisSub // guarded by subsMu; by topic

	// refusals counts the error replies read on the pub/sub connection
	// (refused SUBSCRIBEs), lastRefusal holds the latest; written by the
	// receive loop.
	refusals    atomic.Uint64
	lastRefusal atomic.Pointer[error]

	barrierMu   sync.Mutex
	barriers    map[string]chan bool // guarded by barrierMu; by PING payload
	nextBarrier atomic.Uint64

	// recheck asks the checker for an immediate check that fills every
	// topic found behind (after the pub/sub connection was re-established).
	recheck chan struct{}

	closed    atomic.Bool
	ctx       context.Context // background reads (fills, checks); canceled by Close
	cancel    context.CancelFunc
	done      chan struct{} // closed by Close
	loopDone  chan struct{} // closed when the receive loop returns
	checkDone chan struct{} // closed when the checker returns
}

var _ Broker = (*Redis)(nil)

// redisSub is the node's subscription state for one topic.
type redisSub struct {
	// lock is a one-slot semaphore (a mutex that honours ctx) serialising
	// Subscribe and Unsubscribe of the topic. It is held across the Redis
	// round trip, so the Redis-side subscription exists exactly when count
	// is positive, whatever the interleaving of callers.
	lock  chan struct{}
	count int // guarded by lock: Subscribe calls without Unsubscribe

	// active is true while count is positive and Redis confirmed the
	// subscription. Written under lock and mu; read under mu by the
	// receive loop and the checker, which deliver nothing of an inactive
	// topic: none is delivered after Unsubscribe returns.
	active atomic.Bool

	// mu is the topic's delivery lock: held by the receive loop and the
	// checker while they fill gaps and call the Handler, by Subscribe while
	// it sets the baseline and by Unsubscribe while it stops delivery.
	mu sync.Mutex
	// based is set once the baseline is known; epoch and last are then
	// the position of the last message delivered, or the baseline read by
	// Subscribe. Guarded by mu.
	based bool
	epoch string
	last  uint64
	// retired is the epoch delivery moved away from; its late messages
	// are dropped. Guarded by mu.
	retired string
	// pending is a position the previous check found ahead of last;
	// zero when none. Guarded by mu.
	pending Position
	// fillFailed is set when the receive loop could not read a gap from
	// history: live messages are dropped until the checker fills the
	// topic. Guarded by mu.
	fillFailed bool

	users int // guarded by Redis.subsMu: calls holding this *redisSub
}

// NewRedis connects to Redis, checks it answers (unless cfg.Lazy) and
// starts the node's receive loop. Close the Redis to stop it.
func NewRedis(ctx context.Context, cfg RedisConfig) (*Redis, error) {
	if cfg.URL == "" {
		return nil, errors.New("broker: RedisConfig.URL is required")
	}
	if cfg.CheckInterval < 0 {
		return nil, fmt.Errorf("broker: RedisConfig.CheckInterval %v is negative", cfg.CheckInterval)
	}
	opt, err := redis.ParseURL(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("broker: RedisConfig.URL %q: %w", redactURL(cfg.URL), err)
	}
	r := &Redis{
		client:          redis.NewClient(opt),
		retention:       cfg.Retention.withDefaults(),
		log:             cfg.Logger,
		metrics:         cfg.Metrics,
		checkInterval:   cfg.CheckInterval,
		onGapFilled:     cfg.OnGapFilled,
		onGapUnfillable: cfg.OnGapUnfillable,
		subs:            make(map[string]*redisSub),
		barriers:        make(map[string]chan bool),
		recheck:         make(chan struct{}, 1),
		done:            make(chan struct{}),
		loopDone:        make(chan struct{}),
		checkDone:       make(chan struct{}),
	}
	if r.checkInterval == 0 {
		r.checkInterval = DefaultCheckInterval
	}
	if r.onGapFilled == nil {
		r.onGapFilled = func(string, int) {}
	}
	if r.onGapUnfillable == nil {
		r.onGapUnfillable = func(string, int) {}
	}
	r.RegisterEventHandler(nil, nil)
	if r.log == nil {
		r.log = zap.NewNop()
	}
	if !cfg.Lazy {
		if err := r.client.Ping(ctx).Err(); err != nil {
			_ = r.client.Close()
			return nil, fmt.Errorf("broker: RedisConfig.URL %q: %w: %w", redactURL(cfg.URL), ErrUnavailable, err)
		}
	}
	r.ctx, r.cancel = context.WithCancel(context.WithoutCancel(ctx))
	r.ps = r.client.Subscribe(context.WithoutCancel(ctx)) // no channel yet: connects on first use
	go r.receive()
	go r.checker()
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

// Publish implements Broker. It runs publish.lua once: a nil error means
// Redis assigned the position, stored the message and published it.
func (r *Redis) Publish(ctx context.Context, topic string, pub Publication) (Position, error) {
	if r.closed.Load() {
		return Position{}, ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return Position{}, fmt.Errorf("broker: publish %q: %w", topic, err)
	}
	if pub.TS == 0 {
		pub.TS = nowMillis()
	}
	body := appendPublication(make([]byte, 0, publicationSize(pub)), pub)
	ttl := max(r.retention.TTL.Milliseconds(), 1)
	res, err := publishScript.Run(ctx, r.client,
		[]string{metaKey(topic), historyKey(topic)},
		newEpoch(), r.retention.Size, ttl, channelName(topic), body,
	).Slice()
	if err != nil {
		return Position{}, r.fail(ctx, "publish", topic, err)
	}
	if len(res) != 2 {
		return Position{}, fmt.Errorf("broker: publish %q: %w: script returned %d values", topic, errMalformed, len(res))
	}
	epoch, _ := res[0].(string)
	seq, _ := res[1].(int64)
	if epoch == "" || seq <= 0 {
		return Position{}, fmt.Errorf("broker: publish %q: %w: script returned %v", topic, errMalformed, res)
	}
	return Position{Epoch: epoch, Seq: uint64(seq)}, nil
}

// Signal implements Broker: one PUBLISH on the topic's channel, the
// payload prefixed by signalPrefix, which no message payload starts with
// (those start with an epoch, hex digits).
func (r *Redis) Signal(ctx context.Context, topic string, payload []byte) error {
	if r.closed.Load() {
		return ErrClosed
	}
	msg := make([]byte, 0, len(signalPrefix)+len(payload))
	msg = append(append(msg, signalPrefix...), payload...)
	if err := r.client.Publish(ctx, channelName(topic), msg).Err(); err != nil {
		return r.fail(ctx, "signal", topic, err)
	}
	return nil
}

// signalPrefix marks a signal on a topic's channel.
const signalPrefix = "!"

// PublishBatch implements Broker with one run of publish_batch.lua.
func (r *Redis) PublishBatch(ctx context.Context, items []Item) ([]Position, error) {
	if r.closed.Load() {
		return nil, ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("broker: publish batch: %w", err)
	}
	if len(items) == 0 {
		return nil, nil
	}
	pos, err := r.runBatch(ctx, publishBatchScript, nil, nil, items)
	if err != nil {
		return nil, r.fail(ctx, "publish batch", items[0].Topic, err)
	}
	return pos, nil
}

// runBatch runs a batch script (publish_all in publish_fn.lua) with keys
// and args before the batch's own, and returns the positions it assigned.
func (r *Redis) runBatch(ctx context.Context, script *redis.Script, keys []string, args []any, items []Item) ([]Position, error) {
	keys = slices.Grow(keys, 2*len(items))
	args = slices.Grow(args, 3+2*len(items))
	args = append(args, newEpoch(), r.retention.Size, max(r.retention.TTL.Milliseconds(), 1))
	now := nowMillis()
	for _, m := range items {
		if m.TS == 0 {
			m.TS = now
		}
		keys = append(keys, metaKey(m.Topic), historyKey(m.Topic))
		args = append(args, channelName(m.Topic), appendPublication(make([]byte, 0, publicationSize(m.Publication)), m.Publication))
	}
	res, err := script.Run(ctx, r.client, keys, args...).Slice()
	if err != nil {
		return nil, err
	}
	if len(res) != 2*len(items) {
		return nil, fmt.Errorf("%w: script returned %d values for %d messages", errMalformed, len(res), len(items))
	}
	pos := make([]Position, len(items))
	for i := range items {
		epoch, _ := res[2*i].(string)
		seq, _ := res[2*i+1].(int64)
		if epoch == "" || seq <= 0 {
			return nil, fmt.Errorf("%w: script returned %v", errMalformed, res[2*i:2*i+2])
		}
		pos[i] = Position{Epoch: epoch, Seq: uint64(seq)}
	}
	return pos, nil
}

// Subscribe implements Broker. The first reference sends SUBSCRIBE, and
// once Redis confirmed it reads the topic's latest position (the baseline:
// every later message is delivered); later references only count.
func (r *Redis) Subscribe(ctx context.Context, topic string) error {
	if r.closed.Load() {
		return ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("broker: subscribe %q: %w", topic, err)
	}
	s := r.acquire(topic)
	defer r.release(topic, s)
	if err := r.lockSub(ctx, s); err != nil {
		return r.fail(ctx, "subscribe", topic, err)
	}
	defer func() { <-s.lock }()
	if s.count > 0 {
		s.count++
		return nil
	}
	ch := channelName(topic)
	// The pub/sub connection is shared: a caller's cancellation must not
	// break it (go-redis drops a connection whose write was cancelled), so
	// commands run without the caller's deadline, bounded by WriteTimeout.
	wctx := context.WithoutCancel(ctx)
	if err := r.subscribeConfirmed(ctx, wctx, ch); err != nil {
		// go-redis remembers the channel even when SUBSCRIBE failed and
		// would resubscribe it on reconnect: forget it.
		if uerr := r.ps.Unsubscribe(wctx, ch); uerr != nil && !r.closed.Load() {
			r.report("redis unsubscribe after a failed subscribe", topic, uerr)
		}
		return r.fail(ctx, "subscribe", topic, err)
	}
	s.count = 1
	s.mu.Lock()
	s.based, s.epoch, s.last, s.retired = false, "", 0, ""
	s.pending, s.fillFailed = Position{}, false
	s.active.Store(true)
	s.mu.Unlock()
	// The subscription is confirmed: every message published from now on
	// reaches the receive loop, or shows a gap. Without a baseline the
	// first message delivered sets it, and a loss before it goes unseen.
	base, err := r.readMeta(ctx, topic)
	if err != nil {
		if ctx.Err() == nil && !r.closed.Load() {
			r.report("redis position read for a new subscription", topic, err)
		}
		return nil
	}
	s.mu.Lock()
	if !s.based { // else a message was delivered meanwhile: it is the baseline
		s.based, s.epoch, s.last = true, base.Epoch, base.Seq
	}
	s.mu.Unlock()
	return nil
}

// Unsubscribe implements Broker. The last reference sends UNSUBSCRIBE;
// delivery of the topic stops before Unsubscribe returns (it waits for a
// delivery in progress, bounded by fillTimeout).
//
// Unsubscribe always drops the reference, even when ctx is already done
// (callers clean up with the context of a connection that just ended): it
// waits for a concurrent Subscribe of the topic, which is bounded, and
// sends UNSUBSCRIBE without the caller's deadline. A failure to send it is
// reported (OnError, log) but not returned: go-redis then replaces the
// connection, and the new one is not subscribed.
func (r *Redis) Unsubscribe(ctx context.Context, topic string) error {
	if r.closed.Load() {
		return ErrClosed
	}
	s := r.acquire(topic)
	defer r.release(topic, s)
	if err := r.lockSub(context.WithoutCancel(ctx), s); err != nil {
		return err // closed
	}
	defer func() { <-s.lock }()
	if s.count == 0 {
		return ErrNotSubscribed
	}
	s.count--
	if s.count > 0 {
		return nil
	}
	s.mu.Lock()
	s.active.Store(false)
	s.mu.Unlock()
	if err := r.ps.Unsubscribe(context.WithoutCancel(ctx), channelName(topic)); err != nil && !r.closed.Load() {
		r.report("redis unsubscribe", topic, err)
	}
	return nil
}

// Latest implements Broker. A topic without meta (never published, or its
// meta expired or was lost) has no epoch yet: Latest returns the zero
// Position.
func (r *Redis) Latest(ctx context.Context, topic string) (Position, error) {
	if r.closed.Load() {
		return Position{}, ErrClosed
	}
	pos, err := r.readMeta(ctx, topic)
	if err != nil {
		return Position{}, r.fail(ctx, "latest", topic, err)
	}
	return pos, nil
}

// readMeta reads topic's latest position from its meta key.
func (r *Redis) readMeta(ctx context.Context, topic string) (Position, error) {
	vals, err := r.client.HMGet(ctx, metaKey(topic), "epoch", "seq").Result()
	if err != nil {
		return Position{}, err
	}
	return parseMeta(vals)
}

// History implements Broker. Meta and history are read in one MULTI/EXEC,
// so the page's Latest and Messages agree.
func (r *Redis) History(ctx context.Context, topic string, q HistoryQuery) (HistoryPage, error) {
	if r.closed.Load() {
		return HistoryPage{}, ErrClosed
	}
	start, stop, ok := streamRange(q)
	var meta *redis.SliceCmd
	var entries *redis.XMessageSliceCmd
	cmds, err := r.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		meta = p.HMGet(ctx, metaKey(topic), "epoch", "seq")
		if !ok {
			return nil
		}
		switch {
		case q.Limit <= 0:
			entries = p.XRange(ctx, historyKey(topic), start, stop)
		case q.After != 0:
			entries = p.XRangeN(ctx, historyKey(topic), start, stop, int64(q.Limit))
		default:
			entries = p.XRevRangeN(ctx, historyKey(topic), stop, start, int64(q.Limit))
		}
		return nil
	})
	if err = rediserr.TxError(err, cmds); err != nil {
		return HistoryPage{}, r.fail(ctx, "history", topic, err)
	}
	latest, err := parseMeta(meta.Val())
	if err != nil {
		return HistoryPage{}, fmt.Errorf("broker: history %q: %w", topic, err)
	}
	page := HistoryPage{Latest: latest}
	if latest.Epoch == "" || entries == nil {
		// No meta: any stream left is from a lost epoch and will be
		// dropped by the next publish.
		return page, nil
	}
	xs := entries.Val()
	page.Messages = make([]Message, 0, len(xs))
	for _, x := range xs {
		m, err := historyMessage(topic, latest.Epoch, x)
		if err != nil {
			r.report("redis history entry", topic, err)
			return HistoryPage{}, fmt.Errorf("broker: history %q: %w", topic, err)
		}
		page.Messages = append(page.Messages, m)
	}
	if q.Limit > 0 && q.After == 0 {
		slices.Reverse(page.Messages) // XREVRANGE: newest first
	}
	return page, nil
}

// streamRange turns q's bounds into XRANGE start and stop IDs; ok is false
// when q selects nothing whatever is retained. Entry IDs are "<seq>-0", and
// XRANGE reads a bare "<n>" as "<n>-0" for a start and "<n>-max" for a stop.
func streamRange(q HistoryQuery) (start, stop string, ok bool) {
	start, stop = "-", "+"
	if q.After != 0 {
		if q.After == ^uint64(0) {
			return "", "", false
		}
		start = strconv.FormatUint(q.After+1, 10)
	}
	if q.Before != 0 {
		if q.Before == 1 || (q.After != 0 && q.After+1 > q.Before-1) {
			return "", "", false
		}
		stop = strconv.FormatUint(q.Before-1, 10)
	}
	return start, stop, true
}

// parseMeta reads HMGET meta epoch seq.
func parseMeta(vals []any) (Position, error) {
	if len(vals) != 2 {
		return Position{}, fmt.Errorf("%w: meta has %d fields", errMalformed, len(vals))
	}
	epoch, _ := vals[0].(string)
	if epoch == "" {
		return Position{}, nil
	}
	seqText, _ := vals[1].(string)
	seq, err := strconv.ParseUint(seqText, 10, 64)
	if err != nil {
		return Position{}, fmt.Errorf("%w: meta seq %q", errMalformed, seqText)
	}
	return Position{Epoch: epoch, Seq: seq}, nil
}

// historyMessage decodes one history stream entry.
func historyMessage(topic, epoch string, x redis.XMessage) (Message, error) {
	seqText, _, _ := strings.Cut(x.ID, "-")
	seq, err := strconv.ParseUint(seqText, 10, 64)
	if err != nil {
		return Message{}, fmt.Errorf("%w: entry id %q", errMalformed, x.ID)
	}
	body, _ := x.Values["p"].(string)
	pub, err := decodePublication(body)
	if err != nil {
		return Message{}, fmt.Errorf("entry %q: %w", x.ID, err)
	}
	return Message{Topic: topic, Position: Position{Epoch: epoch, Seq: seq}, Publication: pub}, nil
}

// Ping implements Broker.
func (r *Redis) Ping(ctx context.Context) error {
	if r.closed.Load() {
		return ErrClosed
	}
	if err := r.client.Ping(ctx).Err(); err != nil {
		return r.fail(ctx, "ping", "", err)
	}
	return nil
}

// Close implements Broker: it stops the receive loop and the checker,
// waits for them (so the Handler is not called once Close returns), and
// closes the connections.
func (r *Redis) Close() error {
	if !r.closed.CompareAndSwap(false, true) {
		return ErrClosed
	}
	close(r.done)
	r.cancel()            // ends fills and checks in progress
	psErr := r.ps.Close() // unblocks the receive loop's read
	<-r.loopDone
	<-r.checkDone
	if err := errors.Join(psErr, r.client.Close()); err != nil {
		return fmt.Errorf("broker: close: %w", err)
	}
	return nil
}

// acquire returns topic's subscription state, creating it, and marks it in
// use until release.
func (r *Redis) acquire(topic string) *redisSub {
	r.subsMu.Lock()
	defer r.subsMu.Unlock()
	s := r.subs[topic]
	if s == nil {
		s = &redisSub{lock: make(chan struct{}, 1)}
		r.subs[topic] = s
	}
	s.users++
	return s
}

// release ends a use begun by acquire and forgets the state of a topic
// nobody subscribes to.
func (r *Redis) release(topic string, s *redisSub) {
	r.subsMu.Lock()
	defer r.subsMu.Unlock()
	s.users--
	if s.users == 0 && !s.active.Load() {
		delete(r.subs, topic)
	}
}

// lockSub takes s.lock, giving up when ctx ends or the broker closes.
func (r *Redis) lockSub(ctx context.Context, s *redisSub) error {
	select {
	case s.lock <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-r.done:
		return ErrClosed
	}
}

// subscribeConfirmed sends SUBSCRIBE ch and returns once Redis confirmed
// it. wctx is ctx without its cancellation, for commands.
func (r *Redis) subscribeConfirmed(ctx, wctx context.Context, ch string) error {
	refusals := r.refusals.Load()
	var err error
	for range confirmAttempts {
		// When the write fails, go-redis replaces the connection before it
		// records ch, so the new connection does not resubscribe ch: send
		// SUBSCRIBE again. (SUBSCRIBE to a subscribed channel is a no-op.)
		if err = r.ps.Subscribe(wctx, ch); err == nil {
			break
		}
		if ctx.Err() != nil || r.closed.Load() {
			return err
		}
	}
	if err != nil {
		return err
	}
	if err := r.confirm(ctx); err != nil {
		return err
	}
	// Redis answers a refused SUBSCRIBE (an ACL without the channel) with
	// an error, read by the receive loop before the confirmation. Which
	// SUBSCRIBE it answered is not known: any refusal since ours was sent
	// fails it, and the caller may retry.
	if r.refusals.Load() != refusals {
		if last := r.lastRefusal.Load(); last != nil {
			return fmt.Errorf("redis refused a subscription: %w", *last)
		}
		return errors.New("redis refused a subscription")
	}
	return nil
}

// confirm returns once Redis has processed every command sent on the
// pub/sub connection before it was called (see confirmAttempts).
func (r *Redis) confirm(ctx context.Context) error {
	var err error
	for range confirmAttempts {
		token := "updraft-confirm-" + strconv.FormatUint(r.nextBarrier.Add(1), 10)
		reply := make(chan bool, 1)
		r.barrierMu.Lock()
		r.barriers[token] = reply
		r.barrierMu.Unlock()

		if err = r.ps.Ping(context.WithoutCancel(ctx), token); err == nil {
			timer := time.NewTimer(confirmTimeout)
			select {
			case ok := <-reply:
				timer.Stop()
				if ok {
					return nil
				}
				err = errors.New("pub/sub connection lost before confirmation")
				continue // the reply was lost with the connection; the barrier is gone
			case <-timer.C:
				err = fmt.Errorf("no confirmation within %v", confirmTimeout)
			case <-ctx.Done():
				err = ctx.Err()
			case <-r.done:
				err = ErrClosed
			}
			timer.Stop()
		}
		r.barrierMu.Lock()
		delete(r.barriers, token)
		r.barrierMu.Unlock()
		if ctx.Err() != nil || r.closed.Load() {
			return err
		}
	}
	return err
}

func (r *Redis) releaseBarrier(token string) {
	r.barrierMu.Lock()
	reply := r.barriers[token]
	delete(r.barriers, token)
	r.barrierMu.Unlock()
	if reply != nil {
		reply <- true // buffered: never blocks
	}
}

// dropBarriers fails every pending confirmation: their replies may have
// been lost with the connection, so they ask again.
func (r *Redis) dropBarriers() {
	r.barrierMu.Lock()
	defer r.barrierMu.Unlock()
	for token, reply := range r.barriers {
		reply <- false
		delete(r.barriers, token)
	}
}

// RegisterEventHandler implements Broker.
func (r *Redis) RegisterEventHandler(h Handler, s SignalHandler) {
	if h == nil {
		h = func(Message) {}
	}
	if s == nil {
		s = func(string, []byte) {}
	}
	r.handler, r.onSignal = h, s
}

// fail reports a foreground error and wraps it: ErrClosed once closed, the
// context's error when the caller gave up, ErrUnavailable when Redis could
// not be reached or answer, or answered that it cannot serve for now
// (LOADING after a restart and the like: see rediserr.Transient).
func (r *Redis) fail(ctx context.Context, op, topic string, err error) error {
	if r.closed.Load() {
		return ErrClosed
	}
	if ctxErr := ctx.Err(); ctxErr != nil {
		return fmt.Errorf("broker: %s %q: %w", op, topic, ctxErr)
	}
	r.metrics.error()
	var rerr redis.Error
	if (errors.As(err, &rerr) && !rediserr.Transient(err)) || errors.Is(err, errMalformed) {
		return fmt.Errorf("broker: %s %q: %w", op, topic, err) // Redis answered, with an error or garbage
	}
	return fmt.Errorf("broker: %s %q: %w: %w", op, topic, ErrUnavailable, err)
}

// report logs and counts a background error.
func (r *Redis) report(msg, topic string, err error) {
	r.log.Warn(msg, zap.String("topic", topic), zap.Error(err))
	r.metrics.error()
}
