package bench

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"
)

// valid returns scenario s's defaults with the URLs every run needs.
func valid(s Scenario) Params {
	p := Defaults(s)
	p.WS = []string{"ws://127.0.0.1:8080/api/realtime"}
	p.API = []string{"http://127.0.0.1:8080"}
	if s == DB {
		p.Database = "postgres://127.0.0.1/app"
	}
	return p
}

func TestDefaultsAreValid(t *testing.T) {
	t.Parallel()
	for _, s := range Scenarios {
		p := valid(s)
		if err := p.Validate(1 << 20); err != nil {
			t.Errorf("%s: the defaults are refused: %v", s, err)
		}
	}
	for s, want := range map[Scenario]int{Fanout: 1000, Saturate: 1000, Idle: 10000, Topics: 2000, DB: 100} {
		p := Defaults(s)
		if got := p.Conns(); got != want {
			t.Errorf("%s: %d connections by default, want %d", s, got, want)
		}
	}
}

// Every bad parameter is refused with an error that names its flag and
// says why.
func TestValidateNamesTheFlag(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		scenario Scenario
		change   func(*Params)
		limit    uint64
		flag     string
		why      string
	}{
		{"no ws", Fanout, func(p *Params) { p.WS = nil }, 0, "ws", "is required"},
		{"no api for fanout", Fanout, func(p *Params) { p.API = nil }, 0, "api", "is required by fanout"},
		{"no api for topics", Topics, func(p *Params) { p.API = nil }, 0, "api", "is required by topics"},
		{"zero subscribers", Fanout, func(p *Params) { p.Subscribers = 0 }, 0, "subscribers", "at least 1, not 0"},
		{"negative subscribers", DB, func(p *Params) { p.Subscribers = -3 }, 0, "subscribers", "at least 1, not -3"},
		{"zero connections", Idle, func(p *Params) { p.Connections = 0 }, 0, "connections", "at least 1"},
		{"zero topics", Topics, func(p *Params) { p.Topics = 0 }, 0, "topics", "at least 1"},
		{"zero per topic", Topics, func(p *Params) { p.PerTopic = 0 }, 0, "subscribers-per-topic", "at least 1"},
		{"negative rate", Fanout, func(p *Params) { p.Rate = -5 }, 0, "rate", "positive number of messages a second, not -5"},
		{"zero rate", DB, func(p *Params) { p.Rate = 0 }, 0, "rate", "positive"},
		{"infinite rate", Topics, func(p *Params) { p.Rate = math.Inf(1) }, 0, "rate", "positive"},
		{"NaN rate", Topics, func(p *Params) { p.Rate = math.NaN() }, 0, "rate", "positive"},
		{"size too small", Fanout, func(p *Params) { p.Size = 20 }, 0, "size", "at least 37 bytes, what the send time"},
		{"size too large", Saturate, func(p *Params) { p.Size = MaxSize + 1 }, 0, "size", "at most"},
		{"zero duration", Fanout, func(p *Params) { p.Duration = 0 }, 0, "duration", "positive"},
		{"negative drain", Fanout, func(p *Params) { p.Drain = -time.Second }, 0, "drain", "not be negative"},
		{"zero runs", Idle, func(p *Params) { p.Runs = 0 }, 0, "runs", "at least 1"},
		{"zero parallel", Idle, func(p *Params) { p.Parallel = 0 }, 0, "parallel", "at least 1"},
		{"negative messages", Fanout, func(p *Params) { p.Messages = -1 }, 0, "messages", "not be negative"},
		{"zero publishers", Saturate, func(p *Params) { p.Publishers = 0 }, 0, "publishers", "at least 1"},
		{"zero publishers paced", Fanout, func(p *Params) { p.Publishers = 0 }, 0, "publishers", "at least 1"},
		{"zero batch", Saturate, func(p *Params) { p.Batch = 0 }, 0, "batch", "between 1 and 1000"},
		{"batch too large", Saturate, func(p *Params) { p.Batch = 1001 }, 0, "batch", "between 1 and 1000"},
		{"negative window", Saturate, func(p *Params) { p.Window = -1 }, 0, "window", "not be negative"},
		{"window below batch", Saturate, func(p *Params) { p.Window = 50 }, 0, "window", "at least --batch (100)"},
		{"bad pid", Fanout, func(p *Params) { p.PIDs = []int{0} }, 0, "pid", "process id"},
		{"db without database", DB, func(p *Params) { p.Database = "" }, 0, "database", "UPDRAFT_DATABASE_URL"},
		{"db bad table", DB, func(p *Params) { p.Table = "rows; DROP TABLE x" }, 0, "table", "table name"},
		{"idle over the fd limit", Idle, func(p *Params) { p.Connections = 30000 }, 20000, "connections", "over this process's limit of 20000"},
		{"topics over the fd limit", Topics, func(p *Params) { p.PerTopic = 100 }, 20000, "topics", "20000 connections"},
		{"fanout over the fd limit", Fanout, func(p *Params) { p.Subscribers = 19990 }, 20000, "subscribers", "over this process's limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := valid(tt.scenario)
			tt.change(&p)
			err := p.Validate(tt.limit)
			var pe *ParamError
			if !errors.As(err, &pe) {
				t.Fatalf("got %v, want a *ParamError", err)
			}
			if pe.Flag != tt.flag || !strings.Contains(err.Error(), tt.why) || !strings.HasPrefix(err.Error(), "--"+tt.flag+" ") {
				t.Fatalf("got %q (flag %q), want --%s ... %q", err, pe.Flag, tt.flag, tt.why)
			}
		})
	}
}

