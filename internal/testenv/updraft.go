package testenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// How long StartNode waits for /readyz, and how many log lines a failure
// shows.
const (
	readyTimeout = 15 * time.Second
	tailLines    = 50
)

// builds are the updraft binaries built so far: [0] without -race, [1]
// with it.
var builds [2]struct {
	once sync.Once
	path string
	err  error
}

// buildDirs holds the directories the builds live in; see Main.
var (
	buildDirsMu sync.Mutex
	buildDirs   []string
)

// Binary returns the path of an updraft binary built from this checkout's
// ./cmd/updraft. It builds once per test process, with -race when the test
// binary itself was built with -race, so the gateways that tests start are
// race-checked too (see Node's cleanup). The binary lives in a fresh
// directory under os.TempDir() named updraft-testenv-*; Main removes it, and
// directories that old runs left behind are removed after a day.
//
// UPDRAFT_TESTENV_RACE=1 asks for race-checked gateways from a test binary
// built without -race: `make test` runs the end-to-end tests that way, so
// that the many clients inside the test process run at full speed while
// every gateway is still checked.
func Binary(t testing.TB) string {
	t.Helper()
	return binary(t, raceEnabled() || os.Getenv("UPDRAFT_TESTENV_RACE") == "1")
}

func binary(t testing.TB, race bool) string {
	t.Helper()
	i := 0
	if race {
		i = 1
	}
	b := &builds[i]
	b.once.Do(func() { b.path, b.err = build(race) })
	if b.err != nil {
		t.Fatalf("testenv: building updraft: %v", b.err)
	}
	return b.path
}

// Main runs a package's tests and then removes the binary Binary built.
// Packages that start updraft processes call it from TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }
func Main(m *testing.M) int {
	code := m.Run()
	buildDirsMu.Lock()
	defer buildDirsMu.Unlock()
	for _, dir := range buildDirs {
		os.RemoveAll(dir)
	}
	return code
}

func build(race bool) (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	removeStaleBuilds()
	dir, err := os.MkdirTemp("", "updraft-testenv-")
	if err != nil {
		return "", err
	}
	buildDirsMu.Lock()
	buildDirs = append(buildDirs, dir)
	buildDirsMu.Unlock()
	bin := filepath.Join(dir, "updraft")
	args := []string{"build", "-buildvcs=false", "-o", bin}
	if race {
		args = append(args, "-race")
	}
	args = append(args, "./cmd/updraft")
	// go test puts its own GOROOT/bin first on PATH, so "go" is the same
	// toolchain that built this test.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go %s in %s: %v\n%s", strings.Join(args, " "), root, err, out)
	}
	return bin, nil
}

// moduleRoot walks up from the working directory (a test's package
// directory) to the directory holding go.mod.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// removeStaleBuilds deletes binaries that runs without Main left behind,
// once they are a day old: no test run lasts that long.
func removeStaleBuilds() {
	old, _ := filepath.Glob(filepath.Join(os.TempDir(), "updraft-testenv-*"))
	for _, dir := range old {
		if fi, err := os.Stat(dir); err == nil && time.Since(fi.ModTime()) > 24*time.Hour {
			os.RemoveAll(dir)
		}
	}
}

// raceEnabled reports whether this test binary was built with -race.
func raceEnabled() bool {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range info.Settings {
		if s.Key == "-race" {
			return s.Value == "true"
		}
	}
	return false
}

// Node is a running `updraft serve` process started by StartNode, or an
// `updraft tracker` started by StartTracker.
type Node struct {
	t     testing.TB
	cmd   *exec.Cmd
	addr  string // 127.0.0.1:port
	log   string // path of the file holding its stdout and stderr
	ready string // the path that answers 200 once it is ready

	done    chan struct{} // closed once the process has exited
	waitErr error         // the exit status; read only after done is closed

	tailShown bool // StartNode's failure already showed the log; test goroutine only
}

