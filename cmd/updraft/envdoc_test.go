package main

import (
	"os"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/updraft/updraft/broker"
	"github.com/updraft/updraft/durable"
	"github.com/updraft/updraft/gateway"
	"github.com/updraft/updraft/tracker"
)

// TestREADMEConfigTables: README.md's Configuration tables are the ones
// --help-env prints from the configuration structs, between their marker
// comments.
func TestREADMEConfigTables(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		command string
		structs []any
	}{
		{"serve", []any{serveConfig{}}},
		{"tracker", []any{trackerConfig{}, trackerProcessConfig{}}},
	} {
		begin := "<!-- begin: updraft " + c.command + " env table -->\n"
		end := "<!-- end: updraft " + c.command + " env table -->\n"
		_, rest, ok := strings.Cut(string(readme), begin)
		got, _, ok2 := strings.Cut(rest, end)
		if !ok || !ok2 {
			t.Errorf("README.md has no %q ... %q", strings.TrimSpace(begin), strings.TrimSpace(end))
			continue
		}
		var want strings.Builder
		envTable(&want, c.structs...)
		if got != want.String() {
			t.Errorf("README.md's table of `updraft %s` differs from its configuration struct; replace it with the output of `updraft %s --help-env`:\n%s",
				c.command, c.command, want.String())
		}
	}
}

// TestEnvSettingsDocumented: every setting has a meaning, and a default
// or an empty one that means what its description says.
func TestEnvSettingsDocumented(t *testing.T) {
	for _, s := range envStructs {
		st := reflect.TypeOf(s)
		for i := range st.NumField() {
			f := st.Field(i)
			if f.Tag.Get("envconfig") == "" {
				continue
			}
			if f.Tag.Get("desc") == "" {
				t.Errorf("%s.%s has no desc tag: README.md's table would leave its meaning empty", st.Name(), f.Name)
			}
			if strings.ContainsAny(f.Tag.Get("desc"), "|`") {
				t.Errorf("%s.%s: desc holds | or a backquote; write code as {x}", st.Name(), f.Name)
			}
		}
	}
}

// TestEnvDefaultsMatchPackages: the packages' Default* constants, used
// when a Config field is zero, are the defaults the envconfig tags give,
// so a library user and `updraft serve` get the same behaviour.
func TestEnvDefaultsMatchPackages(t *testing.T) {
	for _, c := range []struct {
		s     any
		field string
		want  any
	}{
		{serveConfig{}, "HistorySize", broker.DefaultHistorySize},
		{serveConfig{}, "HistoryTTL", broker.DefaultHistoryTTL},
		{serveConfig{}, "MaxMessage", gateway.DefaultMaxMessage},
		{serveConfig{}, "ClientRate", float64(gateway.DefaultClientRate)},
		{serveConfig{}, "MaxSubscriptions", gateway.DefaultMaxSubscriptions},
		{serveConfig{}, "SendQueue", gateway.DefaultSendQueue},
		{serveConfig{}, "NodeQueueBytes", int64(gateway.DefaultNodeQueueBytes)},
		{serveConfig{}, "MaxRecovery", gateway.DefaultMaxRecovery},
		{serveConfig{}, "Heartbeat", gateway.DefaultHeartbeat},
		{serveConfig{}, "DrainTimeout", gateway.DefaultDrainTimeout},
		{serveConfig{}, "StreamIdle", gateway.DefaultStreamIdleTimeout},
		{serveConfig{}, "HTTPIdleTimeout", gateway.DefaultHTTPIdleTimeout},
		{serveConfig{}, "HTTPBodyTimeout", gateway.DefaultBodyTimeout},
		{serveConfig{}, "PresenceTimeout", gateway.DefaultPresenceTimeout},
		{serveConfig{}, "PresenceRate", float64(gateway.DefaultPresenceRate)},
		{serveConfig{}, "PresenceMaxState", gateway.DefaultMaxPresenceState},
		{serveConfig{}, "PersistRetentionDays", int(durable.DefaultRetention / (24 * time.Hour))},
		{trackerConfig{}, "PollInterval", tracker.DefaultPollInterval},
		{trackerConfig{}, "ChangeRetention", tracker.DefaultRetention},
		{trackerConfig{}, "LeaseTTL", tracker.DefaultLeaseTTL},
		{trackerConfig{}, "MaxRow", tracker.DefaultMaxRow},
	} {
		f, ok := reflect.TypeOf(c.s).FieldByName(c.field)
		if !ok {
			t.Fatalf("%T has no field %s", c.s, c.field)
		}
		got := parseDefault(t, f)
		if got != c.want {
			t.Errorf("%T.%s: default tag %q = %v, want the package's %v", c.s, c.field, f.Tag.Get("default"), got, c.want)
		}
	}
}

// parseDefault parses f's default tag as envconfig would.
func parseDefault(t *testing.T, f reflect.StructField) any {
	t.Helper()
	d := f.Tag.Get("default")
	var v any
	var err error
	switch f.Type {
	case reflect.TypeFor[time.Duration]():
		v, err = time.ParseDuration(d)
	case reflect.TypeFor[int]():
		v, err = strconv.Atoi(d)
	case reflect.TypeFor[int64]():
		v, err = strconv.ParseInt(d, 10, 64)
	case reflect.TypeFor[float64]():
		v, err = strconv.ParseFloat(d, 64)
	default:
		t.Fatalf("%s: no parser for %v", f.Name, f.Type)
	}
	if err != nil {
		t.Fatalf("%s: default %q: %v", f.Name, d, err)
	}
	return v
}

// TestHelpEnv: --help-env prints the table and starts nothing, whatever
// the environment holds.
func TestHelpEnv(t *testing.T) {
	setenv(t, map[string]string{"UPDRAFT_HISTORY_SIZE": "lots"}) // would stop start-up
	for _, command := range []string{"serve", "tracker"} {
		var stdout, stderr strings.Builder
		if code := run([]string{command, "--help-env"}, &stdout, &stderr); code != 0 ||
			!strings.HasPrefix(stdout.String(), "| variable | default | meaning |\n") || !strings.Contains(stdout.String(), "| `UPDRAFT_ADDR` |") {
			t.Errorf("updraft %s --help-env: exit %d, stdout %q, stderr %q", command, code, stdout.String(), stderr.String())
		}
	}
}