func TestValidateLimits(t *testing.T) {
	t.Parallel()
	p := valid(Idle)
	p.Connections = 20000 - ReservedFiles - p.Parallel
	if err := p.Validate(20000); err != nil {
		t.Errorf("%d connections under a limit of 20000: %v", p.Connections, err)
	}
	p.Connections = 1_000_000
	if err := p.Validate(0); err != nil {
		t.Errorf("an unknown limit (0) is not checked: %v", err)
	}
	p = valid(Fanout)
	p.Size = MinSize
	if err := p.Validate(0); err != nil {
		t.Errorf("--size %d (MinSize): %v", MinSize, err)
	}
	p = valid(Saturate)
	p.Window = 0
	if err := p.Validate(0); err != nil {
		t.Errorf("--window 0 (no limit): %v", err)
	}
	p = valid(Idle)
	p.API = nil
	if err := p.Validate(0); err != nil {
		t.Errorf("idle without --api: %v", err)
	}
}

func TestParseScenario(t *testing.T) {
	t.Parallel()
	for _, s := range Scenarios {
		if got, err := ParseScenario(string(s)); err != nil || got != s {
			t.Errorf("ParseScenario(%q) = %q, %v", s, got, err)
		}
	}
	_, err := ParseScenario("fan-out")
	if err == nil || err.Error() != `unknown scenario "fan-out": want fanout, saturate, idle, topics or db` {
		t.Errorf("ParseScenario(fan-out): %v", err)
	}
}

func TestCheckFlags(t *testing.T) {
	t.Parallel()
	if err := CheckFlags(Fanout, []string{"ws", "api", "subscribers", "rate", "pid", "json", "publishers"}); err != nil {
		t.Errorf("fanout's own flags: %v", err)
	}
	if err := CheckFlags(Idle, []string{"ws", "connections", "duration", "pid"}); err != nil {
		t.Errorf("idle's own flags: %v", err)
	}
	tests := []struct {
		s    Scenario
		flag string
		want string
	}{
		{Idle, "rate", "--rate does not apply to idle (only to fanout, topics, db)"},
		{Fanout, "connections", "--connections does not apply to fanout (only to idle)"},
		{Topics, "subscribers", "--subscribers does not apply to topics (only to fanout, saturate, db)"},
		{Fanout, "window", "--window does not apply to fanout (only to saturate)"},
		{Saturate, "table", "--table does not apply to saturate (only to db)"},
	}
	for _, tt := range tests {
		err := CheckFlags(tt.s, []string{"ws", tt.flag})
		if err == nil || err.Error() != tt.want {
			t.Errorf("%s with --%s: %v, want %q", tt.s, tt.flag, err, tt.want)
		}
	}
}
