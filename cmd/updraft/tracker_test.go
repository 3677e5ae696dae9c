package main

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/updraft/updraft/internal/testenv"
)

// trackerVars are the variables of the tracker's configuration.
var trackerVars = []string{"DATABASE_URL", "TRACK_TABLES", "POLL_INTERVAL", "HIDDEN_COLUMNS", "CHANGE_RETENTION",
	"LEASE_TTL", "TRACKER_NOTIFY", "MAX_ROW", "REDIS_URL", "ADDR", "LOG_LEVEL", "NODE_ID"}

func setTrackerEnv(t *testing.T, vars map[string]string) {
	t.Helper()
	for _, name := range trackerVars {
		t.Setenv("UPDRAFT_"+name, "") // restores the variable after the test
		os.Unsetenv("UPDRAFT_" + name)
	}
	for k, v := range vars {
		t.Setenv(k, v)
	}
}

func TestTrackerConfigDefaults(t *testing.T) {
	setTrackerEnv(t, nil)
	c, err := loadTrackerConfig()
	if err != nil {
		t.Fatal(err)
	}
	if c.PollInterval != 200*time.Millisecond || c.ChangeRetention != 24*time.Hour || c.LeaseTTL != 5*time.Second ||
		c.Notify || c.MaxRow != 256<<10 || len(c.TrackTables) != 0 {
		t.Fatalf("defaults: %+v", c)
	}
}

// Every bad value stops start-up with a message naming the variable.
func TestTrackerConfigErrorsNameTheVariable(t *testing.T) {
	for _, c := range []struct {
		vars map[string]string
		want string
	}{
		{map[string]string{"UPDRAFT_POLL_INTERVAL": "fast"}, "UPDRAFT_POLL_INTERVAL"},
		{map[string]string{"UPDRAFT_POLL_INTERVAL": "1ms"}, "UPDRAFT_POLL_INTERVAL"},
		{map[string]string{"UPDRAFT_CHANGE_RETENTION": "1s"}, "UPDRAFT_CHANGE_RETENTION"},
		{map[string]string{"UPDRAFT_LEASE_TTL": "100ms"}, "UPDRAFT_LEASE_TTL"},
		{map[string]string{"UPDRAFT_LEASE_TTL": "2s", "UPDRAFT_POLL_INTERVAL": "1s"}, "UPDRAFT_LEASE_TTL"},
		{map[string]string{"UPDRAFT_TRACKER_NOTIFY": "sometimes"}, "UPDRAFT_TRACKER_NOTIFY"},
		{map[string]string{"UPDRAFT_MAX_ROW": "10"}, "UPDRAFT_MAX_ROW"},
	} {
		setTrackerEnv(t, c.vars)
		_, err := loadTrackerConfig()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: error %v, want it to name %s", c.vars, err, c.want)
		}
	}
}

// `updraft tracker` refuses to start without what it needs, saying which.
func TestTrackerCommandNeeds(t *testing.T) {
	for _, c := range []struct {
		vars map[string]string
		want string
	}{
		{map[string]string{}, "UPDRAFT_DATABASE_URL is required"},
		{map[string]string{"UPDRAFT_DATABASE_URL": "postgres://127.0.0.1:1/x"}, "UPDRAFT_REDIS_URL is required"},
	} {
		setTrackerEnv(t, c.vars)
		var stdout, stderr bytes.Buffer
		err := runTracker(context.Background(), nil, &stdout, &stderr)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: error %v, want %q", c.vars, err, c.want)
		}
	}
	setTrackerEnv(t, nil)
	var stdout, stderr bytes.Buffer
	if err := runTrack(context.Background(), nil, &stdout, &stderr); err != errUsage || !strings.Contains(stderr.String(), "Usage: updraft track [--unhide TABLE.COLUMN]... TABLE") {
		t.Errorf("track without a table: %v, %q", err, stderr.String())
	}
}

// `updraft track` keeps a table's hidden columns when run again without
// UPDRAFT_HIDDEN_COLUMNS, reveals one only with --unhide (accepted after
// the tables too), and refuses Updraft's own tables.
func TestTrackCommand(t *testing.T) {
	pg := testenv.StartPostgres(t)
	db := pg.DB(t)
	if _, err := db.Exec(`CREATE TABLE users (id int PRIMARY KEY, email text, password_hash text)`); err != nil {
		t.Fatal(err)
	}
	track := func(hidden string, args ...string) (string, error) {
		t.Helper()
		setTrackerEnv(t, map[string]string{"UPDRAFT_DATABASE_URL": pg.URL(), "UPDRAFT_HIDDEN_COLUMNS": hidden})
		var stdout, stderr bytes.Buffer
		err := runTrack(context.Background(), args, &stdout, &stderr)
		return stdout.String() + stderr.String(), err
	}
	if out, err := track("users.password_hash", "users"); err != nil || !strings.Contains(out, "hidden columns: password_hash") {
		t.Fatalf("track users: %v\n%s", err, out)
	}
	out, err := track("", "users")
	if err != nil || !strings.Contains(out, "hidden columns: password_hash (password_hash kept from before; reveal with --unhide users.password_hash)") {
		t.Errorf("track users again without the setting: %v\n%s", err, out)
	}
	if _, err := track("users.email", "users"); err == nil || !strings.Contains(err.Error(), "--unhide users.password_hash users") {
		t.Errorf("narrowing by the setting: %v", err)
	}
	if _, err := track("", "users", "--unhide", "orders.x"); err == nil || !strings.Contains(err.Error(), "--unhide orders.x") {
		t.Errorf("--unhide of a table not tracked: %v", err)
	}
	if out, err := track("", "users", "--unhide", "users.password_hash"); err != nil || !strings.Contains(out, "no hidden columns; revealed: password_hash") {
		t.Errorf("--unhide: %v\n%s", err, out)
	}
	if _, err := track("", "updraft.changes"); err == nil || !strings.Contains(err.Error(), "cannot be tracked: schema updraft is Updraft's own") {
		t.Errorf("track updraft.changes: %v", err)
	}
	// Writes to the tracked table still work.
	if _, err := db.Exec(`INSERT INTO users VALUES (1, 'a@example.com', 'h')`); err != nil {
		t.Errorf("insert into a tracked table: %v", err)
	}
}
