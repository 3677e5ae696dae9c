package gateway

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/updraft/updraft/broker"
	"github.com/updraft/updraft/protocol"
)

// Rows of customers 7 and 8, as the tracker sends them.
const (
	row7 = `{"id":1,"customer_id":7,"archived_at":null}`
	row8 = `{"id":1,"customer_id":8,"archived_at":null}`
)

// tableMessage is a table event on "orders" at seq.
func tableMessage(seq uint64, event, data, old string, truncated bool) broker.Message {
	m := broker.Message{Topic: "orders", Position: broker.Position{Epoch: "e", Seq: seq},
		Publication: broker.Publication{Event: event, Data: json.RawMessage(data), Truncated: truncated}}
	if old != "" {
		m.Old = json.RawMessage(old)
	}
	return m
}

func mustFilter(t testing.TB, s string) protocol.Filter {
	t.Helper()
	f, err := protocol.ParseFilter(s)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// TestViewOf is the rule of docs/protocol.md's "Row filters", case by case:
// what a subscription filtered on customer 7 gets of each table event.
func TestViewOf(t *testing.T) {
	seven := mustFilter(t, "customer_id=eq.7")
	tests := []struct {
		name              string
		filter            protocol.Filter
		event, data, old  string
		truncated         bool
		want              view
		wantEvent         string // after apply; "" for none
		wantData, wantOld string
	}{
		{"insert passes", seven, "INSERT", row7, "", false, viewAsIs, "INSERT", row7, ""},
		{"insert fails", seven, "INSERT", row8, "", false, viewNone, "", "", ""},
		{"delete passes", seven, "DELETE", row7, row7, false, viewAsIs, "DELETE", row7, row7},
		{"delete fails", seven, "DELETE", row8, row8, false, viewNone, "", "", ""},
		{"update within", seven, "UPDATE", row7, row7, false, viewAsIs, "UPDATE", row7, row7},
		{"update enters", seven, "UPDATE", row7, row8, false, viewEnter, "INSERT", row7, ""},
		{"update leaves", seven, "UPDATE", row8, row7, false, viewLeave, "DELETE", row7, row7},
		{"update outside", seven, "UPDATE", row8, row8, false, viewNone, "", "", ""},
		{"update without old passes", seven, "UPDATE", row7, "", false, viewAsIs, "UPDATE", row7, ""},
		{"update without old fails", seven, "UPDATE", row8, "", false, viewNone, "", "", ""},
		{"old not an object", seven, "UPDATE", row7, `[]`, false, viewEnter, "INSERT", row7, ""},
		{"data not an object", seven, "UPDATE", `"x"`, row7, false, viewLeave, "DELETE", row7, row7},
		{"truncated, filter on a column it lacks", mustFilter(t, "archived_at=is.null"), "UPDATE", `{"id":1}`, "", true, viewNone, "", "", ""},
		{"truncated, forced on another tenant's column", seven, "INSERT", `{"id":1}`, "", true, viewNone, "", "", ""},
		{"truncated, filter on the key", mustFilter(t, "id=eq.1"), "UPDATE", `{"id":1}`, "", true, viewAsIs, "UPDATE", `{"id":1}`, ""},
		{"truncated, filter on the key fails", mustFilter(t, "id=eq.2"), "DELETE", `{"id":1}`, "", true, viewNone, "", "", ""},
		{"insert with an old that fails", seven, "INSERT", row7, row8, false, viewNoOld, "INSERT", row7, ""},
		{"delete with an old unlike its data that fails", seven, "DELETE", row7, row8, false, viewNoOld, "DELETE", row7, ""},
		{"delete with an old unlike its data that passes", seven, "DELETE", row7, `{"customer_id":7}`, false, viewAsIs, "DELETE", row7, `{"customer_id":7}`},
		{"unfiltered update leaving nothing", protocol.Filter{}, "UPDATE", row8, row7, false, viewAsIs, "UPDATE", row8, row7},
		{"unfiltered truncated", protocol.Filter{}, "INSERT", `{"id":1}`, "", true, viewAsIs, "INSERT", `{"id":1}`, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := tableMessage(1, tc.event, tc.data, tc.old, tc.truncated)
			rows := rowsOf(&m)
			got := rows.viewOf(tc.filter)
			if got != tc.want {
				t.Fatalf("view %d, want %d", got, tc.want)
			}
			if got == viewNone {
				return
			}
			vm := got.apply(m)
			if vm.Event != tc.wantEvent || string(vm.Data) != tc.wantData || string(vm.Old) != tc.wantOld || vm.Truncated != tc.truncated || vm.Seq != 1 {
				t.Errorf("applied: %s data %s old %s truncated %v seq %d; want %s data %s old %s",
					vm.Event, vm.Data, vm.Old, vm.Truncated, vm.Seq, tc.wantEvent, tc.wantData, tc.wantOld)
			}
			if m.Event != tc.event || string(m.Data) != tc.data {
				t.Error("apply changed the message it was given")
			}
		})
	}
}

