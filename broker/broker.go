// Package broker moves messages between the gateway nodes of a cluster and
// gives every message on a topic its position. It knows nothing of
// WebSockets: a node publishes through its Broker and receives, through one
// Handler, the messages of the topics it has subscribed to.
//
// Two implementations share one contract, checked by the conformance suite
// in broker/brokertest: Memory (one process, the embedded default) and Redis
// (a cluster of nodes joined by one Redis).
package broker

import (
	"context"
	"encoding/json"
	"errors"
	"time"
)

// Errors returned by brokers, matched with errors.Is.
var (
	// ErrClosed: the broker was closed.
	ErrClosed = errors.New("broker: closed")
	// ErrUnavailable: the backing store could not be reached; the call may
	// succeed if retried.
	ErrUnavailable = errors.New("broker: unavailable")
	// ErrNotSubscribed: Unsubscribe without a matching Subscribe.
	ErrNotSubscribed = errors.New("broker: not subscribed")
)

// Position is a message's place in its topic. Epoch names the topic's current
// history stream and changes when that history was lost; Seq counts from 1
// within an epoch, without gaps.
type Position struct {
	Epoch string
	Seq   uint64
}

// Publication is what a publisher hands to the broker.
type Publication struct {
	Event string
	// Data and Old are valid JSON (Old may be empty). The broker passes them
	// through byte for byte.
	Data json.RawMessage
	Old  json.RawMessage
	// From is the publishing client's identity; empty for server emits.
	From string
	// TS is the publish time in Unix milliseconds; zero means now.
	TS int64
	// Truncated marks a table event whose row was too large to send: Data
	// holds only the row's primary key (see package tracker).
	Truncated bool
	// Persist asks a durable wrapper (package durable) to store the message
	// in PostgreSQL too; Durable also makes Publish wait until it is
	// stored. Brokers themselves ignore both, and neither travels with the
	// message.
	Persist, Durable bool
}

// Item is one message of a batch (Broker.PublishBatch,
// Coordinator.PublishFenced): a publication and its topic.
type Item struct {
	Topic string
	Publication
}

// Message is a publication with its topic and position, as delivered to a
// Handler and returned by History.
type Message struct {
	Topic string
	Position
	Publication
}

// SignalHandler receives the signals (see Broker.Signal) of every topic the
// node has subscribed to. It must not block; payload is the handler's to
// keep.
type SignalHandler func(topic string, payload []byte)

// Handler receives the messages of every topic the node has subscribed to.
// It is called from the broker's delivery goroutines, for one topic never
// concurrently and always in seq order (see Broker), and must not block: it
// hands the message on and returns. The Message and its byte slices are the
// handler's to keep.
type Handler func(Message)

// HistoryQuery selects retained messages of one topic.
type HistoryQuery struct {
	// Before, when non-zero, returns only messages with seq < Before.
	Before uint64
	// After, when non-zero, returns only messages with seq > After.
	After uint64
	// Limit caps the number of messages; zero means no cap. With After the
	// oldest are kept, otherwise the newest.
	Limit int
}

// HistoryPage is a query's answer: messages ascending by seq, all of the
// topic's current epoch, and the topic's latest position.
type HistoryPage struct {
	Latest   Position
	Messages []Message
}

