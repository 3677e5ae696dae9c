// Package durable keeps the messages of persistent topics in PostgreSQL, past
// the broker's retention and across a loss of Redis's data. Store is the
// table and its batched writer; Broker wraps any broker.Broker so that
// publishing to a persistent topic also stores the message, and History
// reaches back into PostgreSQL where the broker's own history ends.
//
// Writes are batched off the hot path: a publish never waits for PostgreSQL
// unless it asks to (Publication.Durable).
package durable

import (
	"context"
	"database/sql"
	_ "embed"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/lib/pq"
	"go.uber.org/zap"

	"github.com/updraft/updraft/broker"
	"github.com/updraft/updraft/internal/backoff"
	"github.com/updraft/updraft/internal/pgmigrate"
)

// Errors, matched with errors.Is.
var (
	ErrClosed      = errors.New("durable: closed")
	ErrBacklogFull = errors.New("durable: write backlog full")
)

//go:embed schema.sql
var schema string

// Config configures Open. The zero value of a field means its default.
type Config struct {
	// URL is the PostgreSQL connection URL (postgres://user:pass@host/db). Required.
	URL string
	// Retention is how long stored messages are kept (default 30 days).
	Retention time.Duration
	// BatchSize is the most messages one INSERT carries (default 500).
	BatchSize int
	// FlushInterval is the longest a message waits in the batch (default 50ms).
	FlushInterval time.Duration
	// Backlog is how many messages may wait for PostgreSQL before Append
	// blocks its caller (default 100000).
	Backlog int
	// Logger (default: none).
	Logger *zap.Logger
	// OnError, when set, is called with every PostgreSQL error. It must not block.
	OnError func(error)
}

// Defaults for Config.
const (
	DefaultRetention     = 30 * 24 * time.Hour
	DefaultBatchSize     = 500
	DefaultFlushInterval = 50 * time.Millisecond
	DefaultBacklog       = 100000
)

// Store is the durable message table with its batched writer.
type Store struct {
	db  *sql.DB
	cfg Config
	log *zap.Logger

	queue chan pending // the backlog; read only by the writer goroutine

	closeOnce sync.Once
	done      chan struct{} // closed by Close
	stopped   chan struct{} // closed when the writer and janitor have returned
}

// pending is a message waiting for the writer; done, when not nil, hears
// the outcome of its batch.
type pending struct {
	msg  broker.Message
	done chan error
}

// Open connects, runs the idempotent migration and starts the writer.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	if cfg.URL == "" {
		return nil, errors.New("durable: Config.URL is required")
	}
	if cfg.Retention <= 0 {
		cfg.Retention = DefaultRetention
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = DefaultBatchSize
	}
	if cfg.FlushInterval <= 0 {
		cfg.FlushInterval = DefaultFlushInterval
	}
	if cfg.Backlog <= 0 {
		cfg.Backlog = DefaultBacklog
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	db, err := sql.Open("postgres", cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("durable: Config.URL: %w", err)
	}
	db.SetMaxOpenConns(8)
	if err := pgmigrate.Run(ctx, db, "durable", schema); err != nil {
		db.Close()
		return nil, err
	}
	s := &Store{
		db: db, cfg: cfg, log: cfg.Logger,
		queue:   make(chan pending, cfg.Backlog),
		done:    make(chan struct{}),
		stopped: make(chan struct{}),
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); s.writer() }()
	go func() { defer wg.Done(); s.janitor() }()
	go func() { wg.Wait(); close(s.stopped) }()
	return s, nil
}

