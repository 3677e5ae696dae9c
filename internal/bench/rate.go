package bench

import (
	"math"
	"time"
)

// PerSecond returns count per second over elapsed, 0 when elapsed is not
// positive.
func PerSecond(count float64, elapsed time.Duration) float64 {
	if elapsed <= 0 {
		return 0
	}
	return count / elapsed.Seconds()
}

// Fraction returns got/want, and false when want is 0 (nothing was
// expected, so no fraction is meaningful).
func Fraction(got, want int64) (float64, bool) {
	if want == 0 {
		return 0, false
	}
	return float64(got) / float64(want), true
}

// Pacer spreads messages evenly at a fixed rate from Start: message i
// (counting from 0) is due at Start + i/Rate, rounded up to the next
// nanosecond. A publisher that falls behind sends everything due at once,
// so the average rate holds as long as the machine allows it. Rate must be
// positive.
type Pacer struct {
	Start time.Time
	Rate  float64 // messages per second
}

// At returns when message i is due.
func (p Pacer) At(i int64) time.Time {
	return p.Start.Add(time.Duration(math.Ceil(float64(i) * 1e9 / p.Rate)))
}

// Due returns how many messages are due at t: those with At(i) <= t, so 1
// at Start and none before.
func (p Pacer) Due(t time.Time) int64 {
	elapsed := t.Sub(p.Start)
	if elapsed < 0 {
		return 0
	}
	// The float estimate is within one message of the count; correct it
	// so that Due agrees with At exactly.
	n := int64(math.Floor(elapsed.Seconds()*p.Rate)) + 1
	for !p.At(n).After(t) {
		n++
	}
	for n > 0 && p.At(n-1).After(t) {
		n--
	}
	return n
}

// Planned returns how many messages a run of d at rate sends, those due
// before d ends, capped at limit when limit is positive.
func Planned(rate float64, d time.Duration, limit int64) int64 {
	var start time.Time
	n := Pacer{Start: start, Rate: rate}.Due(start.Add(d - 1))
	if limit > 0 {
		n = min(n, limit)
	}
	return n
}
