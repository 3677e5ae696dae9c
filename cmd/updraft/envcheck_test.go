package main

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/updraft/updraft/internal/testenv"
)

func TestUnknownEnv(t *testing.T) {
	t.Parallel()
	environ := []string{
		"PATH=/usr/bin",
		"UPDRAFT_REDIS_ULR=redis://127.0.0.1:6379/0", // transposed
		"UPDRAFT_JWT_SECRT=s",                        // a letter left out
		"UPDRAFT_ALLOWED_ORIGIN=https://app.example.com",
		"UPDRAFT_HISTORYSIZE=10",
		"UPDRAFT_frobnicate=1",
		"UPDRAFT_FROBNICATE=1",
		"UPDRAFT_REDIS_URL=redis://127.0.0.1:6379/0", // known: the structs
		"UPDRAFT_TRACK_TABLES=orders",
		"UPDRAFT_ADDR=:8080",
		"UPDRAFT_URL=http://127.0.0.1:8080", // known: the CLI
		"UPDRAFT_TOKEN=t",
		"UPDRAFT_BIN=bin/updraft",
		"UPDRAFT_TESTENV_RACE=1",
		"UPDRAFT_TESTENV_ANYTHING=1",
		"UPDRAFT_EMPTY=",
	}
	want := []unknownVar{
		{"UPDRAFT_ALLOWED_ORIGIN", "UPDRAFT_ALLOWED_ORIGINS"},
		{"UPDRAFT_EMPTY", ""},
		{"UPDRAFT_FROBNICATE", ""},
		{"UPDRAFT_HISTORYSIZE", "UPDRAFT_HISTORY_SIZE"},
		{"UPDRAFT_JWT_SECRT", "UPDRAFT_JWT_SECRET"},
		{"UPDRAFT_REDIS_ULR", "UPDRAFT_REDIS_URL"},
		{"UPDRAFT_frobnicate", ""},
	}
	got := unknownEnv(environ)
	if len(got) != len(want) {
		t.Fatalf("unknownEnv = %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("[%d] = %+v, want %+v", i, got[i], want[i])
		}
	}
}

// Every field of the envconfig structs is a known variable: a setting
// another engineer adds is known without touching envcheck.go.
func TestKnownEnvFollowsTheStructs(t *testing.T) {
	t.Parallel()
	known := knownEnv()
	for _, name := range []string{"UPDRAFT_PRESENCE_MAX_STATE", "UPDRAFT_HIDDEN_COLUMNS", "UPDRAFT_LEASE_TTL", "UPDRAFT_LOG_LEVEL", "UPDRAFT_PPROF"} {
		if !known[name] {
			t.Errorf("%s is not known", name)
		}
	}
	type nested struct {
		B int `envconfig:"NESTED_B"`
	}
	type cfg struct {
		A      string `envconfig:"A_SETTING"`
		Inner  nested
		Ignore int `envconfig:"-"`
	}
	k := map[string]bool{}
	addEnvTags(k, reflect.TypeOf(cfg{}))
	if len(k) != 2 || !k["UPDRAFT_A_SETTING"] || !k["UPDRAFT_NESTED_B"] {
		t.Errorf("addEnvTags = %v", k)
	}
}

