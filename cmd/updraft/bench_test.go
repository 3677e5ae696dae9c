package main

import (
	"bytes"
	"os"
	"slices"
	"strings"
	"testing"
)

// benchCmd runs `updraft bench args...` and returns its exit code and
// output.
func benchCmd(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(append([]string{"bench"}, args...), &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

// A bad invocation exits 2 with a message that names the flag and says
// why, before connecting anywhere.
func TestBenchBadFlagsSayWhichAndWhy(t *testing.T) {
	t.Setenv("UPDRAFT_DATABASE_URL", "")
	os.Unsetenv("UPDRAFT_DATABASE_URL")
	const ws, api = "--ws=ws://127.0.0.1:1/api/realtime", "--api=http://127.0.0.1:1"
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no scenario", nil, "Usage: updraft bench SCENARIO"},
		{"unknown scenario", []string{"fan-out", ws}, `unknown scenario "fan-out": want fanout, saturate, idle, topics or db`},
		{"flags first", []string{ws, "fanout"}, "want the scenario first"},
		{"no ws", []string{"fanout", api}, "--ws is required"},
		{"bad ws", []string{"fanout", "--ws", "ftp://h", api}, `--ws "ftp://h" is not a WebSocket URL`},
		{"no api", []string{"fanout", ws}, "--api is required by fanout"},
		{"bad api", []string{"topics", ws, "--api", "127.0.0.1:8080"}, `--api "127.0.0.1:8080" is not an http:// or https:// base URL`},
		{"negative rate", []string{"fanout", ws, api, "--rate", "-5"}, "--rate must be a positive number of messages a second, not -5"},
		{"zero subscribers", []string{"fanout", ws, api, "--subscribers", "0"}, "--subscribers must be at least 1, not 0"},
		{"small size", []string{"saturate", ws, api, "--size", "16"}, "--size must be at least 37 bytes"},
		{"flag of another scenario", []string{"idle", ws, "--rate", "5"}, "--rate does not apply to idle (only to fanout, topics, db)"},
		{"idle over the fd limit", []string{"idle", ws, "--connections", "100000000"}, "--connections asks for 100000000 connections"},
		{"db without database", []string{"db", ws}, "--database is required by db (or set UPDRAFT_DATABASE_URL)"},
		{"db bad table", []string{"db", ws, "--database", "postgres://x", "--table", "a-b"}, `--table must be a table name`},
		{"missing pid", []string{"fanout", ws, api, "--pid", "2000000000"}, "--pid process 2000000000:"},
		{"pid not a number", []string{"fanout", ws, api, "--pid", "gw1"}, `"gw1" is not a process id`},
		{"stray argument", []string{"fanout", ws, api, "extra"}, `unexpected argument "extra"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := benchCmd(t, tt.args...)
			if code != 2 || stdout != "" || !strings.Contains(stderr, tt.want) {
				t.Fatalf("exit %d, stdout %q, stderr:\n%s\nwant exit 2 and %q", code, stdout, stderr, tt.want)
			}
		})
	}
}

func TestBenchScenarioHelpShowsItsFlags(t *testing.T) {
	t.Parallel()
	code, stderr, _ := benchCmd(t, "idle", "-h") // help goes to stdout
	if code != 0 {
		t.Errorf("idle -h: exit %d", code)
	}
	for _, want := range []string{"Usage: updraft bench idle", "-connections", "(default 10000)", "-pid", "-ws"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("idle -h lacks %q:\n%s", want, stderr)
		}
	}
	for _, other := range []string{"-rate", "-subscribers ", "-window"} {
		if strings.Contains(stderr, other) {
			t.Errorf("idle -h shows %s, which idle does not take:\n%s", other, stderr)
		}
	}
	_, stderr, _ = benchCmd(t, "topics", "-h")
	if !strings.Contains(stderr, "(default 2000)") || !strings.Contains(stderr, "-subscribers-per-topic") {
		t.Errorf("topics -h does not show its defaults:\n%s", stderr)
	}
}

// A gateway that cannot be reached fails the run (exit 1) with the
// connection and the reason.
func TestBenchUnreachableGateway(t *testing.T) {
	t.Parallel()
	code, stdout, stderr := benchCmd(t, "fanout", "--ws", "ws://127.0.0.1:1", "--api", "http://127.0.0.1:1", "--subscribers", "2", "--duration", "1s")
	// Either connection may fail first: they are dialled in parallel.
	if code != 1 || stdout != "" || !strings.Contains(stderr, "updraft bench: fanout run 1: connection ") ||
		!strings.Contains(stderr, " to ws://127.0.0.1:1/api/realtime: dial tcp 127.0.0.1:1: connect: connection refused") {
		t.Fatalf("exit %d, stdout %q, stderr:\n%s", code, stdout, stderr)
	}
}

func TestBenchHello(t *testing.T) {
	t.Parallel()
	if got := string(hello("", "bench/ab/fanout")); got != `{"type":"connect","ref":"c","sdk":"updraft-bench"}`+"\n"+`{"type":"subscribe","ref":"s","topic":"bench/ab/fanout"}` {
		t.Errorf("anonymous hello: %s", got)
	}
	if got := string(hello("a.b.c", "bench_rows")); !strings.Contains(got, `"sdk":"updraft-bench","token":"a.b.c"}`) {
		t.Errorf("hello with a token: %s", got)
	}
}

func TestBenchListFlags(t *testing.T) {
	t.Parallel()
	var urls urlList
	urls.Set("ws://a, ws://b")
	urls.Set("ws://c")
	if !slices.Equal(urls, urlList{"ws://a", "ws://b", "ws://c"}) {
		t.Errorf("urls %q", urls)
	}
	var pids pidList
	if err := pids.Set("12,34"); err != nil || pids.Set("56") != nil || !slices.Equal(pids, pidList{12, 34, 56}) || pids.String() != "12,34,56" {
		t.Errorf("pids %v, %v", pids, err)
	}
	for ws, want := range map[string]string{
		"ws://127.0.0.1:8081/api/realtime": "http://127.0.0.1:8081/metrics",
		"wss://rt.example.com/ws?x=1":      "https://rt.example.com/metrics",
	} {
		if got, err := metricsURL(ws); err != nil || got != want {
			t.Errorf("metricsURL(%s) = %s, %v; want %s", ws, got, err, want)
		}
	}
}