// Append queues m for the next batch. It returns at once unless the
// backlog is full (PostgreSQL down or too slow for long), in which case it
// waits for room until ctx ends. With wait, it returns only when m's batch
// is stored, or failed.
func (s *Store) Append(ctx context.Context, m broker.Message, wait bool) error {
	p := pending{msg: m}
	if wait {
		p.done = make(chan error, 1)
	}
	select {
	case <-s.done:
		return ErrClosed
	default:
	}
	select {
	case s.queue <- p:
	case <-s.done:
		return ErrClosed
	case <-ctx.Done():
		return fmt.Errorf("%w: %v", ErrBacklogFull, ctx.Err())
	}
	if !wait {
		return nil
	}
	select {
	case err := <-p.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// writer drains the backlog in batches of up to BatchSize, at least every
// FlushInterval. A failed batch is retried with backoff until it is stored
// or the store is closed: nothing queued is dropped while the process lives.
func (s *Store) writer() {
	batch := make([]pending, 0, s.cfg.BatchSize)
	for {
		select {
		case p := <-s.queue:
			batch = append(batch, p)
		case <-s.done:
			s.drain(batch)
			return
		}
		// Gather what else comes, up to the batch size or the interval.
		deadline := time.NewTimer(s.cfg.FlushInterval)
	gather:
		for len(batch) < s.cfg.BatchSize {
			select {
			case p := <-s.queue:
				batch = append(batch, p)
			case <-deadline.C:
				break gather
			case <-s.done:
				break gather
			}
		}
		deadline.Stop()
		s.storeRetrying(batch)
		clear(batch)
		batch = batch[:0]
	}
}

// drain stores what is queued at Close, trying once.
func (s *Store) drain(batch []pending) {
	for {
		select {
		case p := <-s.queue:
			batch = append(batch, p)
			continue
		default:
		}
		break
	}
	for len(batch) > 0 {
		n := min(len(batch), s.cfg.BatchSize)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := s.insert(ctx, batch[:n])
		cancel()
		if err != nil {
			s.log.Error("durable: messages not stored at shutdown", zap.Int("messages", len(batch)), zap.Error(err))
		}
		notify(batch[:n], err)
		batch = batch[n:]
	}
}

// Backoff of a failed batch (internal/backoff, full jitter).
const (
	minRetryBackoff = 50 * time.Millisecond
	maxRetryBackoff = 5 * time.Second
)

// storeRetrying stores batch, retrying with backoff until it is stored or
// the store is closed, and tells each message's waiter.
func (s *Store) storeRetrying(batch []pending) {
	bo := backoff.Backoff{Policy: backoff.Policy{Min: minRetryBackoff, Max: maxRetryBackoff}}
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := s.insert(ctx, batch)
		cancel()
		if err == nil {
			notify(batch, nil)
			return
		}
		s.report(err)
		d := bo.Next()
		s.log.Warn("durable: storing a batch failed, retrying", zap.Int("messages", len(batch)), zap.Duration("backoff", d), zap.Error(err))
		if !backoff.Sleep(s.done, d) {
			notify(batch, err)
			return
		}
	}
}

func notify(batch []pending, err error) {
	for _, p := range batch {
		if p.done != nil {
			p.done <- err
		}
	}
}

func (s *Store) report(err error) {
	if s.cfg.OnError != nil {
		s.cfg.OnError(err)
	}
}

// insert stores a batch in one statement; a message stored before (same
// topic, epoch and seq) is left as it is, so retries are harmless.
func (s *Store) insert(ctx context.Context, batch []pending) error {
	n := len(batch)
	topics, epochs, events, senders := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	seqs, tss := make([]int64, n), make([]int64, n)
	datas, olds := make(pq.ByteaArray, n), make(pq.ByteaArray, n)
	for i, p := range batch {
		m := &p.msg
		topics[i], epochs[i], events[i], senders[i] = m.Topic, m.Epoch, m.Event, m.From
		seqs[i], tss[i] = int64(m.Seq), m.TS
		datas[i], olds[i] = m.Data, m.Old
	}
	_, err := s.db.ExecContext(ctx, `
		INSERT INTO updraft.messages (topic, epoch, seq, event, sender, ts, data, old)
		SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::bigint[], $7::bytea[], $8::bytea[])
		ON CONFLICT DO NOTHING`,
		pq.Array(topics), pq.Array(epochs), pq.Array(seqs), pq.Array(events), pq.Array(senders), pq.Array(tss), datas, olds)
	if err != nil {
		return fmt.Errorf("durable: storing %d messages: %w", n, err)
	}
	return nil
}

// Range selects stored messages of one topic and epoch: seq > After (when
// non-zero) and seq < Before (when non-zero). With After the oldest Limit
// are returned, otherwise the newest; always ascending by seq. A zero Limit
// reads every row in the range: callers that serve clients bound the range
// or set a limit.
type Range struct {
	Epoch         string
	After, Before uint64
	Limit         int
}

// Messages returns the stored messages of topic in r.
func (s *Store) Messages(ctx context.Context, topic string, r Range) ([]broker.Message, error) {
	before := int64(r.Before)
	if r.Before == 0 {
		before = 1<<63 - 1
	}
	limit := r.Limit
	if limit <= 0 {
		limit = 1 << 30
	}
	order := "DESC"
	if r.After > 0 {
		order = "ASC"
	}
	rows, err := s.db.QueryContext(ctx, `
		SELECT seq, event, sender, ts, data, old FROM updraft.messages
		WHERE topic = $1 AND epoch = $2 AND seq > $3 AND seq < $4
		ORDER BY seq `+order+` LIMIT $5`, topic, r.Epoch, int64(r.After), before, limit)
	if err != nil {
		s.report(err)
		return nil, fmt.Errorf("durable: reading %s: %w", topic, err)
	}
	defer rows.Close()
	var out []broker.Message
	for rows.Next() {
		m := broker.Message{Topic: topic, Position: broker.Position{Epoch: r.Epoch}}
		var seq int64
		if err := rows.Scan(&seq, &m.Event, &m.From, &m.TS, &m.Data, &m.Old); err != nil {
			return nil, fmt.Errorf("durable: reading %s: %w", topic, err)
		}
		m.Seq = uint64(seq)
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		s.report(err)
		return nil, fmt.Errorf("durable: reading %s: %w", topic, err)
	}
	if order == "DESC" {
		for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
			out[i], out[j] = out[j], out[i]
		}
	}
	return out, nil
}