// StartNode starts `updraft serve` with env as its environment (plus PATH
// and HOME from the test's; nothing else is inherited) and returns once
// GET /readyz answers 200. It listens on a free 127.0.0.1 port unless env
// sets UPDRAFT_ADDR. Note that serve refuses to start without
// UPDRAFT_JWT_SECRET or UPDRAFT_ALLOW_ANONYMOUS=true.
//
// Its stdout and stderr go to a file in t.TempDir(). If the process exits
// or is not ready within 15s, the test fails with the last 50 log lines.
// When the test ends the process is killed if still running; its last log
// lines are logged if the test failed, and a data race it reported fails
// the test.
func StartNode(t testing.TB, env map[string]string) *Node {
	t.Helper()
	return startNode(t, Binary(t), "serve", env)
}

// StartTracker starts `updraft tracker` as StartNode starts serve: env
// needs UPDRAFT_DATABASE_URL and UPDRAFT_REDIS_URL. It returns once
// GET /healthz answers: the tracker is running, leading or standing by.
func StartTracker(t testing.TB, env map[string]string) *Node {
	t.Helper()
	return startNode(t, Binary(t), "tracker", env)
}

// StartLoadNode is StartNode with a binary built without -race, for load
// tests: the race detector slows a gateway five to ten times, which would
// turn a realistic load into an overload on a small machine. Data races
// stay the business of the many other tests that run race-checked nodes.
func StartLoadNode(t testing.TB, env map[string]string) *Node {
	t.Helper()
	return startNode(t, binary(t, false), "serve", env)
}

// StartNodeUnready is StartNode for a node that cannot be ready yet, such
// as one whose Redis is down: it returns once GET /healthz answers 200.
func StartNodeUnready(t testing.TB, env map[string]string) *Node {
	t.Helper()
	return startNodeUntil(t, Binary(t), "serve", "/healthz", env)
}

func startNode(t testing.TB, bin, command string, env map[string]string) *Node {
	t.Helper()
	return startNodeUntil(t, bin, command, "", env)
}

// startNodeUntil starts a node and waits until GET ready answers 200; ""
// means the command's own ready path.
func startNodeUntil(t testing.TB, bin, command, ready string, env map[string]string) *Node {
	t.Helper()
	for attempt := 1; ; attempt++ {
		addr, picked := env["UPDRAFT_ADDR"], false
		if addr == "" {
			addr, picked = fmt.Sprintf("127.0.0.1:%d", FreePort(t)), true
		}
		n := start(t, bin, command, addr, env)
		if ready != "" {
			n.ready = ready
		}
		err := n.waitReady(readyTimeout)
		if err == nil {
			return n
		}
		n.Kill()
		<-n.done
		n.tailShown = true
		// Another process may have taken the port FreePort found.
		if picked && attempt < 3 && strings.Contains(n.Logs(), "address already in use") {
			continue
		}
		t.Fatalf("testenv: updraft %s (pid %d, %s) %v; last log lines:\n%s", command, n.PID(), n.addr, err, n.tail())
	}
}

// start starts one `updraft serve` (or tracker) listening on addr.
func start(t testing.TB, bin, command, addr string, env map[string]string) *Node {
	t.Helper()
	dialAddr, err := loopback(addr)
	if err != nil {
		t.Fatalf("testenv: UPDRAFT_ADDR %q: %v", addr, err)
	}
	vars := []string{"UPDRAFT_ADDR=" + addr}
	for _, k := range []string{"PATH", "HOME"} {
		if v, ok := os.LookupEnv(k); ok {
			vars = append(vars, k+"="+v)
		}
	}
	for k, v := range env {
		if k != "UPDRAFT_ADDR" {
			vars = append(vars, k+"="+v)
		}
	}

	logPath := filepath.Join(t.TempDir(), "updraft-"+strings.ReplaceAll(dialAddr, ":", "-")+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	defer logFile.Close() // the child has its own descriptor

	cmd := exec.Command(bin, command)
	cmd.Env = vars
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	dieWithTest(cmd, syscall.SIGKILL)
	if err := cmd.Start(); err != nil {
		t.Fatalf("testenv: starting updraft: %v", err)
	}
	n := &Node{t: t, cmd: cmd, addr: dialAddr, log: logPath, ready: "/readyz", done: make(chan struct{})}
	if command == "tracker" {
		n.ready = "/healthz"
	}
	go func() {
		n.waitErr = cmd.Wait()
		close(n.done)
	}()
	t.Cleanup(n.cleanup)
	return n
}

// loopback turns a listen address into one to dial: an empty or wildcard
// host becomes 127.0.0.1.
func loopback(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", err
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port), nil
}

