package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// redisNotFound is the failure when redis-server is missing.
const redisNotFound = "redis-server not found: run `make test` (it installs redis-server with apt on Debian/Ubuntu) or install redis-server 7+"

// Time limits of the redis-server helper.
const (
	redisStartTimeout = 10 * time.Second
	redisStopTimeout  = 10 * time.Second
	redisStartTries   = 3 // a free port can be taken before redis-server binds it
)

// Redis is a throwaway redis-server on a 127.0.0.1 port, its working
// directory a t.TempDir, without persistence unless RedisConfig asks for
// it. It is stopped by PID when the test ends; its output is shown if the
// test failed.
type Redis struct {
	port int
	dir  string
	bin  string
	cfg  RedisConfig

	mu   sync.Mutex
	proc *redisProc // guarded by mu: the running server, nil when stopped
	out  *SyncBuffer
}

// redisProc is one run of redis-server.
type redisProc struct {
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd.Wait returns
}

// RedisConfig configures StartRedisWith. The zero value is StartRedis's
// server: no persistence at all.
type RedisConfig struct {
	// AppendFsyncAlways turns on the append-only file with appendfsync
	// always: Redis writes and fsyncs every write before it replies, so
	// every acknowledged write survives Kill, and Restart (same port, same
	// directory) loads it back.
	AppendFsyncAlways bool
}

// StartRedis starts a redis-server on a free port and waits until it
// answers PING. It fails the test, never skips it, when redis-server is
// missing or does not start.
func StartRedis(t testing.TB) *Redis {
	t.Helper()
	return StartRedisWith(t, RedisConfig{})
}

// StartRedisWith is StartRedis with persistence as cfg says.
func StartRedisWith(t testing.TB, cfg RedisConfig) *Redis {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatal(redisNotFound)
	}
	r := &Redis{dir: t.TempDir(), bin: bin, cfg: cfg, out: &SyncBuffer{}}
	t.Cleanup(func() {
		r.Stop()
		if t.Failed() {
			t.Logf("testenv: redis-server on port %d output:\n%s", r.port, r.out.String())
		}
	})
	for try := 1; ; try++ {
		r.port = FreePort(t)
		err = r.start()
		if err == nil {
			return r
		}
		if try == redisStartTries {
			t.Fatalf("testenv: starting redis-server (%d tries): %v\noutput:\n%s", try, err, r.out.String())
		}
	}
}

// Addr is the server's host:port.
func (r *Redis) Addr() string { return "127.0.0.1:" + strconv.Itoa(r.port) }

// URL is the server's redis:// URL, database 0.
func (r *Redis) URL() string { return "redis://" + r.Addr() + "/0" }

// Client returns a go-redis client of the server, closed when the test
// ends.
func (r *Redis) Client(t testing.TB) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: r.Addr()})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// PID returns the running server's process id, 0 when it is stopped.
func (r *Redis) PID() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.proc == nil {
		return 0
	}
	return r.proc.cmd.Process.Pid
}

// Stop ends the server with SIGTERM and waits for it to exit (SIGKILL
// after a timeout). It does nothing if the server is not running.
func (r *Redis) Stop() { r.signal(syscall.SIGTERM) }

// Kill ends the server with SIGKILL and waits for it to exit.
func (r *Redis) Kill() { r.signal(syscall.SIGKILL) }

// Restart starts the server again on the same port and directory, stopping
// it first if it is running. The data is gone unless
// RedisConfig.AppendFsyncAlways kept it; a Restart after Kill is a crash
// and its recovery.
func (r *Redis) Restart(t testing.TB) {
	t.Helper()
	r.Stop()
	if err := r.start(); err != nil {
		t.Fatalf("testenv: restarting redis-server on port %d: %v\noutput:\n%s", r.port, err, r.out.String())
	}
}

func (r *Redis) signal(sig syscall.Signal) {
	r.mu.Lock()
	p := r.proc
	r.proc = nil
	r.mu.Unlock()
	if p == nil {
		return
	}
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.exited:
	case <-time.After(redisStopTimeout):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

// start runs redis-server on r.port and waits until it answers PING.
func (r *Redis) start() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.proc != nil {
		return errors.New("already running")
	}
	fmt.Fprintf(r.out, "--- testenv: starting redis-server on port %d\n", r.port)
	aof := []string{"--appendonly", "no"}
	if r.cfg.AppendFsyncAlways {
		aof = []string{"--appendonly", "yes", "--appendfsync", "always"}
	}
	args := append([]string{
		"--port", strconv.Itoa(r.port),
		"--bind", "127.0.0.1",
		"--dir", r.dir,
		"--save", "",
		"--daemonize", "no",
		"--loglevel", "notice",
		// DEBUG RELOAD (with CONFIG SET key-load-delay) holds Redis in its
		// LOADING state for as long as a test needs; loopback clients only.
		"--enable-debug-command", "local",
	}, aof...)
	cmd := exec.Command(r.bin, args...)
	cmd.Stdout = r.out
	cmd.Stderr = r.out
	dieWithTest(cmd, syscall.SIGKILL)
	if err := cmd.Start(); err != nil {
		return err
	}
	p := &redisProc{cmd: cmd, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(p.exited)
	}()

	c := redis.NewClient(&redis.Options{Addr: r.Addr(), MaxRetries: -1, DialTimeout: time.Second})
	defer c.Close()
	deadline := time.Now().Add(redisStartTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil {
			r.proc = p
			return nil
		}
		select {
		case <-p.exited:
			return fmt.Errorf("redis-server exited: %v", cmd.ProcessState)
		default:
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-p.exited
			return fmt.Errorf("no PONG within %v: %w", redisStartTimeout, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// SyncBuffer is a bytes.Buffer safe for concurrent writes and reads: a
// process's output read by the test, a command's output read while it runs.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
