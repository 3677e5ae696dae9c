package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestLines(t *testing.T) {
	tests := []struct {
		frame string
		want  []string
	}{
		{"", nil},
		{"a", []string{"a"}},
		{"a\nb", []string{"a", "b"}},
		{"a\n\n b \r\n", []string{"a", "b"}},
		{"\n\n\n", nil},
	}
	for _, tt := range tests {
		var got []string
		Lines([]byte(tt.frame), func(l []byte) { got = append(got, string(l)) })
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("Lines(%q) = %q, want %q", tt.frame, got, tt.want)
		}
	}
}

func TestDecodeRequest(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		wantErr error
		wantRef string
	}{
		{"connect", `{"type":"connect","ref":"1","token":"t"}`, nil, "1"},
		{"subscribe with since", `{"type":"subscribe","ref":"2","topic":"orders","since":{"epoch":"e","seq":4}}`, nil, "2"},
		{"not json", `{"type":`, ErrMalformed, ""},
		{"not an object", `[1,2]`, ErrMalformed, ""},
		{"wrong field type keeps ref", `{"type":"publish","ref":"9","topic":7}`, ErrMalformed, "9"},
		{"missing type", `{"ref":"3"}`, ErrMissingType, "3"},
		{"unknown type", `{"type":"explode","ref":"4"}`, ErrUnknownType, "4"},
		{"server type from client", `{"type":"event","ref":"4"}`, ErrUnknownType, "4"},
		{"missing ref", `{"type":"ping"}`, ErrMissingRef, ""},
		{"long ref", `{"type":"ping","ref":"` + strings.Repeat("x", 65) + `"}`, ErrMalformed, ""},
		{"invalid utf8 in ref", "{\"type\":\"ping\",\"ref\":\"\xff\"}", ErrInvalidUTF8, ""},
		{"invalid utf8 keeps ref", "{\"type\":\"publish\",\"ref\":\"8\",\"topic\":\"chat/x\",\"data\":\"\xff\xfe\"}", ErrInvalidUTF8, "8"},
		{"invalid utf8 outside strings", "{\"type\":\"ping\",\"ref\":\"8\"}\xff", ErrInvalidUTF8, ""},
		{"escaped non-ASCII is UTF-8", `{"type":"publish","ref":"8","topic":"chat/x","data":"\u00ff\ud83d\ude00"}`, nil, "8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := DecodeRequest([]byte(tt.in))
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("unexpected error %v", err)
				}
				if req.Ref != tt.wantRef {
					t.Fatalf("ref = %q, want %q", req.Ref, tt.wantRef)
				}
				return
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("error = %v, want %v", err, tt.wantErr)
			}
			var de *DecodeError
			if !errors.As(err, &de) || de.Ref != tt.wantRef {
				t.Fatalf("DecodeError ref = %+v, want %q", de, tt.wantRef)
			}
		})
	}
}

func TestAppendEventMatchesEncodingJSON(t *testing.T) {
	events := []Event{
		{Topic: "chat/general", Event: "message", Epoch: "e1", Seq: 58, TS: 1764170000123, Data: json.RawMessage(`{"text":"hi"}`)},
		{Topic: "orders", Event: "UPDATE", Epoch: "e9", Seq: 9, TS: 1, Data: json.RawMessage(`{"id":7}`), Old: json.RawMessage(`{"id":7,"s":"new"}`)},
		{Topic: "orders", Event: "INSERT", Epoch: "e9", Seq: 10, TS: 2, Data: json.RawMessage(`{"id":8}`), Truncated: true},
		{Topic: "doc/42", Event: "x", Epoch: "e", Seq: 1, From: "user \"7\"\n\t\x01<>&é\xff"},
	}
	for _, e := range events {
		got := AppendEvent(nil, &e)
		var back Event
		if err := json.Unmarshal(got, &back); err != nil {
			t.Fatalf("AppendEvent produced invalid JSON %s: %v", got, err)
		}
		want := e
		want.Type = TypeEvent
		want.From = strings.ToValidUTF8(want.From, "\ufffd")
		if !reflect.DeepEqual(back, want) {
			t.Fatalf("round trip:\n got %+v\nwant %+v", back, want)
		}
	}
}

func TestAppendEventAllocatesNothingWithCapacity(t *testing.T) {
	e := Event{Topic: "chat/general", Event: "message", Epoch: "e1", Seq: 58, TS: 1, From: "u", Data: json.RawMessage(`{"text":"hi"}`)}
	buf := make([]byte, 0, 256)
	if n := testing.AllocsPerRun(100, func() { buf = AppendEvent(buf[:0], &e) }); n != 0 {
		t.Fatalf("AppendEvent allocated %v times per call", n)
	}
}

