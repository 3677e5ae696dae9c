// Package protocol holds Updraft's wire contract, version 1: the messages a
// client and a gateway exchange over one WebSocket, their codec, and the
// topic, event-name and permission-pattern grammar. It imports nothing of
// Updraft's own, so the gateway and every Go client share one definition.
//
// docs/protocol.md describes the same contract in prose.
package protocol

import "encoding/json"

// Subprotocol is the WebSocket subprotocol a v1 client offers and the server
// selects. A client that offers none is treated as v1.
const Subprotocol = "updraft.v1"

// Message types. The first group travels from client to server and always
// carries a ref; the second travels from server to client.
const (
	TypeConnect     = "connect"
	TypeRefresh     = "refresh"
	TypePing        = "ping"
	TypeSubscribe   = "subscribe"
	TypeUnsubscribe = "unsubscribe"
	TypePublish     = "publish"
	TypeTrack       = "track"
	TypeUntrack     = "untrack"
	TypeMembers     = "members"
	TypeHistory     = "history"

	TypeReply      = "reply"
	TypeEvent      = "event"
	TypePresence   = "presence"
	TypeDisconnect = "disconnect"
)

// Error codes carried by a failed reply and by HTTP API errors.
const (
	CodeBadRequest   = "bad_request"
	CodeUnauthorized = "unauthorized"
	CodeForbidden    = "forbidden"
	CodeNotFound     = "not_found"
	CodeTooLarge     = "too_large"
	CodeRateLimited  = "rate_limited"
	CodeUnavailable  = "unavailable"
	CodeInternal     = "internal"
)

// WebSocket close codes the server uses. 1000, 1001, 1003, 1009 and 1012
// are the standard ones; the 4000 range is Updraft's own.
const (
	CloseNormal          = 1000
	CloseGoingAway       = 1001
	CloseUnsupportedData = 1003
	CloseTooBig          = 1009
	CloseDraining        = 1012
	CloseProtocol        = 4000
	CloseUnauthorized    = 4001
	CloseForbidden       = 4003
	CloseSlowConsumer    = 4008
	CloseRateLimited     = 4029
)

// Position is a message's place in its topic: the epoch names the topic's
// current history stream, seq counts from 1 within it.
type Position struct {
	Epoch string `json:"epoch"`
	Seq   uint64 `json:"seq"`
}

// Request is any client-to-server message. Each type uses a subset of the
// fields; the rest stay zero.
type Request struct {
	Type string `json:"type"`
	Ref  string `json:"ref"`

	// connect, refresh
	Token string `json:"token,omitempty"`
	SDK   string `json:"sdk,omitempty"`

	// subscribe, unsubscribe, publish, track, untrack, members, history
	Topic string `json:"topic,omitempty"`

	// subscribe
	Filter   string    `json:"filter,omitempty"`
	Since    *Position `json:"since,omitempty"`
	Rewind   int       `json:"rewind,omitempty"`
	Presence bool      `json:"presence,omitempty"`

	// publish
	Event   string          `json:"event,omitempty"`
	Data    json.RawMessage `json:"data,omitempty"`
	Persist bool            `json:"persist,omitempty"`

	// track
	State json.RawMessage `json:"state,omitempty"`

	// history
	Before uint64 `json:"before,omitempty"`
	Limit  int    `json:"limit,omitempty"`
}

// Reply answers exactly one request, matched by Ref.
type Reply struct {
	Type  string          `json:"type"`
	Ref   string          `json:"ref,omitempty"`
	OK    bool            `json:"ok"`
	Data  json.RawMessage `json:"data,omitempty"`
	Error *Error          `json:"error,omitempty"`
}

// Error is the error object of a failed reply or HTTP API call.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// Event is a message published on a topic, as delivered to subscribers.
type Event struct {
	Type  string          `json:"type"`
	Topic string          `json:"topic"`
	Event string          `json:"event"`
	Epoch string          `json:"epoch"`
	Seq   uint64          `json:"seq"`
	TS    int64           `json:"ts"`
	From  string          `json:"from,omitempty"`
	Data  json.RawMessage `json:"data,omitempty"`
	Old   json.RawMessage `json:"old,omitempty"`
	// Truncated marks a table event whose row was too large to send: Data
	// holds only the row's primary key columns, and Old is absent.
	Truncated bool `json:"truncated,omitempty"`
}

// Position returns the event's position.
func (e *Event) Position() Position { return Position{Epoch: e.Epoch, Seq: e.Seq} }

// Disconnect is the last message before a server-initiated close.
type Disconnect struct {
	Type      string `json:"type"`
	Code      int    `json:"code"`
	Reason    string `json:"reason"`
	Reconnect bool   `json:"reconnect"`
}

// ConnectResult is the data of a successful connect reply.
type ConnectResult struct {
	Session    string `json:"session"`
	Node       string `json:"node"`
	Heartbeat  int    `json:"heartbeat"`
	MaxMessage int    `json:"max_message"`
}

// SubscribeResult is the data of a successful subscribe reply. Seq is the
// topic's latest position when the subscription became active.
type SubscribeResult struct {
	Epoch     string `json:"epoch"`
	Seq       uint64 `json:"seq"`
	Recovered bool   `json:"recovered"`
	// Members is the topic's presence list when the subscribe asked for
	// presence: then always present, [] for an empty topic (the server
	// sets a non-nil slice); absent (nil) otherwise.
	Members []Member `json:"members,omitzero"`
}

// Member is one connection present on one topic.
type Member struct {
	// Key is the token's sub, or the session id of an anonymous client: a
	// user with three tabs is three members with one key.
	Key string `json:"key"`
	// Conn is the connection's session id.
	Conn string `json:"conn"`
	// State is the application's JSON object; absent for none.
	State json.RawMessage `json:"state,omitempty"`
	// Joined is when the member joined, in Unix milliseconds.
	Joined int64 `json:"joined"`
}

// Presence events.
const (
	PresenceJoin   = "join"
	PresenceUpdate = "update"
	PresenceLeave  = "leave"
)

// PresenceEvent tells a subscriber that asked for presence that a member
// joined, updated its state or left.
type PresenceEvent struct {
	Type   string `json:"type"` // TypePresence
	Topic  string `json:"topic"`
	Event  string `json:"event"` // PresenceJoin, PresenceUpdate or PresenceLeave
	Member Member `json:"member"`
}

// MembersResult is the data of a members reply and the answer of
// GET /api/v1/presence.
type MembersResult struct {
	Members []Member `json:"members"`
}

// HistoryResult is the data of a history reply (and the answer of
// GET /api/v1/history): messages ascending by seq, all of Epoch.
type HistoryResult struct {
	Epoch    string           `json:"epoch"`
	Messages []HistoryMessage `json:"messages"`
}

// HistoryMessage is one retained message in a HistoryResult.
type HistoryMessage struct {
	Seq   uint64          `json:"seq"`
	Event string          `json:"event"`
	TS    int64           `json:"ts"`
	From  string          `json:"from,omitempty"`
	Data  json.RawMessage `json:"data,omitempty"`
	Old   json.RawMessage `json:"old,omitempty"`
	// Truncated: as in Event.
	Truncated bool `json:"truncated,omitempty"`
}

// Reconnects reports whether a client may reconnect as it is after the
// server closed with code. After 4001 it may reconnect only with a new token,
// so the answer for 4001 is false.
func Reconnects(code int) bool {
	switch code {
	case CloseProtocol, CloseUnauthorized, CloseForbidden, CloseUnsupportedData:
		return false
	}
	return true
}
