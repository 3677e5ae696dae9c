package gateway

import (
	"github.com/updraft/updraft/broker"
	"github.com/updraft/updraft/protocol"
)

// Filtered views of a table.
//
// A subscription with a filter (the token's forced filters ANDed with the
// client's own) sees its table topic as a view of the table holding only
// the rows that pass the filter. It never receives a row version the
// filter excludes: for a forced filter that is row-level security, for the
// client's own a matter of correctness. For each table event:
//
//   - INSERT and DELETE: delivered when data (for DELETE the row as it was)
//     passes.
//   - UPDATE, with n = the new row (data) passes and o = the old row (old)
//     passes: n && o, delivered as it is; n && !o, the row enters the view
//     and arrives as an INSERT of the new row, without old; !n && o, the
//     row leaves the view and arrives as a DELETE shaped like the
//     tracker's, data and old both the old row; neither, not delivered. An
//     UPDATE without old is delivered, as it is, when n.
//   - A truncated event (data holds the primary key only, no old) passes
//     only when data carries every column the filter names and passes: a
//     filter on another column fails closed. It is delivered as it is.
//
// Without a filter every event arrives unchanged. viewOf owns this rule;
// live delivery (Server.Deliver) and replayed history (rewind, since,
// history: filterMessages) both go through it.

// view is what one subscription gets of one message.
type view uint8

const (
	viewNone  view = iota // nothing: the row is outside the filter
	viewAsIs              // the message as published
	viewEnter             // an UPDATE moving the row in: an INSERT of the new row
	viewLeave             // an UPDATE moving the row out: a DELETE of the old row
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

func (r *tableRows) oldRow() protocol.Row {
	if !r.oldRead {
		r.old, _ = protocol.ParseRow(r.oldJSON)
		r.oldRead = true
	}
	return r.old
}

// viewOf decides what a subscription filtered by f gets of the message.
func (r *tableRows) viewOf(f protocol.Filter) view {
	if f.IsZero() {
		return viewAsIs
	}
	n := f.Match(r.dataRow())
	switch {
	case r.truncated:
		if n && f.Covers(r.dataRow()) {
			return viewAsIs
		}
		return viewNone
	case r.event != protocol.EventUpdate || len(r.oldJSON) == 0:
		if n {
			return viewAsIs
		}
		return viewNone
	}
	o := f.Match(r.oldRow())
	switch {
	case n && o:
		return viewAsIs
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
	}
	return m
}

// viewFrames holds one message's encoded events, one per view, each
// encoded on first need: a fan-out encodes each at most once, whatever the
// number of subscribers.
type viewFrames struct {
	asIs, enter, leave []byte
}

// frame returns m as v shows it, encoded.
func (fr *viewFrames) frame(v view, m *broker.Message) []byte {
	p := &fr.asIs
	switch v {
	case viewEnter:
		p = &fr.enter
	case viewLeave:
		p = &fr.leave
	}
	if *p == nil {
		vm := v.apply(*m)
		ev := eventOf(&vm)
		*p = protocol.AppendEvent(make([]byte, 0, len(vm.Data)+len(vm.Old)+len(vm.From)+len(vm.Topic)+128), &ev)
	}
	return *p
}

// viewMessages returns what a subscription filtered by f gets of msgs, in
// order. A zero f keeps them all. msgs is left as it is: a broker may
// share it.
func viewMessages(msgs []broker.Message, f protocol.Filter) []broker.Message {
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
