package bench

import (
	"strings"
	"testing"

	"github.com/updraft/updraft/protocol"
)

func event(seq uint64, sent int64) []byte {
	return protocol.AppendEvent(nil, &protocol.Event{Topic: "bench/x/fanout", Event: "bench", Epoch: "e1", Seq: seq, TS: 1, Data: AppendPayload(nil, sent, 64)})
}

func frame(lines ...[]byte) []byte {
	var b []byte
	for i, l := range lines {
		if i > 0 {
			b = append(b, '\n')
		}
		b = append(b, l...)
	}
	return b
}

func TestTallyCountsTheRunsEvents(t *testing.T) {
	t.Parallel()
	const start = 1_764_170_000_000_000_000
	tl := Tally{MinSent: start}
	var others []string
	other := func(line []byte) { others = append(others, string(line)) }

	reply := []byte(`{"type":"reply","ref":"s","ok":true}`)
	tl.Frame(frame(reply, event(1, start+1_000_000)), start+3_000_000, other) // 2 ms
	tl.Frame(frame(event(2, start+2_000_000), nil, event(3, start-5)), start+6_000_000, other)
	tl.Frame(frame(event(3, start+4_000_000), event(3, start+4_000_000)), start+10_000_000, other) // a duplicate
	tl.Frame([]byte(`{"type":"event","topic":"bench/x/fanout","event":"other","epoch":"e1","seq":9,"ts":1,"data":{"text":"hi"}}`), start+11_000_000, other)

	if got := tl.Delivered(); got != 4 {
		t.Errorf("delivered %d, want 4 (seqs 1, 2, 3 and the duplicate 3)", got)
	}
	if got := tl.OutOfOrder(); got != 1 {
		t.Errorf("out of order %d, want 1", got)
	}
	if got := tl.Ignored(); got != 2 {
		t.Errorf("ignored %d, want 2 (sent before the run, and not a bench message)", got)
	}
	if len(others) != 1 || !strings.Contains(others[0], `"ref":"s"`) {
		t.Errorf("other lines %q, want the reply", others)
	}
	if tl.Last() != start+10_000_000 {
		t.Errorf("last %d, want the third frame's time", tl.Last()-start)
	}
	h := tl.Histogram()
	if h.Count() != 4 || h.Min() != 2_000_000 || h.Max() != 6_000_000 {
		t.Errorf("latencies: count %d min %d max %d, want 4, 2ms, 6ms", h.Count(), h.Min(), h.Max())
	}
}

func TestTallyWithoutEventsHasNoHistogram(t *testing.T) {
	t.Parallel()
	var tl Tally
	tl.Frame([]byte(`{"type":"reply","ref":"c","ok":true}`), 1, func([]byte) {})
	if tl.Histogram() != nil || tl.Delivered() != 0 || tl.Last() != 0 {
		t.Fatal("a receiver without events allocated a histogram or counted something")
	}
}

func BenchmarkTallyFrame(b *testing.B) {
	const start = 1_764_170_000_000_000_000
	var lines [][]byte
	for i := range 20 {
		lines = append(lines, event(uint64(i+1), start))
	}
	f := frame(lines...)
	tl := Tally{MinSent: start}
	b.ReportAllocs()
	for b.Loop() {
		tl.lastSeq = 0
		tl.Frame(f, start+1_000_000, func([]byte) {})
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*20), "ns/event")
}
