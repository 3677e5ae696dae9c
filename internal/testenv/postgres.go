package testenv

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	_ "github.com/lib/pq" // the "postgres" database/sql driver
)

// postgresNotFound is the failure when the PostgreSQL server is missing.
const postgresNotFound = "PostgreSQL server not found: run `make test` (it installs postgresql with apt on Debian/Ubuntu) or install PostgreSQL 13+ server binaries (initdb, postgres)"

// Time limits of the PostgreSQL helper.
const (
	postgresStartTimeout = 20 * time.Second
	postgresStopTimeout  = 10 * time.Second
	postgresStartTries   = 3 // a free port can be taken before postgres binds it
)

// postgresUser is the role initdb creates as superuser and URL connects as;
// postgresDB is the database StartPostgres creates for the test.
const (
	postgresUser = "updraft"
	postgresDB   = "updraft"
)

// errPostgresExited is returned by start when postgres exits before it
// accepts a connection: a port taken, or, after Kill, a shared memory block
// that the killed processes still hold for a moment.
var errPostgresExited = errors.New("postgres exited before it accepted connections")

// Postgres is a throwaway PostgreSQL server on a 127.0.0.1 port, with a
// database named updraft owned by the superuser updraft, no password. Its
// data directory lives in a fresh directory under os.TempDir() that is
// removed when the test ends; it is tuned for speed, not for surviving a
// machine crash (fsync off), but a committed transaction survives Kill,
// which is a crash of PostgreSQL alone.
//
// When the test runs as root, initdb and postgres run as the postgres
// system user (nobody if there is none): PostgreSQL refuses to run as root.
//
// It is stopped by PID when the test ends; its log is shown if the test
// failed.
type Postgres struct {
	bin  string              // directory holding initdb and postgres
	dir  string              // the temporary directory holding data and sock
	data string              // the data directory
	sock string              // the unix socket directory
	cred *syscall.Credential // the user the server runs as; nil for the test's own user
	port int
	out  *SyncBuffer

	mu   sync.Mutex
	proc *postgresProc // guarded by mu: the running server, nil when stopped
}

// postgresProc is one run of postgres, the postmaster.
type postgresProc struct {
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd.Wait returns
}

// StartPostgres creates a database cluster, starts PostgreSQL on a free
// port, waits until it accepts connections and creates the database
// updraft. It fails the test, never skips it, when the server binaries are
// missing or the server does not start. It takes about a second, most of it
// initdb.
func StartPostgres(t testing.TB) *Postgres {
	t.Helper()
	bin, ok := findPostgres(postgresLibGlob)
	if !ok {
		t.Fatal(postgresNotFound)
	}
	p := &Postgres{bin: bin, out: &SyncBuffer{}}
	uid, gid := os.Getuid(), os.Getgid()
	if os.Geteuid() == 0 {
		var err error
		p.cred, err = postgresCredential()
		if err != nil {
			t.Fatalf("testenv: PostgreSQL refuses to run as root, as this test does: %v", err)
		}
		uid, gid = int(p.cred.Uid), int(p.cred.Gid)
	}

	// Not t.TempDir(): its parent is private to the test's user, and the
	// server may run as another.
	dir, err := os.MkdirTemp("", "updraft-pg-")
	if err != nil {
		t.Fatalf("testenv: creating the PostgreSQL directory: %v", err)
	}
	p.dir = dir
	p.data = filepath.Join(dir, "data")
	p.sock = filepath.Join(dir, "sock")
	t.Cleanup(func() {
		p.cleanup()
		if t.Failed() {
			t.Logf("testenv: PostgreSQL on port %d output:\n%s", p.port, p.out.String())
		}
		os.RemoveAll(dir)
	})
	if err := prepareDirs(dir, p.sock, uid, gid); err != nil {
		t.Fatalf("testenv: preparing %s for PostgreSQL (uid %d): %v", dir, uid, err)
	}

	start := time.Now()
	initdb := p.command("initdb",
		"-D", p.data,
		"-U", postgresUser,
		"-A", "trust",
		"-E", "UTF8",
		"--no-locale",
		"--no-sync",
	)
	if err := initdb.Run(); err != nil {
		t.Fatalf("testenv: initdb: %v\noutput:\n%s", err, p.out.String())
	}
	fmt.Fprintf(p.out, "--- testenv: initdb took %v\n", time.Since(start).Round(time.Millisecond))

	for try := 1; ; try++ {
		p.port = FreePort(t)
		err = p.start(time.Now().Add(postgresStartTimeout))
		if err == nil {
			break
		}
		if !errors.Is(err, errPostgresExited) || try == postgresStartTries {
			t.Fatalf("testenv: starting PostgreSQL (%d tries): %v\noutput:\n%s", try, err, p.out.String())
		}
	}

	db, err := sql.Open("postgres", p.url("postgres"))
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), postgresStartTimeout)
	defer cancel()
	if _, err := db.ExecContext(ctx, "CREATE DATABASE "+postgresDB); err != nil {
		t.Fatalf("testenv: creating database %s: %v\noutput:\n%s", postgresDB, err, p.out.String())
	}
	// The role is named updraft like Updraft's schema: with the default
	// search_path ("$user", public), a table a test creates once that
	// schema exists would land in it, where it cannot be tracked.
	if _, err := db.ExecContext(ctx, "ALTER DATABASE "+postgresDB+" SET search_path = public"); err != nil {
		t.Fatalf("testenv: setting the search_path of %s: %v", postgresDB, err)
	}
	fmt.Fprintf(p.out, "--- testenv: ready in %v\n", time.Since(start).Round(time.Millisecond))
	return p
}

