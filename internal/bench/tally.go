package bench

import (
	"sync/atomic"

	"github.com/updraft/updraft/protocol"
)

// Tally keeps what one receiver has received: how many of the run's
// events, their latencies and whether they came in seq order. One reader
// goroutine calls Frame; Delivered and Ignored may be read from anywhere,
// the other methods once the reader has stopped. Every connection of a run is on one
// topic, so seqs must rise.
type Tally struct {
	// MinSent is the start of the run in Unix nanoseconds: an event sent
	// before it (a row an earlier run inserted) or without a send time is
	// not the run's, and is only counted as ignored. Set it before the
	// first Frame.
	MinSent int64

	delivered atomic.Int64
	ignored   atomic.Int64

	hist       *Histogram // allocated with the first event: idle receivers never need one
	lastSeq    uint64
	outOfOrder int64
	last       int64 // Unix nanoseconds of the last frame with an event of the run
}

// Frame takes one frame read at now (Unix nanoseconds): it splits it with
// protocol.Lines, counts and times each event of the run in it, and hands every line that is not an
// event (replies, disconnect) to other.
func (t *Tally) Frame(frame []byte, now int64, other func(line []byte)) {
	var n int64
	protocol.Lines(frame, func(line []byte) {
		if !IsEvent(line) {
			other(line)
			return
		}
		seq, sent, ok := ParseEvent(line)
		if !ok || sent < t.MinSent {
			t.ignored.Add(1)
			return
		}
		if seq <= t.lastSeq {
			t.outOfOrder++
		}
		t.lastSeq = seq
		if t.hist == nil {
			t.hist = new(Histogram)
		}
		t.hist.Record(now - sent)
		n++
	})
	if n > 0 {
		t.last = now
		t.delivered.Add(n)
	}
}

// Delivered returns how many of the run's events arrived so far.
func (t *Tally) Delivered() int64 { return t.delivered.Load() }

// Histogram returns the latencies, nil when no event arrived.
func (t *Tally) Histogram() *Histogram { return t.hist }

// OutOfOrder returns how many events came with a seq not above the one
// before: duplicates or reordering, which the server must never produce.
func (t *Tally) OutOfOrder() int64 { return t.outOfOrder }

// Ignored returns how many events were not the run's.
func (t *Tally) Ignored() int64 { return t.ignored.Load() }

// Last returns when the last frame holding an event of the run was read,
// in Unix nanoseconds, 0 when none.
func (t *Tally) Last() int64 { return t.last }
