// Package strhash owns the string hash that shards the hot maps (the
// gateway hub, the memory broker and the memory presence store).
package strhash

// FNV32a returns the 32-bit FNV-1a hash of s, the same value as hash/fnv's
// New32a, computed over the string directly because hash/fnv would allocate
// on every call.
func FNV32a(s string) uint32 {
	const (
		offset32 = 2166136261
		prime32  = 16777619
	)
	x := uint32(offset32)
	for i := 0; i < len(s); i++ {
		x ^= uint32(s[i])
		x *= prime32
	}
	return x
}
