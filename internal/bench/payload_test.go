package bench

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/updraft/updraft/protocol"
)

func TestAppendPayload(t *testing.T) {
	t.Parallel()
	const sent = 1764170000123456789
	for _, size := range []int{MinSize, MinSize + 1, 128, 4096} {
		b := AppendPayload([]byte("x"), sent, size)[1:]
		if len(b) != size {
			t.Errorf("size %d: %d bytes: %s", size, len(b), b)
		}
		var v struct {
			Sent int64  `json:"sent"`
			Pad  string `json:"pad"`
		}
		if err := json.Unmarshal(b, &v); err != nil || v.Sent != sent || strings.Trim(v.Pad, "x") != "" {
			t.Errorf("size %d: %s does not decode to the send time (%v)", size, b, err)
		}
	}
	if b := AppendPayload(nil, sent, 10); len(b) != MinSize {
		t.Errorf("a size below MinSize gives %d bytes, want %d", len(b), MinSize)
	}
}

// ParseEvent reads what protocol.AppendEvent writes, and a table event's
// to_jsonb row.
func TestParseEvent(t *testing.T) {
	t.Parallel()
	const sent = 1764170000123456789
	api := protocol.AppendEvent(nil, &protocol.Event{Topic: "bench/ab12/fanout", Event: "bench", Epoch: "e1", Seq: 58, TS: 1764170000123,
		Data: AppendPayload(nil, sent, 128)})
	fromClient := protocol.AppendEvent(nil, &protocol.Event{Topic: "chat/x", Event: "m", Epoch: "e1", Seq: 7, TS: 1, From: `say "sent":1`,
		Data: AppendPayload(nil, sent, 40)})
	row := protocol.AppendEvent(nil, &protocol.Event{Topic: "bench_rows", Event: "INSERT", Epoch: "e9", Seq: 12345678901, TS: 1,
		Data: []byte(`{"id": 7, "pad": "xxxx", "sent": 1764170000123456789}`)})
	tests := []struct {
		name    string
		line    string
		seq     uint64
		sent    int64
		ok      bool
		isEvent bool
	}{
		{"api", string(api), 58, sent, true, true},
		{"from before data", string(fromClient), 7, sent, true, true},
		{"table row", string(row), 12345678901, sent, true, true},
		{"foreign data", `{"type":"event","topic":"t/x","event":"e","epoch":"e1","seq":3,"ts":1,"data":{"text":"hi"}}`, 0, 0, false, true},
		{"no data", `{"type":"event","topic":"t/x","event":"e","epoch":"e1","seq":3,"ts":1}`, 0, 0, false, true},
		{"sent not a number", `{"type":"event","topic":"t/x","event":"e","epoch":"e1","seq":3,"ts":1,"data":{"sent":"soon"}}`, 0, 0, false, true},
		{"reply", `{"type":"reply","ref":"s","ok":true,"data":{"epoch":"","seq":0}}`, 0, 0, false, false},
	}
	for _, tt := range tests {
		seq, got, ok := ParseEvent([]byte(tt.line))
		if ok != tt.ok || ok && (seq != tt.seq || got != tt.sent) {
			t.Errorf("%s: ParseEvent = %d, %d, %v; want %d, %d, %v", tt.name, seq, got, ok, tt.seq, tt.sent, tt.ok)
		}
		if IsEvent([]byte(tt.line)) != tt.isEvent {
			t.Errorf("%s: IsEvent is %v", tt.name, !tt.isEvent)
		}
	}
}

func TestFind(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		b, key string
		at     int
		want   int
	}{
		{`"seq":1`, `"seq":`, 3, 0},
		{`xx"seq":1`, `"seq":`, 3, 2},
		{`q"seq"q"seq":`, `"seq":`, 3, 7},
		{`"seq"`, `"seq":`, 3, -1},
		{`"se`, `"seq":`, 3, -1},
		{``, `"seq":`, 3, -1},
		{`"ts":1,"from":"dd","data":{}`, `"data":`, 1, 19},
	} {
		if got := find([]byte(tt.b), []byte(tt.key), tt.at); got != tt.want {
			t.Errorf("find(%q, %q) = %d, want %d", tt.b, tt.key, got, tt.want)
		}
	}
}

func FuzzParseEvent(f *testing.F) {
	f.Add([]byte(`{"type":"event","seq":1,"data":{"sent":12}}`))
	f.Add([]byte(`"seq":99999999999999999999999"data":"sent": 99999999999999999999`))
	f.Fuzz(func(t *testing.T, line []byte) {
		if _, sent, ok := ParseEvent(line); ok && sent < 0 {
			t.Fatalf("negative send time from %q", line)
		}
	})
}

func BenchmarkParseEvent(b *testing.B) {
	line := protocol.AppendEvent(nil, &protocol.Event{Topic: "bench/ab12cd34/fanout", Event: "bench", Epoch: "3f9c0a7b1d2e4c55", Seq: 123456, TS: 1764170000123,
		Data: AppendPayload(nil, 1764170000123456789, 128)})
	b.ReportAllocs()
	for b.Loop() {
		ParseEvent(line)
	}
}
