package bench

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// exactQuantile is the definition Histogram.Quantile approximates: the
// value at rank ceil(q*n) of the sorted values.
func exactQuantile(sorted []int64, q float64) int64 {
	rank := int(math.Ceil(q * float64(len(sorted))))
	return sorted[min(max(rank, 1), len(sorted))-1]
}

func TestBucketsCoverEveryValueOnce(t *testing.T) {
	t.Parallel()
	// Each bucket starts where the one before ends, up to maxValue.
	next := int64(0)
	for i := range numBuckets {
		low, width := bucketRange(i)
		if low != next {
			t.Fatalf("bucket %d starts at %d, want %d", i, low, next)
		}
		if bucketOf(low) != i || bucketOf(low+width-1) != i {
			t.Fatalf("bucket %d [%d, %d] maps to %d and %d", i, low, low+width-1, bucketOf(low), bucketOf(low+width-1))
		}
		if i >= subBuckets && float64(width)/float64(low) > 1.0/subBuckets {
			t.Fatalf("bucket %d is %d wide at %d: more than 1/%d", i, width, low, subBuckets)
		}
		next = low + width
	}
	if next != maxValue+1 {
		t.Fatalf("the buckets end at %d, want %d", next, maxValue+1)
	}
}

func TestQuantileWithinRelativeError(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(1, 2))
	dists := map[string]func() int64{
		"uniform 0-10ms":  func() int64 { return rng.Int64N(10_000_000) },
		"log-normal ~2ms": func() int64 { return int64(math.Exp(rng.NormFloat64()*1.5 + math.Log(2e6))) },
		"small exact":     func() int64 { return rng.Int64N(64) },
		"bimodal":         func() int64 { return []int64{500_000, 250_000_000}[rng.IntN(2)] + rng.Int64N(1000) },
	}
	for name, draw := range dists {
		t.Run(name, func(t *testing.T) {
			var h Histogram
			vals := make([]int64, 100_000)
			for i := range vals {
				vals[i] = draw()
				h.Record(vals[i])
			}
			slices.Sort(vals)
			for _, q := range []float64{0, 0.001, 0.25, 0.5, 0.9, 0.95, 0.99, 0.999, 1} {
				got, want := h.Quantile(q), exactQuantile(vals, q)
				if diff := math.Abs(float64(got - want)); diff > RelativeError*float64(want) {
					t.Errorf("q %v: got %d, exact %d: off by %.4f%%, more than %.4f%%", q, got, want, 100*diff/float64(want), 100*RelativeError)
				}
			}
			if h.Count() != uint64(len(vals)) || h.Min() != vals[0] || h.Max() != vals[len(vals)-1] {
				t.Errorf("count %d min %d max %d, want %d %d %d", h.Count(), h.Min(), h.Max(), len(vals), vals[0], vals[len(vals)-1])
			}
		})
	}
}

func TestQuantileSmallCounts(t *testing.T) {
	t.Parallel()
	var h Histogram
	if h.Quantile(0.5) != 0 || h.Count() != 0 {
		t.Fatal("an empty histogram reports something")
	}
	for _, v := range []int64{10, 20, 30, 40} {
		h.Record(v)
	}
	// Ranks ceil(q*4): 0.25 -> 1st, 0.5 -> 2nd, 0.51 -> 3rd, 0.99 -> 4th.
	for q, want := range map[float64]int64{0.25: 10, 0.5: 20, 0.51: 30, 0.99: 40, 1: 40, 0: 10} {
		if got := h.Quantile(q); got != want {
			t.Errorf("q %v: %d, want %d", q, got, want)
		}
	}
}

func TestRecordClamps(t *testing.T) {
	t.Parallel()
	var h Histogram
	h.Record(-5)                // a clock step backwards
	h.Record(math.MaxInt64 / 2) // beyond the range
	if h.Min() != 0 || h.Max() != maxValue || h.Quantile(0.5) != 0 || h.Quantile(1) != maxValue {
		t.Fatalf("min %d max %d p50 %d", h.Min(), h.Max(), h.Quantile(0.5))
	}
}

func TestMergeEqualsRecordingTogether(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(3, 4))
	var all, a, b, empty Histogram
	for i := range 10_000 {
		v := rng.Int64N(1e9)
		all.Record(v)
		if i%3 == 0 {
			a.Record(v)
		} else {
			b.Record(v)
		}
	}
	var merged Histogram
	merged.Merge(&empty)
	merged.Merge(&a)
	merged.Merge(&b)
	merged.Merge(&empty)
	if merged != all {
		t.Fatal("merging two histograms differs from recording into one")
	}
}

func BenchmarkHistogramRecord(b *testing.B) {
	b.ReportAllocs()
	var h Histogram
	for i := range b.N {
		h.Record(int64(i) * 7919 % 100_000_000)
	}
}
