package testenv_test

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/updraft/updraft/internal/testenv"
)

// orphanRole tells a run of TestServersDieWithTheTestProcess that it is
// the test process to be killed.
const orphanRole = "UPDRAFT_TESTENV_ORPHAN_ROLE"

// A test binary killed outright (go test -timeout, kill -9) runs no
// cleanup; the servers it started must die with it. The test runs itself
// again as that process: the child starts redis-server, PostgreSQL and an
// updraft node, prints their process ids and waits to be killed.
func TestServersDieWithTheTestProcess(t *testing.T) {
	if os.Getenv(orphanRole) == "child" {
		r := testenv.StartRedis(t)
		p := testenv.StartPostgres(t)
		n := testenv.StartNode(t, map[string]string{"UPDRAFT_ALLOW_ANONYMOUS": "true"})
		fmt.Printf("pids %d %d %d\n", r.PID(), p.PID(), n.PID())
		time.Sleep(2 * time.Minute) // until killed; bounded should the parent fail to
		t.Fatal("the parent did not kill this process")
	}

	// The child's temporary directories go here, for this test's cleanup
	// to remove; PostgreSQL, running as another user, must reach them.
	// (Not t.TempDir(): its parent is private to this test's user.)
	tmp, err := os.MkdirTemp("", "updraft-orphans-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(tmp) })
	if err := os.Chmod(tmp, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestServersDieWithTheTestProcess$", "-test.v")
	cmd.Env = append(os.Environ(), orphanRole+"=child", "TMPDIR="+tmp)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	pids := make(chan []int, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if f := strings.Fields(sc.Text()); len(f) == 4 && f[0] == "pids" {
				var ps []int
				for _, s := range f[1:] {
					p, _ := strconv.Atoi(s)
					ps = append(ps, p)
				}
				pids <- ps
				return
			}
		}
		close(pids)
	}()
	var servers []int
	select {
	case servers = <-pids:
	case <-time.After(2 * time.Minute):
		t.Fatal("the child did not start its servers within 2 minutes")
	}
	if len(servers) != 3 {
		t.Fatal("the child ended without starting its servers")
	}
	for _, pid := range servers {
		if !alive(pid) {
			t.Fatalf("server %d is not running before the kill", pid)
		}
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	testenv.Eventually(t, 30*time.Second, func() bool {
		for _, pid := range servers {
			if alive(pid) {
				return false
			}
		}
		return true
	}, "servers %v outlived the test process that started them", servers)
}

// alive reports whether pid runs: it exists and is not a zombie waiting
// for its new parent to reap it.
func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}
