package bench

import (
	"testing"
	"time"
)

func TestPerSecondAndFraction(t *testing.T) {
	t.Parallel()
	tests := []struct {
		count   float64
		elapsed time.Duration
		want    float64
	}{
		{1_000_000, 10 * time.Second, 100_000},
		{5, 500 * time.Millisecond, 10},
		{7, 0, 0},
		{7, -time.Second, 0},
	}
	for _, tt := range tests {
		if got := PerSecond(tt.count, tt.elapsed); got != tt.want {
			t.Errorf("PerSecond(%v, %v) = %v, want %v", tt.count, tt.elapsed, got, tt.want)
		}
	}
	if f, ok := Fraction(999, 1000); !ok || f != 0.999 {
		t.Errorf("Fraction(999, 1000) = %v, %v", f, ok)
	}
	if f, ok := Fraction(5, 5); !ok || f != 1 {
		t.Errorf("Fraction(5, 5) = %v, %v", f, ok)
	}
	if _, ok := Fraction(0, 0); ok {
		t.Error("Fraction(0, 0) claims a fraction")
	}
}

// Due and At agree exactly: message i is due at At(i) and not a
// nanosecond before, whatever the rate's rounding.
func TestPacerDueAgreesWithAt(t *testing.T) {
	t.Parallel()
	start := time.Unix(1_764_170_000, 123)
	for _, rate := range []float64{1, 3, 7, 100, 333.3, 500, 2000, 1e6, 0.5} {
		p := Pacer{Start: start, Rate: rate}
		if got := p.Due(start.Add(-1)); got != 0 {
			t.Fatalf("rate %v: %d due before the start", rate, got)
		}
		for i := int64(0); i < 5000; i += 1 + i/7 {
			at := p.At(i)
			if got := p.Due(at); got != i+1 {
				t.Fatalf("rate %v: Due(At(%d)) = %d, want %d", rate, i, got, i+1)
			}
			if got := p.Due(at.Add(-1)); got != i {
				t.Fatalf("rate %v: Due(At(%d) - 1ns) = %d, want %d", rate, i, got, i)
			}
		}
	}
}

func TestPacerSpacing(t *testing.T) {
	t.Parallel()
	start := time.Unix(1_764_170_000, 0)
	p := Pacer{Start: start, Rate: 500}
	if got := p.At(1).Sub(p.At(0)); got != 2*time.Millisecond {
		t.Errorf("500/s: messages %v apart, want 2ms", got)
	}
	if got := p.Due(start.Add(time.Second)); got != 501 {
		t.Errorf("500/s: %d due after one second (0 to 500 inclusive), want 501", got)
	}
}

func TestPlanned(t *testing.T) {
	t.Parallel()
	tests := []struct {
		rate  float64
		d     time.Duration
		limit int64
		want  int64
	}{
		{100, 10 * time.Second, 0, 1000},
		{500, 10 * time.Second, 0, 5000},
		{3, time.Second, 0, 3},
		{3, 1001 * time.Millisecond, 0, 4}, // the fourth is due at 1s
		{2000, 2 * time.Second, 0, 4000},
		{100, 10 * time.Second, 250, 250},
		{100, time.Second, 250, 100},
		{0.5, time.Second, 0, 1},
		{100, 0, 0, 0},
	}
	for _, tt := range tests {
		if got := Planned(tt.rate, tt.d, tt.limit); got != tt.want {
			t.Errorf("Planned(%v, %v, %d) = %d, want %d", tt.rate, tt.d, tt.limit, got, tt.want)
		}
	}
}