// URL is the connection URL of the updraft database, for lib/pq:
// postgres://updraft@127.0.0.1:PORT/updraft?sslmode=disable.
func (p *Postgres) URL() string { return p.url(postgresDB) }

func (p *Postgres) url(db string) string {
	return "postgres://" + postgresUser + "@127.0.0.1:" + strconv.Itoa(p.port) + "/" + db + "?sslmode=disable"
}

// DB returns a database/sql handle of the updraft database, closed when
// the test ends.
func (p *Postgres) DB(t testing.TB) *sql.DB {
	t.Helper()
	db, err := sql.Open("postgres", p.URL())
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// PID returns the postmaster's process ID, or 0 when the server is not
// running.
func (p *Postgres) PID() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.proc == nil {
		return 0
	}
	return p.proc.cmd.Process.Pid
}

// Stop shuts the server down and waits for it to exit. It is PostgreSQL's
// fast shutdown (SIGINT: open sessions are ended, not waited for; SIGTERM
// would wait for every client to disconnect), with SIGKILL after a timeout.
// It does nothing if the server is not running.
func (p *Postgres) Stop() {
	p.mu.Lock()
	proc := p.proc
	p.proc = nil
	p.mu.Unlock()
	if proc == nil {
		return
	}
	_ = proc.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-proc.exited:
	case <-time.After(postgresStopTimeout):
		proc.kill()
	}
}

// Kill ends the server with SIGKILL, the postmaster and (on Linux) every
// backend and helper process at once, as a crash would, and waits for the
// postmaster to exit. Restart then goes through crash recovery; committed
// transactions survive.
func (p *Postgres) Kill() {
	p.mu.Lock()
	proc := p.proc
	p.proc = nil
	p.mu.Unlock()
	if proc != nil {
		proc.kill()
	}
}

// Restart starts the server again on the same port and data directory,
// stopping it first if it is running: the data survives.
func (p *Postgres) Restart(t testing.TB) {
	t.Helper()
	p.Stop()
	// After Kill the new postmaster refuses to start while a killed
	// process still holds the old shared memory block; those exit at once,
	// so starting is retried until the deadline.
	deadline := time.Now().Add(postgresStartTimeout)
	for {
		err := p.start(deadline)
		if err == nil {
			return
		}
		if !errors.Is(err, errPostgresExited) || time.Now().After(deadline) {
			t.Fatalf("testenv: restarting PostgreSQL on port %d: %v\noutput:\n%s", p.port, err, p.out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// start runs postgres on p.port and waits until it accepts a connection.
func (p *Postgres) start(deadline time.Time) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.proc != nil {
		return errors.New("already running")
	}
	fmt.Fprintf(p.out, "--- testenv: starting postgres on port %d\n", p.port)
	cmd := p.command("postgres",
		"-D", p.data,
		"-p", strconv.Itoa(p.port),
		"-k", p.sock,
		"-c", "listen_addresses=127.0.0.1",
		// Fast: nothing is flushed to disk. synchronous_commit stays on:
		// without fsync it costs a write(2), and it makes a commit survive
		// Kill, which only kills processes.
		"-c", "fsync=off",
		"-c", "full_page_writes=off",
		// Dynamic shared memory as files in the data directory, not in
		// /dev/shm, which is small in containers and which a killed server
		// would leave entries in.
		"-c", "dynamic_shared_memory_type=mmap",
	)
	if err := cmd.Start(); err != nil {
		return err
	}
	proc := &postgresProc{cmd: cmd, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(proc.exited)
	}()

	db, err := sql.Open("postgres", p.url("postgres")+"&connect_timeout=1")
	if err != nil {
		proc.kill()
		return err
	}
	defer db.Close()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err = db.PingContext(ctx)
		cancel()
		if err == nil {
			p.proc = proc
			return nil
		}
		select {
		case <-proc.exited:
			return fmt.Errorf("%w (%v)", errPostgresExited, cmd.ProcessState)
		default:
		}
		if time.Now().After(deadline) {
			proc.kill()
			return fmt.Errorf("no connection by the deadline: %w", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// kill ends the server as a crash would: SIGKILL to the postmaster and to
// each of its children, which are leaders of their own process groups, so
// no group signal reaches them. It waits for the postmaster to exit. The
// children are found on Linux only; elsewhere they exit by themselves as
// soon as they notice the postmaster is gone.
func (proc *postgresProc) kill() {
	_ = proc.cmd.Process.Signal(syscall.SIGSTOP) // no new children from here on
	for _, child := range children(proc.cmd.Process.Pid) {
		_ = syscall.Kill(child, syscall.SIGKILL)
	}
	_ = proc.cmd.Process.Kill()
	<-proc.exited
}

// children returns the PIDs of the children of the single-threaded process
// pid, on Linux; elsewhere nothing.
func children(pid int) []int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		return nil
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		if child, err := strconv.Atoi(f); err == nil {
			pids = append(pids, child)
		}
	}
	return pids
}

// cleanup stops the server at the end of the test. A server killed and not
// restarted left its System V shared memory block behind, which only the
// next postmaster on the same data directory would remove: cleanup removes
// it, so that killed servers do not pile up blocks across test runs.
func (p *Postgres) cleanup() {
	p.Stop()
	b, err := os.ReadFile(filepath.Join(p.data, "postmaster.pid"))
	if err != nil {
		return // stopped cleanly: postgres removed the block and this file
	}
	// Line 7 is "KEY ID" of the block.
	lines := strings.Split(string(b), "\n")
	if len(lines) < 7 {
		return
	}
	fields := strings.Fields(lines[6])
	if len(fields) != 2 {
		return
	}
	if _, err := strconv.Atoi(fields[1]); err != nil {
		return
	}
	if out, err := exec.Command("ipcrm", "-m", fields[1]).CombinedOutput(); err != nil {
		fmt.Fprintf(p.out, "--- testenv: ipcrm -m %s: %v %s\n", fields[1], err, out)
	}
}

// command returns an exec.Cmd of one of the server binaries, run as the
// server's user, with a fixed small environment and its output going to
// p.out. It stays in the test's process group, so that an interrupt from
// the terminal reaches it: SIGINT is a fast shutdown.
func (p *Postgres) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(p.bin, name), args...)
	cmd.Dir = p.dir
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "LC_ALL=C", "TZ=UTC"}
	cmd.Stdout = p.out
	cmd.Stderr = p.out
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: p.cred}
	// SIGQUIT: an immediate shutdown, the postmaster taking its backends
	// with it.
	dieWithTest(cmd, syscall.SIGQUIT)
	return cmd
}

