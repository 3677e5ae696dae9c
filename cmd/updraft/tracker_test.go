package main

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

// trackerVars are the variables of the tracker's configuration.
var trackerVars = []string{"DATABASE_URL", "TRACK_TABLES", "POLL_INTERVAL", "HIDDEN_COLUMNS", "CHANGE_RETENTION",
	"LEASE_TTL", "TRACKER_NOTIFY", "MAX_ROW", "REDIS_URL", "ADDR", "LOG_LEVEL"}

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
	if err := runTrack(context.Background(), nil, &stdout, &stderr); err != errUsage || !strings.Contains(stderr.String(), "Usage: updraft track TABLE") {
		t.Errorf("track without a table: %v, %q", err, stderr.String())
	}
}
