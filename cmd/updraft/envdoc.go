package main

import (
	"fmt"
	"io"
	"reflect"
	"strings"
	"time"

	"go.uber.org/zap/zapcore"
)

// The configuration structs (serveConfig, trackerConfig,
// trackerProcessConfig) are the one source of every UPDRAFT_* setting: the
// envconfig tag names it, default gives its default (doc_default, when
// the default is computed, says what it is) and desc its meaning. From
// them come the unknown-variable warnings (envcheck.go), the tables of
// `updraft serve --help-env` and `updraft tracker --help-env`, and so
// README.md's Configuration tables, which TestREADMEConfigTables keeps
// equal to them.

// envTable writes the Markdown table of the settings of structs, in field
// order; a variable in more than one struct is listed once, with its first
// description.
func envTable(w io.Writer, structs ...any) {
	fmt.Fprintln(w, "| variable | default | meaning |")
	fmt.Fprintln(w, "| --- | --- | --- |")
	seen := make(map[string]bool)
	for _, s := range structs {
		writeEnvRows(w, reflect.TypeOf(s), seen)
	}
}

func writeEnvRows(w io.Writer, t reflect.Type, seen map[string]bool) {
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("envconfig")
		switch {
		case tag == "" && f.Type.Kind() == reflect.Struct && f.Type.PkgPath() == t.PkgPath():
			writeEnvRows(w, f.Type, seen)
			continue
		case tag == "" || tag == "-":
			continue
		}
		name := envPrefix + strings.ToUpper(tag)
		if seen[name] {
			continue
		}
		seen[name] = true
		def := "empty"
		if d, ok := f.Tag.Lookup("doc_default"); ok {
			def = "`" + d + "`"
		} else if d := f.Tag.Get("default"); d != "" {
			def = "`" + d + "`"
		}
		fmt.Fprintf(w, "| `%s` | %s | %s |\n", name, def, descMarkdown(f.Tag.Get("desc")))
	}
}

// descMarkdown turns a desc tag into Markdown: {x} is the code span `x`
// (a struct tag cannot hold backquotes).
func descMarkdown(desc string) string {
	return strings.NewReplacer("{", "`", "}", "`").Replace(desc)
}

// helpEnvUsage is the usage line of the --help-env flag.
const helpEnvUsage = "print the UPDRAFT_* variables read, with their defaults and meanings, as README.md's Markdown table, and exit"

// The checks of the validate methods: each names the variable and the
// values it allows, and says what it got.

// firstError returns the first non-nil of errs.
func firstError(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// atLeast checks that v, the value of the variable name, is at least min.
func atLeast[T int | int64 | float64 | time.Duration](name string, v, min T) error {
	if v < min {
		return fmt.Errorf("%s must be at least %v, not %v", name, min, v)
	}
	return nil
}

// positive checks that v, the value of the variable name, is above zero.
func positive[T int | int64 | float64 | time.Duration](name string, v T) error {
	if v <= 0 {
		return fmt.Errorf("%s must be positive, not %v", name, v)
	}
	return nil
}

// between checks that v, the value of the variable name, is within
// [min, max].
func between[T int | int64 | float64 | time.Duration](name string, v, min, max T) error {
	if v < min || v > max {
		return fmt.Errorf("%s must be between %v and %v, not %v", name, min, max, v)
	}
	return nil
}

// validateLogLevel checks UPDRAFT_LOG_LEVEL.
func validateLogLevel(level string) error {
	if _, err := zapcore.ParseLevel(level); err != nil {
		return fmt.Errorf("UPDRAFT_LOG_LEVEL: %q is not one of debug, info, warn, error", level)
	}
	return nil
}
