//go:build !unix

package main

import "time"

// The fallback of bench_unix.go on systems without getrlimit(2) and
// getrusage(2): the bench tool runs, without those figures.

// raiseFileLimit reports the limit unknown (0): no check against it.
func raiseFileLimit() (uint64, error) { return 0, nil }

// selfCPU reports no CPU time: the result's bench CPU reads 0.
func selfCPU() time.Duration { return 0 }