// postgresLibGlob is where Debian and Ubuntu keep each installed
// PostgreSQL version's server binaries, off PATH.
const postgresLibGlob = "/usr/lib/postgresql/*/bin"

// findPostgres returns the directory that holds initdb and postgres: the
// one on PATH, else the newest of libGlob's matches (postgresLibGlob
// outside tests).
func findPostgres(libGlob string) (string, bool) {
	if initdb, err := exec.LookPath("initdb"); err == nil {
		// initdb runs the postgres next to it, following symlinks.
		if path, err := filepath.EvalSymlinks(initdb); err == nil && isExecutable(filepath.Join(filepath.Dir(path), "postgres")) {
			return filepath.Dir(path), true
		}
	}
	dirs, _ := filepath.Glob(libGlob)
	version := func(dir string) float64 {
		v, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(dir)), 64)
		return v
	}
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
	for _, dir := range dirs {
		if isExecutable(filepath.Join(dir, "initdb")) && isExecutable(filepath.Join(dir, "postgres")) {
			return dir, true
		}
	}
	return "", false
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// postgresCredential returns the user a root test runs the server as: the
// postgres system user, else nobody.
func postgresCredential() (*syscall.Credential, error) {
	var errs []error
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
		gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
		if err := errors.Join(err1, err2); err != nil {
			errs = append(errs, fmt.Errorf("user %s: %w", name, err))
			continue
		}
		return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}, nil
	}
	return nil, fmt.Errorf("no user to run it as: %w", errors.Join(errs...))
}

// prepareDirs makes dir (fresh, the test's) and the socket directory sock
// inside it belong to uid:gid, and checks that every directory above dir
// lets that user through.
func prepareDirs(dir, sock string, uid, gid int) error {
	if err := os.Mkdir(sock, 0o700); err != nil {
		return err
	}
	for _, d := range []string{dir, sock} {
		if err := os.Chown(d, uid, gid); err != nil {
			return err
		}
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	if uid == os.Getuid() {
		return nil
	}
	for d := filepath.Dir(dir); ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return err
		}
		if !traversable(fi, uid, gid) {
			return fmt.Errorf("%s (mode %v) does not let uid %d through: point TMPDIR at a directory that does", d, fi.Mode().Perm(), uid)
		}
		if d == filepath.Dir(d) {
			return nil
		}
	}
}

// traversable reports whether the directory fi lets uid:gid through.
func traversable(fi os.FileInfo, uid, gid int) bool {
	perm := fi.Mode().Perm()
	st, ok := fi.Sys().(*syscall.Stat_t)
	switch {
	case !ok:
		return perm&0o001 != 0
	case int(st.Uid) == uid:
		return perm&0o100 != 0
	case int(st.Gid) == gid:
		return perm&0o010 != 0
	default:
		return perm&0o001 != 0
	}
}
