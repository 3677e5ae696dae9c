package testenv

import (
	"os/exec"
	"syscall"
)

// dieWithTest makes the kernel send sig to cmd's process when the test
// process dies, so that servers do not outlive a test binary killed by
// `go test -timeout` or by hand (t.Cleanup never runs then). The signal
// is tied to the OS thread that starts the child; Go keeps its threads
// for the life of the process unless a goroutine locked to one exits,
// which nothing here does.
func dieWithTest(cmd *exec.Cmd, sig syscall.Signal) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = sig
}
