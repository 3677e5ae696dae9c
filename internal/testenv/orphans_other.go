//go:build !linux

package testenv

import (
	"os/exec"
	"syscall"
)

// dieWithTest does nothing here: only Linux has a parent-death signal.
// Servers of a test process killed outright outlive it.
func dieWithTest(*exec.Cmd, syscall.Signal) {}