// Broker is the contract both implementations keep.
//
// Ordering and atomicity: Publish assigns the topic's next seq, appends the
// message to the topic's retained history and delivers it to every
// subscribed node as one atomic step; history and the live stream never
// disagree, and each node's Handler sees a topic's messages in seq order.
//
// Delivery is exactly once and in order per node. For each subscribed
// topic, from the first message the node's Handler receives after
// Subscribe (at the latest, the first published after Subscribe returned)
// until the last Unsubscribe, the Handler receives every message of the
// topic's current epoch, once each and in seq order, whatever happens to
// the connection to the store meanwhile: an implementation whose live
// stream can lose messages detects the jump and fills it from history
// before it delivers anything later. A missing message that history no
// longer holds (trimmed past Retention.Size, or expired) cannot be filled:
// the implementation reports the gap and delivery continues, in order,
// with the next message it has. When the topic starts a new epoch,
// delivery moves to it (from its seq 1 on); the old epoch's messages not
// delivered by then are lost with its history, which the new epoch in the
// delivered positions makes plain. Callers need not fill gaps themselves:
// a jump in the seqs delivered means history had lost the messages.
// History serves clients that catch up from a position of their own.
type Broker interface {
	// Publish assigns pub the next position on topic and delivers it.
	// A nil error means the message is in history and on its way to every
	// subscribed node.
	Publish(ctx context.Context, topic string, pub Publication) (Position, error)

	// PublishBatch publishes items in order, each as Publish would, in as
	// few round trips to the store as it can (Redis: one script call, so
	// the batch is published whole or not at all). The positions are in
	// the order of items.
	PublishBatch(ctx context.Context, items []Item) ([]Position, error)

	// RegisterEventHandler sets the Handler and SignalHandler that receive
	// the messages and signals of subscribed topics; until it is called,
	// and for a nil one, they are discarded. The node that delivers to them
	// is built after its broker, so it registers itself once built
	// (centrifuge's RegisterBrokerEventHandler): call it once, before the
	// first Subscribe, since delivery reads them without a lock.
	RegisterEventHandler(h Handler, s SignalHandler)

	// Subscribe makes this node receive topic's messages through its Handler.
	// Calls are reference counted: the node stays subscribed until every
	// Subscribe has had its Unsubscribe, and the store sees one subscription
	// per topic per node however many callers there are. When Subscribe
	// returns nil the subscription is active: every message published after
	// that is delivered. Concurrent Subscribe and Unsubscribe on one topic
	// are safe and leave the store subscribed exactly when the count is
	// positive.
	Subscribe(ctx context.Context, topic string) error

	// Unsubscribe drops one reference taken by Subscribe. It returns
	// ErrNotSubscribed when there is none.
	Unsubscribe(ctx context.Context, topic string) error

	// Latest returns topic's current position: its epoch, and the seq of its
	// newest message. A topic without an epoch (never published, or its
	// history expired or was lost) returns the zero Position, empty epoch
	// and seq 0; its next publish starts a new epoch at seq 1.
	Latest(ctx context.Context, topic string) (Position, error)

	// History returns retained messages of topic's current epoch.
	History(ctx context.Context, topic string, q HistoryQuery) (HistoryPage, error)

	// Signal sends payload to every node subscribed to topic, the caller's
	// included, through their SignalHandler: no position, no history, at
	// most once (a node whose connection to the store is down misses it).
	// A node receives a topic's signals in the order they were sent, in
	// line with its messages. Presence events travel this way: they must
	// not take a topic's seqs, and the presence store is their truth.
	Signal(ctx context.Context, topic string, payload []byte) error

	// Ping reports whether the backing store is reachable.
	Ping(ctx context.Context) error

	// Close stops delivery and releases connections. Later calls fail with
	// ErrClosed.
	Close() error
}

// Retention bounds a topic's history. The zero value of a field means its
// default.
type Retention struct {
	// Size is the number of messages kept per topic (default 1000).
	Size int
	// TTL is how long a topic's history lives after its last publish
	// (default 24h). When it lapses the topic starts a new epoch.
	TTL time.Duration
}

// Defaults for Retention.
const (
	DefaultHistorySize = 1000
	DefaultHistoryTTL  = 24 * time.Hour
)

func (r Retention) withDefaults() Retention {
	if r.Size <= 0 {
		r.Size = DefaultHistorySize
	}
	if r.TTL <= 0 {
		r.TTL = DefaultHistoryTTL
	}
	return r
}

// nowMillis is the default publish time.
func nowMillis() int64 { return time.Now().UnixMilli() }
