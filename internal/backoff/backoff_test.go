package backoff

import (
	"context"
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

// highest and lowest are the extremes of Rand: the ceiling and zero.
func highest(n int64) int64 { return n - 1 }
func lowest(int64) int64    { return 0 }

func TestCeilingDoublesUpToMax(t *testing.T) {
	t.Parallel()
	p := Policy{Min: 100 * time.Millisecond, Max: 10 * time.Second}
	for n, want := range []time.Duration{
		100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond,
		1600 * time.Millisecond, 3200 * time.Millisecond, 6400 * time.Millisecond, p.Max, p.Max,
	} {
		if got := p.Ceiling(n); got != want {
			t.Errorf("attempt %d: ceiling %v, want %v", n, got, want)
		}
	}
	if got := p.Ceiling(-1); got != p.Min {
		t.Errorf("attempt -1: ceiling %v, want %v", got, p.Min)
	}
}

func TestDelayFullJitter(t *testing.T) {
	t.Parallel()
	const base, max = 100 * time.Millisecond, 10 * time.Second
	p := Policy{Min: base, Max: max}
	// The extremes of Rand give the ceiling and zero.
	for n := range 12 {
		p.Rand = highest
		if got, want := p.Delay(n), p.Ceiling(n); got != want {
			t.Errorf("attempt %d: longest %v, want %v", n, got, want)
		}
		p.Rand = lowest
		if got := p.Delay(n); got != 0 {
			t.Errorf("attempt %d: shortest %v, want 0", n, got)
		}
	}
	// With real randomness (the default Rand) every wait lies in
	// [0, ceiling] and they spread over the whole of it.
	p.Rand = nil
	for n := range 10 {
		ceil := p.Ceiling(n)
		var low, high bool
		for range 1000 {
			d := p.Delay(n)
			if d < 0 || d > ceil {
				t.Fatalf("attempt %d: %v outside [0, %v]", n, d, ceil)
			}
			low = low || d < ceil/2
			high = high || d >= ceil/2
		}
		if !low || !high {
			t.Errorf("attempt %d: 1000 waits all in one half of [0, %v]", n, ceil)
		}
	}
	// An injected Rand is asked for [0, ceiling+1).
	p.Rand = func(n int64) int64 {
		if n != int64(400*time.Millisecond)+1 {
			t.Errorf("Rand(%d), want Rand(ceiling+1)", n)
		}
		return rand.Int64N(n)
	}
	p.Delay(2)
}

func TestNoOverflow(t *testing.T) {
	t.Parallel()
	for _, n := range []int{62, 63, 64, 1000, math.MaxInt32, math.MaxInt} {
		p := Policy{Min: 100 * time.Millisecond, Max: 10 * time.Second, Rand: highest}
		if got := p.Delay(n); got != p.Max {
			t.Errorf("attempt %d: %v, want %v", n, got, p.Max)
		}
		// No Max to speak of: the ceiling stops at the largest duration.
		p = Policy{Min: time.Second, Max: math.MaxInt64, Rand: highest}
		if got := p.Delay(n); got != math.MaxInt64-1 {
			t.Errorf("attempt %d, no max: %v", n, got)
		}
		p = Policy{Min: math.MaxInt64, Max: math.MaxInt64, Rand: highest}
		if got := p.Delay(n); got != math.MaxInt64-1 {
			t.Errorf("attempt %d, huge min: %v", n, got)
		}
	}
	b := Backoff{Policy: Policy{Min: time.Millisecond, Max: time.Second, Rand: highest}, n: math.MaxInt - 1}
	for range 3 {
		if got := b.Next(); got != time.Second {
			t.Errorf("attempt near MaxInt: %v, want 1s", got)
		}
	}
	if b.Attempts() != math.MaxInt {
		t.Errorf("attempts %d, want MaxInt", b.Attempts())
	}
}

func TestDegeneratePolicies(t *testing.T) {
	t.Parallel()
	for _, p := range []Policy{{}, {Min: 0, Max: time.Second}, {Min: -time.Second, Max: time.Second}} {
		p.Rand = highest
		for n := range 5 {
			if got := p.Delay(n); got != 0 {
				t.Errorf("%+v attempt %d: %v, want 0", p, n, got)
			}
		}
	}
	// A Max below Min caps every wait.
	p := Policy{Min: time.Second, Max: time.Millisecond, Rand: highest}
	if got := p.Delay(0); got != time.Millisecond {
		t.Errorf("Max below Min: %v, want 1ms", got)
	}
}

func TestBackoffNextAndReset(t *testing.T) {
	t.Parallel()
	b := Backoff{Policy: Policy{Min: 10 * time.Millisecond, Max: 50 * time.Millisecond, Rand: highest}}
	if b.Attempts() != 0 {
		t.Fatalf("new backoff: %d attempts", b.Attempts())
	}
	want := []time.Duration{10 * time.Millisecond, 20 * time.Millisecond, 40 * time.Millisecond, 50 * time.Millisecond, 50 * time.Millisecond}
	for i, w := range want {
		if got := b.Next(); got != w {
			t.Errorf("Next #%d: %v, want %v", i+1, got, w)
		}
	}
	if b.Attempts() != len(want) {
		t.Errorf("attempts %d, want %d", b.Attempts(), len(want))
	}
	b.Reset()
	if b.Attempts() != 0 {
		t.Errorf("after Reset: %d attempts", b.Attempts())
	}
	if got := b.Next(); got != 10*time.Millisecond {
		t.Errorf("Next after Reset: %v, want 10ms", got)
	}
}

func TestSleep(t *testing.T) {
	t.Parallel()
	if !Sleep(nil, 0) || !Sleep(nil, -time.Second) {
		t.Error("a wait of zero did not pass")
	}
	if !Sleep(nil, time.Millisecond) {
		t.Error("a short wait did not pass")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if Sleep(ctx.Done(), 0) {
		t.Error("a wait of zero passed after done was closed")
	}
	if Sleep(ctx.Done(), time.Hour) {
		t.Error("a wait passed after done was closed")
	}
	// Closed during the wait: Sleep returns false without waiting it out.
	done := make(chan struct{})
	go func() { close(done) }()
	if Sleep(done, time.Hour) {
		t.Error("a wait of an hour passed")
	}
}
