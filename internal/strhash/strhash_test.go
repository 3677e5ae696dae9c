package strhash

import (
	"hash/fnv"
	"testing"
)

func TestFNV32aMatchesHashFNV(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"", "a", "chat", "room:42", "ünïcødé", string(make([]byte, 300))} {
		h := fnv.New32a()
		h.Write([]byte(s))
		if got, want := FNV32a(s), h.Sum32(); got != want {
			t.Errorf("FNV32a(%q) = %d, want %d", s, got, want)
		}
	}
}

func TestFNV32aDoesNotAllocate(t *testing.T) {
	s := "room:42"
	var sink uint32
	if n := testing.AllocsPerRun(100, func() { sink += FNV32a(s) }); n != 0 {
		t.Fatalf("FNV32a allocates %v times per call, want 0", n)
	}
	_ = sink
}

func BenchmarkFNV32a(b *testing.B) {
	b.ReportAllocs()
	s := "room:42"
	var sink uint32
	for b.Loop() {
		sink += FNV32a(s)
	}
	_ = sink
}
