// Package backoff owns the pacing of every retry loop in Updraft: the Go
// client's reconnects and retries, the Redis broker's pub/sub receive loop,
// the durable writer and the tracker. They all wait the same way:
// exponential backoff with full jitter. The ceiling of attempt n (0 for the
// first) is min(Max, Min·2ⁿ), and the wait is random in [0, ceiling], so
// that nodes and clients that failed together do not retry together.
//
// A Policy computes the wait of a given attempt; a Backoff counts the
// attempts of one loop; Sleep waits, ending early when the loop's owner
// stops it. The package depends on the standard library only, so the
// client SDK may import it.
package backoff

import (
	"math"
	"math/rand/v2"
	"time"
)

// Policy is an exponential backoff with full jitter. The zero Rand means
// math/rand/v2.
type Policy struct {
	// Min is the ceiling of the first attempt; it doubles with each
	// attempt up to Max. A Min of zero (or less) never waits; a Max below
	// Min caps every attempt at Max.
	Min, Max time.Duration
	// Rand returns a random int64 in [0, n) for n > 0; tests replace it.
	// Nil means math/rand/v2's Int64N.
	Rand func(n int64) int64
}

// Ceiling returns the longest wait of attempt n (0 for the first, a
// negative n counts as 0): min(Max, Min·2ⁿ), without overflow for any n.
func (p Policy) Ceiling(n int) time.Duration {
	ceil := p.Min
	if ceil <= 0 {
		return 0
	}
	for i := 0; i < n && ceil < p.Max; i++ {
		if ceil > p.Max/2 {
			ceil = p.Max
			break
		}
		ceil *= 2
	}
	return min(ceil, p.Max)
}

// Delay returns the wait before attempt n (0 for the first): a random
// duration in [0, Ceiling(n)].
func (p Policy) Delay(n int) time.Duration {
	ceil := p.Ceiling(n)
	if ceil <= 0 {
		return 0
	}
	rnd := p.Rand
	if rnd == nil {
		rnd = rand.Int64N
	}
	if ceil == math.MaxInt64 {
		return time.Duration(rnd(math.MaxInt64)) // ceil+1 would overflow
	}
	return time.Duration(rnd(int64(ceil) + 1))
}

// Backoff counts the failed attempts of one retry loop: Next returns the
// wait before the next attempt, Reset starts over after a success. The
// zero Backoff with its Policy set is ready. It is not safe for concurrent
// use: it belongs to the loop that retries.
type Backoff struct {
	Policy
	n int // waits drawn since the last Reset
}

// Next returns the wait before the next attempt, growing with each call
// since the last Reset.
func (b *Backoff) Next() time.Duration {
	d := b.Delay(b.n)
	if b.n < math.MaxInt {
		b.n++
	}
	return d
}

// Reset starts over from Min, after a success.
func (b *Backoff) Reset() { b.n = 0 }

// Attempts returns how many waits Next drew since the last Reset: zero
// while the loop is not failing.
func (b *Backoff) Attempts() int { return b.n }

// Sleep waits d, or until done is closed (a nil done never is); it reports
// whether d passed. Pass ctx.Done() to end on a context.
func Sleep(done <-chan struct{}, d time.Duration) bool {
	if d <= 0 {
		select {
		case <-done:
			return false
		default:
			return true
		}
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-done:
		return false
	}
}
