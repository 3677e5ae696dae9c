package e2e

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/updraft/updraft/internal/testenv"
)

// TestMakeDB: `make db` starts a throwaway PostgreSQL with the sample
// orders table and prints `export DB=...`; run again it prints the same;
// `make db-down` stops exactly the server it started, by PID.
func TestMakeDB(t *testing.T) {
	// Not t.TempDir(): the server may run as another user, who must reach
	// the directory.
	dir, err := os.MkdirTemp("", "updraft-makedb-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	dir = filepath.Join(dir, "db")
	port := testenv.FreePort(t)
	makeTarget := func(target string) string {
		t.Helper()
		cmd := exec.Command("make", "-s", target)
		cmd.Dir = ".."
		cmd.Env = append(os.Environ(), "DB_PORT="+strconv.Itoa(port), "DB_DIR="+dir)
		cmd.WaitDelay = 5 * time.Second // the server started must not hold our pipes
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("make %s: %v\n%s%s", target, err, out, stderr.String())
		}
		return string(out)
	}
	t.Cleanup(func() { makeTarget("db-down") })

	out := makeTarget("db")
	url, ok := strings.CutPrefix(strings.TrimSpace(out), "export DB=")
	url = strings.Trim(url, "'")
	if want := "postgres://updraft@127.0.0.1:" + strconv.Itoa(port) + "/updraft?sslmode=disable"; !ok || url != want {
		t.Fatalf("make db printed %q, want export DB='%s'", out, want)
	}
	db, err := sql.Open("postgres", url)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var n int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM orders WHERE customer_id IS NOT NULL AND status <> '' AND total > 0`).Scan(&n); err != nil || n != 3 {
		t.Fatalf("orders: %d rows, %v; want 3", n, err)
	}
	if _, err := db.ExecContext(ctx, `INSERT INTO orders (customer_id, status, total) VALUES (7, 'new', 19.90)`); err != nil {
		t.Fatal(err)
	}
	db.Close()

	if again := makeTarget("db"); again != out {
		t.Errorf("make db while it runs printed %q, want %q", again, out)
	}
	b, err := os.ReadFile(filepath.Join(dir, "pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || syscall.Kill(pid, 0) != nil {
		t.Fatalf("the recorded pid %q is not a running process (%v)", b, err)
	}

	makeTarget("db-down")
	testenv.Eventually(t, 10*time.Second, func() bool { return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) },
		"PostgreSQL (pid %d) still runs after make db-down", pid)
	if _, err := os.Stat(filepath.Join(dir, "data")); !os.IsNotExist(err) {
		t.Errorf("make db-down left the data directory: %v", err)
	}
}
