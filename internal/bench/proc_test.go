package bench

import (
	"os"
	"strings"
	"testing"
)

func TestParseCPUSeconds(t *testing.T) {
	t.Parallel()
	// Fields 14 and 15 (utime 1234, stime 766) after a name with spaces
	// and parentheses.
	stat := "4242 (updraft (x) y) S 1 4242 4242 0 -1 4194560 1829 0 0 0 1234 766 0 0 20 0 12 0 9000 2236092416 11112 18446744073709551615\n"
	got, err := ParseCPUSeconds([]byte(stat))
	if err != nil || got != 20 {
		t.Fatalf("ParseCPUSeconds = %v, %v; want 20 (2000 ticks)", got, err)
	}
	for _, bad := range []string{"", "4242 updraft S 1", "4242 (updraft) S 1 2 3", "4242 (u) S 1 4242 4242 0 -1 4194560 1829 0 0 0 x 766 0"} {
		if _, err := ParseCPUSeconds([]byte(bad)); err == nil {
			t.Errorf("ParseCPUSeconds(%q) accepted", bad)
		}
	}
	// This very process.
	self, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParseCPUSeconds(self); err != nil {
		t.Errorf("/proc/self/stat: %v", err)
	}
}

func TestParseRSS(t *testing.T) {
	t.Parallel()
	status := "Name:\tupdraft\nVmPeak:\t 2236092 kB\nVmRSS:\t   44448 kB\nThreads:\t12\n"
	if got, err := ParseRSS([]byte(status)); err != nil || got != 44448*1024 {
		t.Fatalf("ParseRSS = %d, %v", got, err)
	}
	if _, err := ParseRSS([]byte("Name:\tkthreadd\n")); err == nil || !strings.Contains(err.Error(), "no VmRSS") {
		t.Errorf("no VmRSS line: %v", err)
	}
	self, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	if rss, err := ParseRSS(self); err != nil || rss <= 0 {
		t.Errorf("/proc/self/status: %d, %v", rss, err)
	}
}

func TestParseMetric(t *testing.T) {
	t.Parallel()
	text := `# HELP go_goroutines Number of goroutines that currently exist.
# TYPE go_goroutines gauge
go_goroutines 2013
go_memstats_heap_inuse_bytes 2.1495808e+07
go_memstats_heap_inuse_bytes_total 1
updraft_connections{node="a"} 7
`
	tests := []struct {
		name string
		want float64
		ok   bool
	}{
		{"go_goroutines", 2013, true},
		{"go_memstats_heap_inuse_bytes", 21495808, true},
		{"go_memstats_stack_inuse_bytes", 0, false},
		{"updraft_connections", 0, false}, // labelled
	}
	for _, tt := range tests {
		if got, ok := ParseMetric([]byte(text), tt.name); got != tt.want || ok != tt.ok {
			t.Errorf("ParseMetric(%s) = %v, %v; want %v, %v", tt.name, got, ok, tt.want, tt.ok)
		}
	}
}
