// Package bench holds what `updraft bench` computes, as opposed to the
// connections and requests it makes: latency histograms, rates and
// pacing, the scenarios' parameters and their validation, the cheap
// parsing of what receivers read, the figures of a run and their report.
// Its one piece of I/O is Conn, the minimal WebSocket client the receivers
// use.
package bench

import "math/bits"

// The histogram's layout. Values below subBuckets nanoseconds have a
// bucket each; above, every power of two [2^k, 2^(k+1)) is split into
// subBuckets equal buckets, so a bucket is at most 1/subBuckets of its
// lower bound wide.
const (
	subBits    = 6
	subBuckets = 1 << subBits // 64
	// maxBits: values of 2^maxBits ns (about 18 minutes) and more count
	// in the last bucket.
	maxBits    = 40
	maxValue   = 1<<maxBits - 1
	numBuckets = (maxBits - subBits + 1) * subBuckets // 2,240
)

// RelativeError bounds how far a quantile that Histogram reports can be
// from the exact one: a quantile is reported as the middle of its bucket,
// at most half a bucket, 1/128 of the value, away from every value in it.
// Values below 64 ns are exact, and so are Min and Max.
const RelativeError = 1.0 / (2 * subBuckets)

// Histogram counts durations in nanoseconds in fixed logarithmic buckets:
// recording allocates nothing and costs a few nanoseconds, histograms of
// many receivers merge by adding counts, and quantiles are within
// RelativeError of the exact ones. Values from 0 to about 18 minutes are
// kept apart; negative values count as 0 and larger ones as the largest.
// The zero value is empty and ready; a Histogram is not safe for
// concurrent use.
type Histogram struct {
	counts   [numBuckets]uint64
	n        uint64
	min, max int64 // exact; valid when n > 0
}

// bucketOf returns the bucket index of v, 0 <= v <= maxValue.
func bucketOf(v int64) int {
	if v < subBuckets {
		return int(v)
	}
	e := bits.Len64(uint64(v)) - subBits - 1 // v>>e is in [64, 128)
	return (e+1)*subBuckets + int(v>>e) - subBuckets
}

// bucketRange returns the lowest value of bucket i and its width.
func bucketRange(i int) (low, width int64) {
	if i < subBuckets {
		return int64(i), 1
	}
	e := i/subBuckets - 1
	m := int64(i%subBuckets + subBuckets)
	return m << e, 1 << e
}

// Record counts one duration of ns nanoseconds.
func (h *Histogram) Record(ns int64) {
	if ns < 0 {
		ns = 0
	} else if ns > maxValue {
		ns = maxValue
	}
	h.counts[bucketOf(ns)]++
	if h.n == 0 || ns < h.min {
		h.min = ns
	}
	if h.n == 0 || ns > h.max {
		h.max = ns
	}
	h.n++
}

// Merge adds o's counts to h.
func (h *Histogram) Merge(o *Histogram) {
	if o.n == 0 {
		return
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	if h.n == 0 || o.min < h.min {
		h.min = o.min
	}
	if h.n == 0 || o.max > h.max {
		h.max = o.max
	}
	h.n += o.n
}

// Count returns the number of values recorded.
func (h *Histogram) Count() uint64 { return h.n }

// Min and Max return the smallest and largest value recorded, 0 when
// empty.
func (h *Histogram) Min() int64 { return h.min }
func (h *Histogram) Max() int64 { return h.max }

// Quantile returns the q-quantile (0 <= q <= 1) of the recorded values:
// the value at rank ceil(q*n) in ascending order (the smallest for q = 0),
// within RelativeError. An empty histogram returns 0.
func (h *Histogram) Quantile(q float64) int64 {
	if h.n == 0 {
		return 0
	}
	switch {
	case q <= 0:
		return h.min
	case q >= 1:
		return h.max
	}
	rank := uint64(q * float64(h.n))
	if float64(rank) < q*float64(h.n) {
		rank++ // ceil
	}
	rank = max(rank, 1)
	var seen uint64
	for i, c := range h.counts {
		if seen += c; seen >= rank {
			low, width := bucketRange(i)
			return min(max(low+width/2, h.min), h.max)
		}
	}
	return h.max // not reached: the counts add up to n
}
