package main

import (
	"fmt"
	"io"
	"reflect"
	"sort"
	"strings"

	"go.uber.org/zap"
)

// envPrefix starts the name of every variable updraft reads.
const envPrefix = "UPDRAFT_"

// envStructs are the configuration structs read with
// envconfig.Process("UPDRAFT", ...): their envconfig tags name the
// settings, so a setting added to one is known here without more ado.
var envStructs = []any{serveConfig{}, trackerConfig{}, trackerProcessConfig{}}

// otherEnv are the UPDRAFT_* variables read outside envStructs, and who
// reads them. TestKnownEnvCoversTheSources fails when a variable read in
// the sources is in neither.
var otherEnv = []string{
	"UPDRAFT_URL",        // emit, tail, presence: the gateway's base URL
	"UPDRAFT_API_KEY",    // emit, presence (serve reads it too)
	"UPDRAFT_TOKEN",      // tail, presence --watch and --track
	"UPDRAFT_JWT_SECRET", // token (serve reads it too)
	"UPDRAFT_BIN",        // scripts/bench.sh, scripts/cluster.sh
}

// otherEnvPrefixes start the names of families of variables read outside
// envStructs.
var otherEnvPrefixes = []string{
	"UPDRAFT_TESTENV_", // internal/testenv and its tests
}

// knownEnv returns the names of the UPDRAFT_* variables updraft reads.
func knownEnv() map[string]bool {
	known := make(map[string]bool)
	for _, s := range envStructs {
		addEnvTags(known, reflect.TypeOf(s))
	}
	for _, name := range otherEnv {
		known[name] = true
	}
	return known
}

// addEnvTags adds the variables named by t's envconfig tags, following
// embedded and nested structs as envconfig does for untagged ones.
func addEnvTags(known map[string]bool, t reflect.Type) {
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("envconfig")
		switch {
		case tag != "" && tag != "-":
			known[envPrefix+strings.ToUpper(tag)] = true
		case tag == "" && f.Type.Kind() == reflect.Struct && f.Type.PkgPath() == t.PkgPath():
			addEnvTags(known, f.Type)
		}
	}
}

// envCommands are the commands configured by UPDRAFT_* variables: they
// warn about unknown ones at start-up, and when they fail to start.
var envCommands = map[string]bool{"serve": true, "tracker": true}

// warnUnknownEnv logs a warning for every UPDRAFT_* variable in environ
// ("NAME=value" pairs, as from os.Environ) that updraft does not read,
// naming the known variable it is probably a misspelling of: a misspelt
// setting is otherwise silently left at its default.
func warnUnknownEnv(log *zap.Logger, environ []string) {
	for _, u := range unknownEnv(environ) {
		fields := []zap.Field{zap.String("variable", u.name)}
		if u.suggest != "" {
			fields = append(fields, zap.String("did_you_mean", u.suggest))
		}
		log.Warn(u.String(), fields...)
	}
}

// noteUnknownEnv prints the warnings of warnUnknownEnv on w, for a command
// that failed before it had a logger: a misspelt variable is often why
// (a misspelt UPDRAFT_JWT_SECRET leaves the secret empty).
func noteUnknownEnv(w io.Writer, command string, environ []string) {
	for _, u := range unknownEnv(environ) {
		fmt.Fprintf(w, "updraft %s: note: %s\n", command, u)
	}
}

// unknownVar is an UPDRAFT_* variable updraft does not read, with the
// known one closest to it, if any is close.
type unknownVar struct {
	name, suggest string
}

func (u unknownVar) String() string {
	if u.suggest != "" {
		return "unknown environment variable " + u.name + " is ignored; did you mean " + u.suggest + "?"
	}
	return "unknown environment variable " + u.name + " is ignored (see README.md, Configuration)"
}

// unknownEnv returns the UPDRAFT_* variables of environ that updraft does
// not read, sorted by name.
func unknownEnv(environ []string) []unknownVar {
	known := knownEnv()
	names := make([]string, 0, len(known))
	for name := range known {
		names = append(names, name)
	}
	sort.Strings(names) // ties go to the first name, the same each run
	var out []unknownVar
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, envPrefix) || known[name] || hasAnyPrefix(name, otherEnvPrefixes) {
			continue
		}
		out = append(out, unknownVar{name: name, suggest: closest(name, names)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

func hasAnyPrefix(s string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// closest returns the name among names nearest to name by edit distance,
// when it is near enough to be a misspelling (at most one edit in four
// characters after the prefix, and at most 3), or "".
func closest(name string, names []string) string {
	suffix := strings.TrimPrefix(name, envPrefix)
	limit := min(3, max(1, len(suffix)/4))
	best, bestDist := "", limit+1
	for _, k := range names {
		if d := editDistance(strings.ToUpper(suffix), strings.TrimPrefix(k, envPrefix)); d < bestDist {
			best, bestDist = k, d
		}
	}
	return best
}

// editDistance is the optimal string alignment distance between a and b:
// insertions, deletions, substitutions and transpositions of adjacent
// bytes (REDIS_ULR is one edit from REDIS_URL).
func editDistance(a, b string) int {
	// Three rows of the usual table: two back, one back and this one.
	prev2 := make([]int, len(b)+1)
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(b)]
}