// TestViewNeverLeaks checks the view's invariant over every combination
// of event, row versions and filter below: what a filtered subscription
// gets carries no row version its filter excludes (a truncated event's
// row must carry every column the filter names), and an unfiltered one
// gets the message unchanged.
func TestViewNeverLeaks(t *testing.T) {
	rows := []string{"", row7, row8, `{"id":1,"customer_id":null}`, `{"id":1}`, `{"id":1,"customer_id":"7"}`, `[7]`}
	filters := []string{"", "customer_id=eq.7", "customer_id=is.null", "customer_id=neq.8", "id=eq.1", "id=eq.1&customer_id=in.(7,8)"}
	for _, event := range []string{"INSERT", "UPDATE", "DELETE"} {
		for _, data := range rows[1:] {
			for _, old := range rows {
				for _, truncated := range []bool{false, true} {
					for _, fs := range filters {
						var f protocol.Filter
						if fs != "" {
							f = mustFilter(t, fs)
						}
						m := tableMessage(1, event, data, old, truncated)
						r := rowsOf(&m)
						v := r.viewOf(f)
						if v == viewNone {
							continue
						}
						got := v.apply(m)
						name := fmt.Sprintf("%s data %s old %s truncated %v filter %q", event, data, old, truncated, fs)
						if f.IsZero() {
							if v != viewAsIs {
								t.Errorf("%s: unfiltered view %d", name, v)
							}
							continue
						}
						for _, version := range []json.RawMessage{got.Data, got.Old} {
							if version == nil {
								continue
							}
							row, _ := protocol.ParseRow(version)
							if !f.Match(row) || truncated && !f.Covers(row) {
								t.Errorf("%s: delivered %s %s old %s, a version the filter excludes", name, got.Event, got.Data, got.Old)
							}
						}
						if got.Event != event && (event != "UPDATE" || got.Event != "INSERT" && got.Event != "DELETE") {
							t.Errorf("%s: %s became %s", name, event, got.Event)
						}
					}
				}
			}
		}
	}
}

// TestFilterMessagesViews: replayed history (rewind, since, history) gets
// the same view as live delivery, and the broker's slice stays untouched.
func TestFilterMessagesViews(t *testing.T) {
	msgs := []broker.Message{
		tableMessage(1, "INSERT", row8, "", false),
		tableMessage(2, "UPDATE", row7, row8, false),
		tableMessage(3, "UPDATE", row8, row7, false),
		tableMessage(4, "INSERT", `{"id":2}`, "", true),
	}
	got := filterMessages(msgs, mustFilter(t, "customer_id=eq.7"))
	var desc []string
	for _, m := range got {
		desc = append(desc, fmt.Sprintf("%d:%s:%s:%s", m.Seq, m.Event, m.Data, m.Old))
	}
	want := []string{"2:INSERT:" + row7 + ":", "3:DELETE:" + row7 + ":" + row7}
	if fmt.Sprint(desc) != fmt.Sprint(want) {
		t.Errorf("got %v, want %v", desc, want)
	}
	if msgs[1].Event != "UPDATE" || string(msgs[1].Old) != row8 || msgs[2].Event != "UPDATE" || string(msgs[2].Data) != row8 {
		t.Error("filterMessages changed the broker's messages")
	}
	if all := filterMessages(msgs, protocol.Filter{}); &all[0] != &msgs[0] {
		t.Error("without a filter the messages must pass as they are")
	}
}

