package main

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"strings"
)

// version, when set at link time (go build -ldflags "-X main.version=v1.2.3"),
// is the version updraft reports; otherwise it is the module version the Go
// toolchain stamped into the binary.
var version string

// runVersion prints the version, the VCS revision the binary was built
// from when known, and the Go version.
func runVersion(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("version", stderr)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage: updraft version\n\nPrints updraft's version, the revision it was built from when known, and the Go version.")
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return badArgs(fs, "want no arguments, got %d", fs.NArg())
	}
	info, _ := debug.ReadBuildInfo()
	_, err := fmt.Fprintln(stdout, versionLine(version, info))
	return err
}

// versionLine describes the build: "updraft v1.2.3 (rev 1dc3b9d5a0b1,
// 2026-12-08T02:40:00Z, modified) go1.26.0". override, when not empty,
// replaces the module version; info may be nil.
func versionLine(override string, info *debug.BuildInfo) string {
	v := override
	var vcs []string
	goVersion := runtime.Version()
	if info != nil {
		if v == "" {
			v = info.Main.Version
		}
		goVersion = info.GoVersion
		var rev, at string
		modified := false
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.time":
				at = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
		if rev != "" {
			vcs = append(vcs, "rev "+rev[:min(len(rev), 12)])
			if at != "" {
				vcs = append(vcs, at)
			}
			if modified {
				vcs = append(vcs, "modified")
			}
		}
	}
	if v == "" {
		v = "(devel)"
	}
	line := "updraft " + v
	if len(vcs) > 0 {
		line += " (" + strings.Join(vcs, ", ") + ")"
	}
	return line + " " + goVersion
}