// The variables the sources name are known: a variable read somewhere new
// (an os.Getenv, a script, a new config struct) fails this until it is in
// envStructs or otherEnv.
func TestKnownEnvCoversTheSources(t *testing.T) {
	t.Parallel()
	known := knownEnv()
	root := filepath.Join("..", "..")
	name := regexp.MustCompile(`UPDRAFT_[A-Z0-9_]*[A-Z0-9]`)
	tag := regexp.MustCompile(`envconfig:"([A-Za-z0-9_]+)"`)
	checked := 0
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			switch d.Name() {
			case ".git", "node_modules", "tmp", "bin", "testdata":
				return filepath.SkipDir
			}
			return nil
		}
		rel, _ := filepath.Rel(root, path)
		source := strings.HasSuffix(rel, ".go") && !strings.HasSuffix(rel, "_test.go") ||
			rel == "Makefile" || strings.HasPrefix(rel, "scripts"+string(filepath.Separator)) ||
			strings.HasPrefix(rel, "deploy"+string(filepath.Separator)) && !strings.HasSuffix(rel, ".md")
		if !source {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		checked++
		names := name.FindAllString(string(b), -1)
		if strings.HasSuffix(rel, ".go") {
			for _, m := range tag.FindAllStringSubmatch(string(b), -1) {
				names = append(names, envPrefix+strings.ToUpper(m[1]))
			}
		}
		for _, n := range names {
			if !known[n] && !hasAnyPrefix(n+"_", otherEnvPrefixes) {
				t.Errorf("%s names %s, which the unknown-variable check does not know: add it to envStructs or otherEnv (cmd/updraft/envcheck.go)", rel, n)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 20 {
		t.Fatalf("checked only %d files under %s", checked, root)
	}
}

func TestEditDistance(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		a, b string
		want int
	}{
		{"", "", 0}, {"A", "", 1}, {"REDIS_ULR", "REDIS_URL", 1}, {"JWT_SECRT", "JWT_SECRET", 1},
		{"ADDR", "ADR", 1}, {"KITTEN", "SITTING", 3}, {"ABC", "CBA", 2},
	} {
		if got := editDistance(tt.a, tt.b); got != tt.want {
			t.Errorf("editDistance(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
	}
}

// `updraft serve` and `updraft tracker` warn about a misspelt variable at
// start-up, naming the one it probably meant.
func TestServeAndTrackerWarnAboutUnknownEnv(t *testing.T) {
	t.Parallel()
	checkWarned := func(t *testing.T, n *testenv.Node) {
		t.Helper()
		testenv.Eventually(t, 5*time.Second, func() bool {
			for _, line := range strings.Split(n.Logs(), "\n") {
				if strings.Contains(line, `"level":"warn"`) && strings.Contains(line, `"variable":"UPDRAFT_REDIS_ULR"`) &&
					strings.Contains(line, `"did_you_mean":"UPDRAFT_REDIS_URL"`) {
					return true
				}
			}
			return false
		}, "a warn line naming UPDRAFT_REDIS_ULR and UPDRAFT_REDIS_URL; log:\n%s", n.Logs())
	}
	t.Run("serve", func(t *testing.T) {
		t.Parallel()
		n := testenv.StartNode(t, map[string]string{"UPDRAFT_ALLOW_ANONYMOUS": "true", "UPDRAFT_REDIS_ULR": "redis://127.0.0.1:1/0"})
		checkWarned(t, n)
	})
	t.Run("tracker", func(t *testing.T) {
		t.Parallel()
		pg, rd := testenv.StartPostgres(t), testenv.StartRedis(t)
		n := testenv.StartTracker(t, map[string]string{"UPDRAFT_DATABASE_URL": pg.URL(), "UPDRAFT_REDIS_URL": rd.URL(), "UPDRAFT_REDIS_ULR": rd.URL()})
		checkWarned(t, n)
	})
}

// When serve cannot start, often because of a misspelt variable, the
// failure says which variables it did not know.
func TestServeFailureNotesUnknownEnv(t *testing.T) {
	setenv(t, map[string]string{"UPDRAFT_JWT_SECRT": "s"})
	var stderr strings.Builder
	if code := run([]string{"serve"}, &strings.Builder{}, &stderr); code != 1 ||
		!strings.Contains(stderr.String(), "updraft serve: UPDRAFT_JWT_SECRET is empty") ||
		!strings.Contains(stderr.String(), "updraft serve: note: unknown environment variable UPDRAFT_JWT_SECRT is ignored; did you mean UPDRAFT_JWT_SECRET?\n") {
		t.Fatalf("exit %d, stderr %q", code, stderr.String())
	}
}