// waitReady polls GET n.ready until it answers 200, the process exits or
// the timeout passes.
func (n *Node) waitReady(timeout time.Duration) error {
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	deadline := time.Now().Add(timeout)
	last := "no answer"
	for {
		resp, err := client.Get(n.URL() + n.ready)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = "GET " + n.ready + ": " + resp.Status
		} else {
			last = err.Error()
		}
		select {
		case <-n.done:
			return fmt.Errorf("exited before it was ready (%v)", n.waitErr)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("was not ready after %v (last: %s)", timeout, last)
		}
	}
}

// Addr returns the node's address, "127.0.0.1:port".
func (n *Node) Addr() string { return n.addr }

// URL returns the node's base URL, "http://127.0.0.1:port".
func (n *Node) URL() string { return "http://" + n.addr }

// WSURL returns the node's WebSocket endpoint, "ws://127.0.0.1:port/api/realtime".
func (n *Node) WSURL() string { return "ws://" + n.addr + "/api/realtime" }

// PID returns the process id.
func (n *Node) PID() int { return n.cmd.Process.Pid }

// Terminate sends SIGTERM: the node drains and exits; see Wait.
func (n *Node) Terminate() { n.signal(syscall.SIGTERM) }

// Kill sends SIGKILL: the node dies at once, as in a crash.
func (n *Node) Kill() { n.signal(syscall.SIGKILL) }

func (n *Node) signal(sig os.Signal) {
	if err := n.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		n.t.Errorf("testenv: sending %v to updraft (pid %d): %v", sig, n.PID(), err)
	}
}

// Wait waits up to timeout for the process to exit. It reports whether it
// did and, if so, its exit error: nil for status 0, an *exec.ExitError
// otherwise (after Kill, "signal: killed").
func (n *Node) Wait(timeout time.Duration) (exited bool, err error) {
	select {
	case <-n.done:
		return true, n.waitErr
	case <-time.After(timeout):
		return false, nil
	}
}

// Logs returns everything the process has written to stdout and stderr:
// zap's JSON lines, one per event.
func (n *Node) Logs() string {
	b, err := os.ReadFile(n.log)
	if err != nil {
		return fmt.Sprintf("(reading %s: %v)", n.log, err)
	}
	return string(b)
}

// tail returns the last tailLines lines of the log.
func (n *Node) tail() string {
	lines := strings.Split(strings.TrimRight(n.Logs(), "\n"), "\n")
	if len(lines) > tailLines {
		lines = lines[len(lines)-tailLines:]
	}
	return strings.Join(lines, "\n")
}

func (n *Node) cleanup() {
	select {
	case <-n.done:
	default:
		n.Kill()
		if exited, _ := n.Wait(10 * time.Second); !exited {
			n.t.Errorf("testenv: updraft (pid %d) still running 10s after SIGKILL", n.PID())
		}
	}
	if strings.Contains(n.Logs(), "WARNING: DATA RACE") {
		n.t.Errorf("testenv: updraft (pid %d, %s) reported a data race; its log:\n%s", n.PID(), n.addr, n.Logs())
	} else if n.t.Failed() && !n.tailShown {
		n.t.Logf("testenv: last log lines of updraft (pid %d, %s):\n%s", n.PID(), n.addr, n.tail())
	}
}
