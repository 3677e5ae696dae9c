package durable

import (
	"context"
	"fmt"
	"time"

	"github.com/updraft/updraft/broker"
	"github.com/updraft/updraft/protocol"
)

// Broker wraps a broker.Broker so that persistent topics keep their
// history in a Store:
//
//   - Publish stores a message when its topic matches one of the persistent
//     patterns or the publication asks for it (Persist), after the inner
//     broker assigned its position. The store is written in batches; the
//     publish waits for it only when the publication says Durable.
//   - History and Latest read the inner broker first. Where its retained
//     history ends (trimmed to the retention, or lost with Redis's data),
//     History continues from the store, within the same epoch. When the
//     inner broker knows no epoch for the topic at all (its data was lost
//     and nothing was published since), the store's newest epoch is the
//     topic's position: for History always, for Latest on persistent
//     topics only.
//
// Everything else passes through.
type Broker struct {
	broker.Broker
	store   *Store
	persist []string // topic patterns whose every message is stored
}

var _ broker.Broker = (*Broker)(nil)

// Wrap returns inner with durable history for the topics matching persist
// (patterns as in tokens: "chat/**").
func Wrap(inner broker.Broker, store *Store, persist []string) (*Broker, error) {
	for _, p := range persist {
		if err := protocol.ValidatePattern(p); err != nil {
			return nil, fmt.Errorf("durable: persistent topic pattern: %w", err)
		}
	}
	return &Broker{Broker: inner, store: store, persist: persist}, nil
}

// Persistent reports whether every message on topic is stored.
func (b *Broker) Persistent(topic string) bool { return protocol.MatchAny(b.persist, topic) }

// Publish publishes through the inner broker, then stores the message if
// the topic is persistent or pub asks for it.
func (b *Broker) Publish(ctx context.Context, topic string, pub broker.Publication) (broker.Position, error) {
	pos, err := b.Broker.Publish(ctx, topic, pub)
	if err != nil || !(pub.Persist || pub.Durable || b.Persistent(topic)) {
		return pos, err
	}
	if pub.TS == 0 {
		// The inner broker stamped the live copy; the stored copy needs a
		// time too. The difference is the time of one publish.
		pub.TS = time.Now().UnixMilli()
	}
	m := broker.Message{Topic: topic, Position: pos, Publication: pub}
	if err := b.store.Append(ctx, m, pub.Durable); err != nil {
		return pos, fmt.Errorf("durable: published as %s/%d but not stored: %w", pos.Epoch, pos.Seq, err)
	}
	return pos, nil
}

// PublishBatch publishes through the inner broker, then stores the
// messages of persistent topics and those that ask for it, as Publish
// does; it waits for the store when any of them says Durable.
func (b *Broker) PublishBatch(ctx context.Context, items []broker.Item) ([]broker.Position, error) {
	pos, err := b.Broker.PublishBatch(ctx, items)
	now := time.Now().UnixMilli()
	for i, p := range pos {
		it := items[i]
		if !(it.Persist || it.Durable || b.Persistent(it.Topic)) {
			continue
		}
		if it.TS == 0 {
			it.TS = now // see Publish
		}
		m := broker.Message{Topic: it.Topic, Position: p, Publication: it.Publication}
		if serr := b.store.Append(ctx, m, it.Durable); serr != nil && err == nil {
			err = fmt.Errorf("durable: published as %s/%d but not stored: %w", p.Epoch, p.Seq, serr)
		}
	}
	return pos, err
}

// Latest is the inner broker's position or, for a persistent topic the
// inner broker knows nothing of, the store's. Only persistent topics ask
// the store: Latest runs on every subscribe, and most topics nobody
// published to yet are not worth a PostgreSQL round trip.
func (b *Broker) Latest(ctx context.Context, topic string) (broker.Position, error) {
	pos, err := b.Broker.Latest(ctx, topic)
	if err != nil || pos.Epoch != "" || !b.Persistent(topic) {
		return pos, err
	}
	return b.store.Latest(ctx, topic)
}

// History answers from the inner broker and continues from the store where
// the inner broker's history does not reach.
func (b *Broker) History(ctx context.Context, topic string, q broker.HistoryQuery) (broker.HistoryPage, error) {
	page, err := b.Broker.History(ctx, topic, q)
	if err != nil {
		return page, err
	}
	if page.Latest.Epoch == "" {
		if page.Latest, err = b.store.Latest(ctx, topic); err != nil || page.Latest.Epoch == "" {
			return page, err
		}
	}
	// The seqs the inner broker should have returned start at lo (or lower
	// when limited); it returned page.Messages, which begin at first.
	first := page.Latest.Seq + 1
	if len(page.Messages) > 0 {
		first = page.Messages[0].Seq
	}
	r := Range{Epoch: page.Latest.Epoch, After: q.After, Before: first}
	if q.Before > 0 && q.Before < first {
		r.Before = q.Before
	}
	switch {
	case r.Before <= r.After+1:
		return page, nil // nothing missing below what the inner broker gave
	case q.After > 0:
		// Oldest first: the store fills the start of the range, however
		// many the inner broker returned (they are the newest of the
		// range, not the oldest); the inner broker's messages follow. The
		// store reads no more than the limit: without one it would read
		// every stored message from After up to where the inner broker's
		// history begins (LIMIT 2^30), to have most of them cut off below.
		r.Limit = q.Limit
	case q.Limit > 0:
		if len(page.Messages) >= q.Limit {
			return page, nil
		}
		r.Limit = q.Limit - len(page.Messages)
	}
	older, err := b.store.Messages(ctx, topic, r)
	if err != nil {
		return page, err
	}
	page.Messages = append(older, page.Messages...)
	if q.After > 0 && q.Limit > 0 && len(page.Messages) > q.Limit {
		page.Messages = page.Messages[:q.Limit]
	}
	return page, nil
}

// Ping checks the inner broker and the store.
func (b *Broker) Ping(ctx context.Context) error {
	if err := b.Broker.Ping(ctx); err != nil {
		return err
	}
	if err := b.store.Ping(ctx); err != nil {
		return fmt.Errorf("durable: PostgreSQL unreachable: %w", err)
	}
	return nil
}
