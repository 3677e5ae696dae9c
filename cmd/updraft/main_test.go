package main

import (
	"bytes"
	"os"
	"os/exec"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/updraft/updraft/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// Help asked for is the answer, not an error: it goes to stdout with exit
// status 0. A mistake still goes to stderr with a non-zero status.
func TestHelpGoesToStdout(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args       []string
		code       int
		wantStdout string // "" wants nothing on stdout
		wantStderr string // "" wants nothing on stderr
	}{
		{[]string{"-h"}, 0, "Usage: updraft COMMAND", ""},
		{[]string{"--help"}, 0, "Usage: updraft COMMAND", ""},
		{[]string{"help"}, 0, "Usage: updraft COMMAND", ""},
		{[]string{"help", "tail"}, 0, "Usage: updraft tail", ""},
		{[]string{"tail", "-h"}, 0, "Usage: updraft tail", ""},
		{[]string{"emit", "--help"}, 0, "Usage: updraft emit", ""},
		{[]string{"presence", "--watch", "-h", "doc/1"}, 0, "Usage: updraft presence", ""},
		{[]string{"token", "-h"}, 0, "Usage: updraft token", ""},
		{[]string{"serve", "-h"}, 0, "Usage: updraft serve", ""},
		{[]string{"bench", "-h"}, 0, "Usage: updraft bench", ""},
		{[]string{"bench", "idle", "-h"}, 0, "Usage: updraft bench idle", ""},
		{[]string{"version", "-h"}, 0, "Usage: updraft version", ""},
		// Mistakes.
		{nil, 2, "", "Usage: updraft COMMAND"},
		{[]string{"nope"}, 2, "", `unknown command "nope"`},
		{[]string{"help", "nope"}, 2, "", `unknown command "nope"`},
		{[]string{"tail", "--nope"}, 2, "", "flag provided but not defined: -nope"},
		{[]string{"tail"}, 2, "", "want at least one TOPIC"},
		// -h as DATA is DATA, not a help flag: emit refuses it before
		// sending anything.
		{[]string{"emit", "--url", "http://127.0.0.1:1", "chat/a", "m", "-h"}, 1, "", "DATA must be JSON"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			t.Parallel()
			var stdout, stderr bytes.Buffer
			code := run(tt.args, &stdout, &stderr)
			if code != tt.code {
				t.Errorf("exit %d, want %d", code, tt.code)
			}
			for _, out := range []struct {
				name, got, want string
			}{{"stdout", stdout.String(), tt.wantStdout}, {"stderr", stderr.String(), tt.wantStderr}} {
				if out.want == "" && out.got != "" || !strings.Contains(out.got, out.want) {
					t.Errorf("%s %q, want %q", out.name, out.got, out.want)
				}
			}
		})
	}
}

func TestVersion(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"version"}, {"--version"}, {"-version"}} {
		var stdout, stderr bytes.Buffer
		if code := run(args, &stdout, &stderr); code != 0 || !strings.HasPrefix(stdout.String(), "updraft ") || stderr.Len() != 0 {
			t.Errorf("%v: exit %d, stdout %q, stderr %q", args, code, stdout.String(), stderr.String())
		}
	}
	var stderr bytes.Buffer
	if code := run([]string{"version", "extra"}, &bytes.Buffer{}, &stderr); code != 2 {
		t.Errorf("version extra: exit %d, stderr %q", code, stderr.String())
	}
}

func TestVersionLine(t *testing.T) {
	t.Parallel()
	stamped := &debug.BuildInfo{
		GoVersion: "go1.26.0",
		Main:      debug.Module{Path: "github.com/updraft/updraft", Version: "v0.3.0"},
		Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "1dc3b9d5a0b1c2d3e4f5"},
			{Key: "vcs.time", Value: "2026-12-08T02:40:00Z"},
			{Key: "vcs.modified", Value: "true"},
		},
	}
	devel := &debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Version: "(devel)"}}
	for _, tt := range []struct {
		override string
		info     *debug.BuildInfo
		want     string
	}{
		{"", stamped, "updraft v0.3.0 (rev 1dc3b9d5a0b1, 2026-12-08T02:40:00Z, modified) go1.26.0"},
		{"v1.0.0", stamped, "updraft v1.0.0 (rev 1dc3b9d5a0b1, 2026-12-08T02:40:00Z, modified) go1.26.0"},
		{"", devel, "updraft (devel) go1.26.0"},
		{"v1.0.0", devel, "updraft v1.0.0 go1.26.0"},
	} {
		if got := versionLine(tt.override, tt.info); got != tt.want {
			t.Errorf("versionLine(%q) = %q, want %q", tt.override, got, tt.want)
		}
	}
}

// The built binary answers --version too.
func TestVersionOfTheBinary(t *testing.T) {
	t.Parallel()
	out, err := exec.Command(testenv.Binary(t), "--version").Output()
	if err != nil || !strings.HasPrefix(string(out), "updraft ") {
		t.Fatalf("updraft --version: %q, %v", out, err)
	}
}
