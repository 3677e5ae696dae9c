package gateway

import (
	"bytes"

	"github.com/updraft/updraft/broker"
	"github.com/updraft/updraft/protocol"
)

// Filtered views of a table.
//
// A subscription with a filter (the token's forced filters ANDed with the
// client's own) sees its table topic as a view of the table holding only
// the rows that pass the filter. It never receives a row version the
// filter excludes, in data or in old: for a forced filter that is
// row-level security, for the client's own a matter of correctness. For
// each table event:
//
//   - INSERT and DELETE: delivered when data (for DELETE the row as it was)
//     passes. A DELETE's old is the same row and goes with it.
//   - UPDATE, with n = the new row (data) passes and o = the old row (old)
//     passes: n && o, delivered as it is; n && !o, the row enters the view
//     and arrives as an INSERT of the new row, without old; !n && o, the
//     row leaves the view and arrives as a DELETE shaped like the
//     tracker's, data and old both the old row; neither, not delivered. An
//     UPDATE without old is delivered, as it is, when n.
//   - A truncated event (data holds the primary key only, no old) passes
//     only when data carries every column the filter names and passes: a
//     filter on another column fails closed.
//   - Whatever the event, an old that does not pass is never sent: an
//     event other than UPDATE whose data passes but whose old does not
//     (the tracker sends none such) arrives without old.
//
// Without a filter every event arrives unchanged. tableRows.viewOf owns
// this rule; live delivery (Server.Deliver) and replayed history (rewind,
// since, history: filterMessages) both go through it.

// view is what one subscription gets of one message.
type view uint8

const (
	viewNone  view = iota // nothing: the row is outside the filter
	viewAsIs              // the message as published
	viewEnter             // an UPDATE moving the row in: an INSERT of the new row
	viewLeave             // an UPDATE moving the row out: a DELETE of the old row
	viewNoOld             // the message without its old, which the filter excludes
	numViews
)

// tableRows is one message's rows, each decoded on first need and then
// shared by every filter evaluated on the message. A row that is not a
// JSON object passes no filter.
//
// It copies what it needs of the message rather than pointing to it, so
// that a message on the stack stays there.
type tableRows struct {
	event             string
	truncated         bool
	dataJSON, oldJSON []byte
	data, old         protocol.Row
	dataRead, oldRead bool
	oldIsData         bool // old holds the same bytes as data (a DELETE)
}

func rowsOf(m *broker.Message) tableRows {
	return tableRows{event: m.Event, truncated: m.Truncated, dataJSON: m.Data, oldJSON: m.Old}
}

func (r *tableRows) dataRow() protocol.Row {
	if !r.dataRead {
		r.data, _ = protocol.ParseRow(r.dataJSON)
		r.dataRead = true
	}
	return r.data
}

// oldRow returns the old row, and whether it is data's row.
func (r *tableRows) oldRow() (protocol.Row, bool) {
	if !r.oldRead {
		if r.oldIsData = bytes.Equal(r.oldJSON, r.dataJSON); !r.oldIsData {
			r.old, _ = protocol.ParseRow(r.oldJSON)
		}
		r.oldRead = true
	}
	return r.old, r.oldIsData
}

// passes reports whether a row of the message passes f. A truncated
// event's row must also carry every column f names.
func (r *tableRows) passes(f protocol.Filter, row protocol.Row) bool {
	return f.Match(row) && (!r.truncated || f.Covers(row))
}

// viewOf decides what a subscription filtered by f gets of the message.
func (r *tableRows) viewOf(f protocol.Filter) view {
	if f.IsZero() {
		return viewAsIs
	}
	n := r.passes(f, r.dataRow())
	if len(r.oldJSON) == 0 {
		if n {
			return viewAsIs
		}
		return viewNone
	}
	o := n
	if old, same := r.oldRow(); !same {
		o = r.passes(f, old)
	}
	switch {
	case n && o:
		return viewAsIs
	case r.event != protocol.EventUpdate:
		if n {
			return viewNoOld
		}
		return viewNone
	case n:
		return viewEnter
	case o:
		return viewLeave
	}
	return viewNone
}

// apply returns m as v shows it; v is not viewNone. The result shares m's
// byte slices, which nobody modifies.
func (v view) apply(m broker.Message) broker.Message {
	switch v {
	case viewEnter:
		m.Event, m.Old = protocol.EventInsert, nil
	case viewLeave:
		m.Event, m.Data = protocol.EventDelete, m.Old
	case viewNoOld:
		m.Old = nil
	}
	return m
}

// viewFrames holds one message's encoded events, one per view, each
// encoded on first need: a fan-out encodes each at most once, whatever the
// number of subscribers.
type viewFrames [numViews][]byte

// frame returns m as v shows it, encoded.
func (fr *viewFrames) frame(v view, m *broker.Message) []byte {
	if fr[v] == nil {
		vm := v.apply(*m)
		ev := eventOf(&vm)
		fr[v] = protocol.AppendEvent(make([]byte, 0, len(vm.Data)+len(vm.Old)+len(vm.From)+len(vm.Topic)+128), &ev)
	}
	return fr[v]
}

// filterMessages returns what a subscription filtered by f gets of msgs, in
// order. A zero f keeps them all. msgs is left as it is: a broker may
// share it.
func filterMessages(msgs []broker.Message, f protocol.Filter) []broker.Message {
	if f.IsZero() {
		return msgs
	}
	var kept []broker.Message
	for i := range msgs {
		rows := rowsOf(&msgs[i])
		if v := rows.viewOf(f); v != viewNone {
			kept = append(kept, v.apply(msgs[i]))
		}
	}
	return kept
}
