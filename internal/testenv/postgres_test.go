package testenv

import (
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func countRows(t *testing.T, db *sql.DB) int {
	t.Helper()
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM t`).Scan(&n); err != nil {
		t.Fatalf("counting rows: %v", err)
	}
	return n
}

func insertRows(t *testing.T, db *sql.DB, from, to int) {
	t.Helper()
	if _, err := db.Exec(`INSERT INTO t SELECT generate_series($1::int, $2::int)`, from, to); err != nil {
		t.Fatalf("inserting %d..%d: %v", from, to, err)
	}
}

func TestPostgres(t *testing.T) {
	t.Parallel()
	start := time.Now()
	pg := StartPostgres(t)
	t.Logf("StartPostgres took %v", time.Since(start))

	port, ok := strings.CutPrefix(pg.URL(), "postgres://updraft@127.0.0.1:")
	port, ok2 := strings.CutSuffix(port, "/updraft?sslmode=disable")
	if _, err := strconv.Atoi(port); !ok || !ok2 || err != nil {
		t.Errorf("URL %q", pg.URL())
	}
	db := pg.DB(t)
	var name, user, encoding, dataDir string
	if err := db.QueryRow(`SELECT current_database(), current_user, pg_encoding_to_char(encoding), current_setting('data_directory')
		FROM pg_database WHERE datname = current_database()`).Scan(&name, &user, &encoding, &dataDir); err != nil {
		t.Fatal(err)
	}
	if name != "updraft" || user != "updraft" || encoding != "UTF8" {
		t.Errorf("database %q, user %q, encoding %q; want updraft, updraft, UTF8", name, user, encoding)
	}
	if pid := pg.PID(); pid == 0 || syscall.Kill(pid, 0) != nil {
		t.Errorf("PID %d is not a running process", pid)
	}
	// As root, the server runs as another user.
	fi, err := os.Stat(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	owner := int(fi.Sys().(*syscall.Stat_t).Uid)
	if os.Geteuid() == 0 && owner == 0 || os.Geteuid() != 0 && owner != os.Geteuid() {
		t.Errorf("data directory %s belongs to uid %d; the test runs as %d", dataDir, owner, os.Geteuid())
	}
}

// TestPostgresRestart: data survives Stop and Restart, and Kill and
// Restart, on the same URL; an open *sql.DB reconnects.
func TestPostgresRestart(t *testing.T) {
	t.Parallel()
	pg := StartPostgres(t)
	db := pg.DB(t)
	if _, err := db.Exec(`CREATE TABLE t (n int)`); err != nil {
		t.Fatal(err)
	}
	insertRows(t, db, 1, 100)

	pid := pg.PID()
	pg.Stop()
	if pg.PID() != 0 {
		t.Fatalf("PID %d after Stop, want 0", pg.PID())
	}
	if err := db.Ping(); err == nil {
		t.Fatal("ping succeeded after Stop")
	}
	pg.Restart(t)
	if pg.PID() == pid || pg.PID() == 0 {
		t.Fatalf("PID %d after Restart, was %d", pg.PID(), pid)
	}
	if n := countRows(t, db); n != 100 {
		t.Fatalf("%d rows after Stop and Restart, want 100", n)
	}

	// A committed transaction survives a crash of every server process.
	insertRows(t, db, 101, 200)
	pid = pg.PID()
	kids := children(pid)
	if runtime.GOOS == "linux" && len(kids) == 0 {
		t.Errorf("postmaster %d has no children", pid)
	}
	pg.Kill()
	if pg.PID() != 0 {
		t.Fatalf("PID %d after Kill, want 0", pg.PID())
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("postmaster %d after Kill: %v, want ESRCH", pid, err)
	}
	for _, kid := range kids {
		Eventually(t, 5*time.Second, func() bool { return !running(kid) }, "server process %d still running after Kill", kid)
	}
	if err := db.Ping(); err == nil {
		t.Fatal("ping succeeded after Kill")
	}
	pg.Restart(t)
	if n := countRows(t, db); n != 200 {
		t.Fatalf("%d rows after Kill and Restart, want 200", n)
	}

	// Restarting a running server stops it first.
	pid = pg.PID()
	pg.Restart(t)
	if pg.PID() == pid {
		t.Fatalf("PID %d unchanged by Restart", pid)
	}
	if n := countRows(t, db); n != 200 {
		t.Fatalf("%d rows after restarting a running server, want 200", n)
	}
}

// running reports whether process pid exists and is not a zombie.
func running(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return syscall.Kill(pid, 0) == nil // not Linux, or gone
	}
	// "pid (comm) state ...": comm may hold spaces and parentheses.
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return len(fields) > 0 && fields[0] != "Z"
}

// TestPostgresKilledAtEnd: a server killed and never restarted is cleaned
// up when its test ends: its directory and its System V shared memory
// block, which only a postmaster on the same data directory would remove.
func TestPostgresKilledAtEnd(t *testing.T) {
	t.Parallel()
	var pg *Postgres
	var shmid string
	t.Run("kill", func(t *testing.T) {
		pg = StartPostgres(t)
		pg.Kill()
		pg.Kill() // does nothing
		pg.Stop() // does nothing
		b, err := os.ReadFile(filepath.Join(pg.data, "postmaster.pid"))
		if err != nil {
			t.Fatalf("no postmaster.pid after Kill: %v", err)
		}
		if lines := strings.Split(string(b), "\n"); len(lines) > 6 {
			if f := strings.Fields(lines[6]); len(f) == 2 {
				shmid = f[1]
			}
		}
	})
	if _, err := os.Stat(pg.dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s after the test: %v, want it removed", pg.dir, err)
	}
	if shmid == "" {
		t.Fatal("no shared memory block ID in postmaster.pid")
	}
	// Linux lists System V shared memory blocks here: "key shmid ...".
	b, err := os.ReadFile("/proc/sysvipc/shm")
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[1] == shmid {
			t.Errorf("shared memory block %s left behind: %s\nserver output:\n%s", shmid, line, pg.out.String())
		}
	}
}

// TestPostgresParallel: servers started side by side share nothing.
func TestPostgresParallel(t *testing.T) {
	t.Parallel()
	const servers = 2
	var (
		mu   sync.Mutex
		urls = map[string]bool{} // guarded by mu
	)
	for i := range servers {
		t.Run(strconv.Itoa(i), func(t *testing.T) {
			t.Parallel()
			pg := StartPostgres(t)
			mu.Lock()
			urls[pg.URL()] = true
			mu.Unlock()
			db := pg.DB(t)
			if _, err := db.Exec(`CREATE TABLE t (n int)`); err != nil {
				t.Fatal(err)
			}
			want := 10 * (i + 1)
			insertRows(t, db, 1, want)
			if n := countRows(t, db); n != want {
				t.Errorf("%d rows, want %d", n, want)
			}
		})
	}
	t.Cleanup(func() {
		if len(urls) != servers {
			t.Errorf("%d servers had %d URLs: %v", servers, len(urls), urls)
		}
	})
}

// TestFindPostgres: PATH first, following symlinks to the directory that
// also holds postgres; else the newest version under the library
// directory; else nothing.
func TestFindPostgres(t *testing.T) {
	root := t.TempDir()
	server := func(dir string, names ...string) string {
		t.Helper()
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, name := range names {
			if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		return dir
	}
	lib := filepath.Join(root, "lib", "postgresql")
	server(filepath.Join(lib, "9.6", "bin"), "initdb", "postgres")
	v10 := server(filepath.Join(lib, "10", "bin"), "initdb", "postgres")
	v13 := server(filepath.Join(lib, "13", "bin"), "initdb", "postgres")
	server(filepath.Join(lib, "17", "bin"), "initdb") // no postgres: skipped
	libGlob := filepath.Join(lib, "*", "bin")
	onPath := filepath.Join(root, "path")
	server(onPath)

	for _, tc := range []struct {
		name  string
		setup func() // the cases run in order, each on the last one's files
		want  string
	}{
		{name: "newest in lib", want: v13},
		{name: "PATH without postgres", setup: func() { server(onPath, "initdb") }, want: v13},
		{name: "PATH", setup: func() {
			os.Remove(filepath.Join(onPath, "initdb"))
			if err := os.Symlink(filepath.Join(v10, "initdb"), filepath.Join(onPath, "initdb")); err != nil {
				t.Fatal(err)
			}
		}, want: v10},
		{name: "none", setup: func() { os.RemoveAll(lib) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("PATH", onPath)
			if tc.setup != nil {
				tc.setup()
			}
			got, ok := findPostgres(libGlob)
			if got != tc.want || ok != (tc.want != "") {
				t.Errorf("findPostgres: %q %v, want %q", got, ok, tc.want)
			}
		})
	}
}

// BenchmarkStartPostgres measures StartPostgres: initdb, start, CREATE
// DATABASE. Each server is stopped at once; its files go when the
// benchmark ends.
func BenchmarkStartPostgres(b *testing.B) {
	for b.Loop() {
		StartPostgres(b).Stop()
	}
}
