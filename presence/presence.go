// Package presence keeps track of who is on a topic: one member per
// connection that tracked itself there, with its application state. It
// knows nothing of WebSockets or events: the gateway turns the joins,
// updates and leaves a Store reports into presence events.
//
// Two implementations share one contract, checked by the conformance suite
// in presence/presencetest: Memory (one process, the embedded default) and
// Redis (a cluster of nodes joined by one Redis).
package presence

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Errors returned by stores, matched with errors.Is.
var (
	// ErrClosed: the store was closed.
	ErrClosed = errors.New("presence: closed")
	// ErrUnavailable: the backing store could not be reached; the call may
	// succeed if retried.
	ErrUnavailable = errors.New("presence: unavailable")
	// ErrInvalid: an argument breaks the contract (empty topic or conn,
	// state that is not JSON, a ttl that is not positive).
	ErrInvalid = errors.New("presence: invalid argument")
)

// Member is one connection on one topic, as clients see it (protocol:
// `{"key","conn","state","joined"}`).
type Member struct {
	// Key is the token's sub, or the session id of an anonymous client: a
	// user with three tabs is three members with one key.
	Key string `json:"key"`
	// Conn is the connection's session id; unique within a topic.
	Conn string `json:"conn"`
	// State is the application's JSON, kept byte for byte (less any
	// whitespace around it); empty for none.
	State json.RawMessage `json:"state,omitempty"`
	// Joined is when the member joined, in Unix milliseconds.
	Joined int64 `json:"joined"`
}

// Entry names one membership: a connection on a topic.
type Entry struct {
	Topic string
	Conn  string
}

// Store is the contract both implementations keep.
//
// A membership lives while its expiry lies in the future. Track sets the
// expiry to now + ttl and Heartbeat pushes it further; a node that stops
// heartbeating (it died) leaves its members to expire. An expired member
// is no longer listed by Members, but stays in the store until a Sweep
// removes it and reports it: so that exactly one leave is emitted for every
// member, whether it leaves through Untrack or through expiry, each member
// is reported gone by exactly one Untrack or Sweep call, across every node
// sharing the store and however many sweep concurrently. Until it is
// swept, an expired member revived by Track or Heartbeat is live again,
// without having left (Track reports an update, not a join).
//
// "now" is the store's clock (its config's Now) everywhere but in Sweep,
// which is given it. Each topic's memberships are independent of every
// other topic's.
type Store interface {
	// Track adds conn m.Conn to topic as a member owned by node, or updates
	// it when it is a member already, and sets its expiry to now + ttl.
	// joined reports a new member; on an update Key and State are replaced
	// and Joined keeps its first value. A new member's Joined is m.Joined,
	// or now when zero. m.State, when not empty, must be valid JSON.
	Track(ctx context.Context, topic string, m Member, node string, ttl time.Duration) (joined bool, err error)

	// Untrack removes conn from topic. It returns the member removed and
	// true, or false when conn was not a member (never tracked, untracked
	// or swept already).
	Untrack(ctx context.Context, topic, conn string) (Member, bool, error)

	// Members returns topic's live members (expiry after now), ordered by
	// Joined, then by Conn.
	Members(ctx context.Context, topic string) ([]Member, error)

	// Heartbeat sets the expiry of every membership in entries to now +
	// ttl, unless it is later already. Entries that are not memberships
	// (untracked, swept, or lost with the store's data) are returned as
	// missing, in the order given: Heartbeat never adds a member, the
	// caller tracks them again if they should still be. node names the
	// caller, whose memberships entries should be; it is not checked.
	// Redis serves a Heartbeat in one pipelined round trip, however many
	// topics and members.
	Heartbeat(ctx context.Context, node string, entries []Entry, ttl time.Duration) (missing []Entry, err error)

	// Sweep removes topic's members whose expiry is not after now and
	// returns them, ordered like Members. Each is returned by exactly one
	// Sweep (or Untrack) call, across nodes and concurrent callers.
	Sweep(ctx context.Context, topic string, now time.Time) ([]Member, error)

	// Close releases the store's resources. Later calls fail with
	// ErrClosed.
	Close() error
}

// sortMembers orders ms by Joined, then Conn.
func sortMembers(ms []Member) {
	slices.SortFunc(ms, func(a, b Member) int {
		if a.Joined != b.Joined {
			if a.Joined < b.Joined {
				return -1
			}
			return 1
		}
		return strings.Compare(a.Conn, b.Conn)
	})
}

// checkTrack validates Track's arguments and returns the state to store:
// m.State less surrounding whitespace, in a copy the caller cannot change.
func checkTrack(topic string, m Member, ttl time.Duration) (json.RawMessage, error) {
	if topic == "" || m.Conn == "" {
		return nil, fmt.Errorf("%w: empty topic or conn", ErrInvalid)
	}
	if ttl <= 0 {
		return nil, fmt.Errorf("%w: ttl %v is not positive", ErrInvalid, ttl)
	}
	state := bytes.TrimSpace(m.State)
	if len(state) == 0 {
		return nil, nil
	}
	if !json.Valid(state) {
		return nil, fmt.Errorf("%w: state of %q is not valid JSON", ErrInvalid, m.Conn)
	}
	return bytes.Clone(state), nil
}

// expiryOf returns now + ttl in Unix milliseconds, at least one more than
// now so that a positive ttl always makes a live member.
func expiryOf(now time.Time, ttl time.Duration) int64 {
	return now.UnixMilli() + max(ttl.Milliseconds(), 1)
}