// TestDeliverMovingRows: live delivery applies the view, and every
// subscriber that gets the same view shares one encoding of it.
func TestDeliverMovingRows(t *testing.T) {
	s := testServer(t, Config{AllowAnonymous: true})
	plain := fakeSessions(s, "orders", 1, 10)[0]
	filtered := func(filter string) []*session {
		var out []*session
		for i := range 2 {
			sess := &session{srv: s, id: fmt.Sprintf("s_%s_%d", filter, i), queue: busyQueue(10)}
			s.hub.add(&subscription{sess: sess, topic: "orders", filter: mustFilter(t, filter)})
			out = append(out, sess)
		}
		return out
	}
	sevens, eights := filtered("customer_id=eq.7"), filtered("customer_id=eq.8")
	s.Deliver(tableMessage(1, "UPDATE", row7, row8, false)) // from 8 to 7

	take := func(sess *session) []byte {
		t.Helper()
		items := sess.queue.take(nil).items
		if len(items) != 1 {
			t.Fatalf("%s got %d items, want 1", sess.id, len(items))
		}
		return items[0]
	}
	decode := func(frame []byte) protocol.Event {
		var ev protocol.Event
		if err := json.Unmarshal(frame, &ev); err != nil {
			t.Fatal(err)
		}
		return ev
	}
	if ev := decode(take(plain)); ev.Event != "UPDATE" || string(ev.Data) != row7 || string(ev.Old) != row8 {
		t.Errorf("unfiltered: %+v, want the UPDATE as published", ev)
	}
	in, in2 := take(sevens[0]), take(sevens[1])
	if ev := decode(in); ev.Event != "INSERT" || string(ev.Data) != row7 || ev.Old != nil || ev.Seq != 1 {
		t.Errorf("entering: %s, want an INSERT of the new row without old", in)
	}
	out, out2 := take(eights[0]), take(eights[1])
	if ev := decode(out); ev.Event != "DELETE" || string(ev.Data) != row8 || string(ev.Old) != row8 || ev.Seq != 1 {
		t.Errorf("leaving: %s, want a DELETE of the old row", out)
	}
	if &in[0] != &in2[0] || &out[0] != &out2[0] {
		t.Error("subscribers with the same view got their own copies: each view must be encoded once per node")
	}
}

// BenchmarkFanoutFilteredMoving is BenchmarkFanoutFiltered with a row
// moving from one customer to another on every message: of the 1,000
// subscribers, a tenth see it enter (an INSERT), a tenth see it leave (a
// DELETE), each variant encoded once.
func BenchmarkFanoutFilteredMoving(b *testing.B) {
	const subscribers = 1000
	s := testServer(b, Config{AllowAnonymous: true})
	var sessions []*session
	for i := 0; i < subscribers; i++ {
		sess := &session{srv: s, id: fmt.Sprintf("s_%d", i), queue: busyQueue(16)}
		s.hub.add(&subscription{sess: sess, topic: "orders", filter: mustFilter(b, fmt.Sprintf("customer_id=eq.%d", i%10))})
		sessions = append(sessions, sess)
	}
	msg := broker.Message{Topic: "orders", Position: broker.Position{Epoch: "e1", Seq: 1},
		Publication: broker.Publication{Event: "UPDATE", TS: time.Now().UnixMilli(),
			Data: json.RawMessage(`{"id":42,"customer_id":3,"status":"paid","amount":"12.50","note":null}`),
			Old:  json.RawMessage(`{"id":42,"customer_id":4,"status":"paid","amount":"12.50","note":null}`)}}
	spare := make([][]byte, 0, 16)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		msg.Seq = uint64(i + 1)
		s.Deliver(msg)
		b.StopTimer()
		spare = drain(sessions, spare)
		b.StartTimer()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/(float64(b.N)*subscribers), "ns/subscriber")
}