func TestEncodeReplies(t *testing.T) {
	var r Reply
	if err := json.Unmarshal(EncodeReply("7", Position{Epoch: "e", Seq: 3}), &r); err != nil || !r.OK || r.Ref != "7" || string(r.Data) != `{"epoch":"e","seq":3}` {
		t.Fatalf("EncodeReply: %+v %v", r, err)
	}
	r = Reply{}
	if err := json.Unmarshal(EncodeError("8", CodeForbidden, "no"), &r); err != nil || r.OK || r.Error.Code != CodeForbidden {
		t.Fatalf("EncodeError: %+v %v", r, err)
	}
	var d Disconnect
	if err := json.Unmarshal(EncodeDisconnect(CloseSlowConsumer, "slow consumer"), &d); err != nil || d.Code != 4008 || !d.Reconnect || d.Type != TypeDisconnect {
		t.Fatalf("EncodeDisconnect: %+v %v", d, err)
	}
	if Reconnects(CloseProtocol) || Reconnects(CloseForbidden) || Reconnects(CloseUnauthorized) || !Reconnects(CloseDraining) {
		t.Fatal("Reconnects disagrees with the close-code table")
	}
}

// FuzzDecodeRequest feeds arbitrary frames through the decoder: it must
// never panic, and every request it accepts must survive a round trip.
func FuzzDecodeRequest(f *testing.F) {
	for _, s := range []string{
		`{"type":"connect","ref":"1","token":"abc"}`,
		`{"type":"subscribe","ref":"2","topic":"orders","filter":"a=eq.1","since":{"epoch":"e","seq":4},"presence":true}`,
		`{"type":"publish","ref":"3","topic":"chat/x","event":"m","data":{"a":[1,2,{"b":null}]}}` + "\n" + `{"type":"ping","ref":"4"}`,
		`{"type":"history","ref":"5","topic":"chat/x","before":10,"limit":5}`,
		`{"type":"track","ref":"6","topic":"doc/1","state":{"typing":true}}`,
		`{"type":`, `[]`, `null`, "\xff\xfe", `{"type":"ping","ref":""}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		Lines(frame, func(line []byte) {
			req, err := DecodeRequest(line)
			if err != nil {
				var de *DecodeError
				if !errors.As(err, &de) {
					t.Fatalf("error %v is not a DecodeError", err)
				}
				return
			}
			if req.Type == "" || req.Ref == "" {
				t.Fatalf("accepted request without type or ref: %q", line)
			}
			// MessageType's shortcut agrees with the JSON reading (a
			// repeated or escaped "type" key is JSON's last-wins, not
			// something a sender of ours writes).
			if bytes.Count(line, []byte(`"type"`)) == 1 && bytes.IndexByte(line, '\\') < 0 {
				if typ, err := MessageType(line); err != nil || typ != req.Type {
					t.Fatalf("MessageType(%q) = %q, %v; DecodeRequest read %q", line, typ, err, req.Type)
				}
			}
			enc, err := json.Marshal(&req)
			if err != nil {
				t.Fatalf("re-encoding accepted request: %v", err)
			}
			back, err := DecodeRequest(enc)
			if err != nil {
				t.Fatalf("re-decoding %s: %v", enc, err)
			}
			if back.Type != req.Type || back.Ref != req.Ref || back.Topic != req.Topic || back.Event != req.Event {
				t.Fatalf("round trip changed the request: %+v -> %+v", req, back)
			}
		})
	})
}

// TestRequestTypesDecode: every type RequestTypes lists is accepted, so the
// list a server checks its handlers against is the decoder's own.
func TestRequestTypesDecode(t *testing.T) {
	types := RequestTypes()
	if len(types) == 0 {
		t.Fatal("no request types")
	}
	for _, typ := range types {
		if _, err := DecodeRequest([]byte(`{"type":"` + typ + `","ref":"1"}`)); err != nil {
			t.Errorf("%s: %v", typ, err)
		}
	}
	types[0] = "changed"
	if RequestTypes()[0] == "changed" {
		t.Error("RequestTypes returned the list itself, not a copy")
	}
}

func TestMessageType(t *testing.T) {
	for _, tc := range []struct {
		line string
		want string
		err  error
	}{
		{`{"type":"event","topic":"a","event":"m","epoch":"e","seq":1,"ts":2}`, TypeEvent, nil},
		{`{"type":"reply","ref":"1","ok":true}`, TypeReply, nil},
		{`{"type":"presence","topic":"a","event":"join","member":{"key":"k","conn":"c","joined":1}}`, TypePresence, nil},
		{`{"type":"disconnect","code":1012,"reason":"r","reconnect":true}`, TypeDisconnect, nil},
		{`{"type":"ping","ref":"1"}`, TypePing, nil},
		{`{"ref":"1","type":"reply","ok":true}`, TypeReply, nil}, // type not first
		{`{"type":"later","x":1}`, "later", nil},                 // a later version's type
		{`{"type":"ev\u0065nt"}`, TypeEvent, nil},                // escaped
		{`{"type" : "event"}`, TypeEvent, nil},                   // spaced
		{`{"ok":true}`, "", ErrMissingType},
		{`{"type":`, "", ErrMalformed},
		{`[]`, "", ErrMalformed},
	} {
		got, err := MessageType([]byte(tc.line))
		if got != tc.want || !errors.Is(err, tc.err) {
			t.Errorf("MessageType(%s) = %q, %v; want %q, %v", tc.line, got, err, tc.want, tc.err)
		}
	}
	line := []byte(`{"type":"event","topic":"a"}`)
	if n := testing.AllocsPerRun(100, func() { _, _ = MessageType(line) }); n != 0 {
		t.Errorf("MessageType of an event allocates %v times, want 0", n)
	}
}