// Latest returns topic's latest stored position: the highest seq of the
// epoch stored last, or the zero Position when none is stored.
func (s *Store) Latest(ctx context.Context, topic string) (broker.Position, error) {
	var pos broker.Position
	var seq int64
	// The newest epoch is the one stored last; its latest position is its
	// highest seq, not the seq stored last: nodes store their batches
	// independently, so a node's batch of lower seqs can land after
	// another's higher ones.
	err := s.db.QueryRowContext(ctx, `
		SELECT epoch, max(seq) FROM updraft.messages
		WHERE topic = $1 AND epoch = (
			SELECT epoch FROM updraft.messages WHERE topic = $1 ORDER BY stored_at DESC LIMIT 1)
		GROUP BY epoch`, topic).Scan(&pos.Epoch, &seq)
	if errors.Is(err, sql.ErrNoRows) {
		return broker.Position{}, nil
	}
	if err != nil {
		s.report(err)
		return pos, fmt.Errorf("durable: reading %s: %w", topic, err)
	}
	pos.Seq = uint64(seq)
	return pos, nil
}

// Ping reports whether PostgreSQL answers.
func (s *Store) Ping(ctx context.Context) error { return s.db.PingContext(ctx) }

// janitor deletes messages older than the retention, in small batches so
// that it never holds long locks, every minute and once at start.
func (s *Store) janitor() {
	tick := time.NewTicker(time.Minute)
	defer tick.Stop()
	for {
		s.expire()
		select {
		case <-tick.C:
		case <-s.done:
			return
		}
	}
}

func (s *Store) expire() {
	cutoff := time.Now().Add(-s.cfg.Retention)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		res, err := s.db.ExecContext(ctx, `
			DELETE FROM updraft.messages WHERE ctid IN (
				SELECT ctid FROM updraft.messages WHERE stored_at < $1 LIMIT 1000)`, cutoff)
		cancel()
		if err != nil {
			s.report(err)
			s.log.Warn("durable: deleting expired messages", zap.Error(err))
			return
		}
		if n, _ := res.RowsAffected(); n < 1000 {
			return
		}
		select {
		case <-s.done:
			return
		default:
		}
	}
}

// Close stores what is queued (trying once), stops the writer and closes
// the connections.
func (s *Store) Close() error {
	s.closeOnce.Do(func() { close(s.done) })
	<-s.stopped
	return s.db.Close()
}
