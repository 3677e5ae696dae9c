package bench

import (
	"fmt"
	"math"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Scenario names a load shape `updraft bench` runs.
type Scenario string

// The scenarios.
const (
	// Fanout: one topic, Subscribers subscribers, Rate messages a second.
	Fanout Scenario = "fanout"
	// Saturate: as Fanout, published as fast as Publishers batch emitters
	// allow, with at most Window messages in flight per subscriber.
	Saturate Scenario = "saturate"
	// Idle: Connections idle connections, each subscribed to a topic of
	// its own; measures connect rate and server memory per connection.
	Idle Scenario = "idle"
	// Topics: Topics topics with PerTopic subscribers each, one publisher
	// going round the topics at Rate messages a second.
	Topics Scenario = "topics"
	// DB: rows inserted into a tracked Table at Rate rows a second,
	// Subscribers subscribed to its table topic.
	DB Scenario = "db"
)

// Scenarios lists every scenario, in the order usage shows them.
var Scenarios = []Scenario{Fanout, Saturate, Idle, Topics, DB}

// ParseScenario returns the scenario called name.
func ParseScenario(name string) (Scenario, error) {
	s := Scenario(name)
	if !slices.Contains(Scenarios, s) {
		return "", &ParamError{Msg: fmt.Sprintf("unknown scenario %q: want %s", name, scenarioList())}
	}
	return s, nil
}

func scenarioList() string {
	names := make([]string, len(Scenarios))
	for i, s := range Scenarios {
		names[i] = string(s)
	}
	return strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
}

// Limits of the parameters.
const (
	// MaxBatch is the most messages one POST /api/v1/emit/batch takes.
	MaxBatch = 1000
	// MaxSize bounds --size; the server refuses messages over its own
	// UPDRAFT_MAX_MESSAGE (64 KiB by default) anyway.
	MaxSize = 1 << 20
	// ReservedFiles is how many descriptors a run needs besides its
	// WebSockets: HTTP and database connections, /proc reads, standard
	// streams.
	ReservedFiles = 64
)

// Params are a run's parameters, the flags of `updraft bench`. Each
// scenario uses the fields its flags name; Defaults gives its defaults.
type Params struct {
	Scenario Scenario

	WS       []string      // --ws: WebSocket URLs, receivers round-robin over them
	API      []string      // --api: base URLs of the HTTP API, publishers round-robin over them
	PIDs     []int         // --pid: the gateways' process ids, for CPU and RSS
	Duration time.Duration // --duration: how long to publish (idle: to hold the connections)
	Drain    time.Duration // --drain: the longest wait for in-flight messages after publishing
	Runs     int           // --runs
	Parallel int           // --parallel: connections opened at a time

	Subscribers int     // --subscribers: fanout, saturate, db
	Connections int     // --connections: idle
	Topics      int     // --topics: topics
	PerTopic    int     // --subscribers-per-topic: topics
	Rate        float64 // --rate: messages (db: rows) a second; fanout, topics, db
	Messages    int64   // --messages: stop after this many (0: only --duration bounds)
	Size        int     // --size: bytes of each message's data
	Publishers  int     // --publishers: requests (db: inserts) in flight at once; all but idle
	Batch       int     // --batch: messages per emit request; saturate
	Window      int     // --window: messages in flight per subscriber (0: no limit); saturate
	Database    string  // --database: db
	Table       string  // --table: db
}

// Defaults returns scenario s's default parameters.
func Defaults(s Scenario) Params {
	p := Params{
		Scenario:   s,
		Publishers: 4,
		Duration:   10 * time.Second,
		Drain:      5 * time.Second,
		Runs:       1,
		Parallel:   64,
		Size:       128,
	}
	switch s {
	case Fanout:
		p.Subscribers, p.Rate = 1000, 100
	case Saturate:
		p.Subscribers, p.Batch, p.Window = 1000, 100, 500
	case Idle:
		p.Connections = 10000
	case Topics:
		p.Topics, p.PerTopic, p.Rate = 200, 10, 2000
	case DB:
		p.Subscribers, p.Rate, p.Table = 100, 500, "bench_rows"
	}
	return p
}

// scenarioFlags lists the flags that only some scenarios take; every other
// flag applies to all.
var scenarioFlags = map[string][]Scenario{
	"subscribers":           {Fanout, Saturate, DB},
	"connections":           {Idle},
	"topics":                {Topics},
	"subscribers-per-topic": {Topics},
	"rate":                  {Fanout, Topics, DB},
	"messages":              {Fanout, Saturate, Topics, DB},
	"size":                  {Fanout, Saturate, Topics, DB},
	"publishers":            {Fanout, Saturate, Topics, DB},
	"batch":                 {Saturate},
	"window":                {Saturate},
	"database":              {DB},
	"table":                 {DB},
}

// FlagApplies reports whether the flag called name (without dashes) means
// something to scenario s.
func FlagApplies(name string, s Scenario) bool {
	only, ok := scenarioFlags[name]
	return !ok || slices.Contains(only, s)
}

// CheckFlags returns an error naming the first flag in set that scenario s
// does not take, and which scenarios do.
func CheckFlags(s Scenario, set []string) error {
	for _, name := range set {
		if !FlagApplies(name, s) {
			names := make([]string, len(scenarioFlags[name]))
			for i, o := range scenarioFlags[name] {
				names[i] = string(o)
			}
			return &ParamError{Flag: name, Msg: fmt.Sprintf("does not apply to %s (only to %s)", s, strings.Join(names, ", "))}
		}
	}
	return nil
}

// ParamError is a bad parameter: Flag (without dashes) names it, Msg says
// why.
type ParamError struct {
	Flag string // empty for the scenario
	Msg  string
}

func (e *ParamError) Error() string {
	if e.Flag == "" {
		return e.Msg
	}
	return "--" + e.Flag + " " + e.Msg
}

func bad(flag, format string, args ...any) error {
	return &ParamError{Flag: flag, Msg: fmt.Sprintf(format, args...)}
}

// tableName is a table, optionally schema-qualified, of plain identifiers.
var tableName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$`)

// Conns returns how many WebSockets the run opens.
func (p *Params) Conns() int {
	switch p.Scenario {
	case Idle:
		return p.Connections
	case Topics:
		return p.Topics * p.PerTopic
	default:
		return p.Subscribers
	}
}

// countFlag returns the flag that sets the scenario's connection count.
func (p *Params) countFlag() string {
	switch p.Scenario {
	case Idle:
		return "connections"
	case Topics:
		return "topics"
	default:
		return "subscribers"
	}
}

// publishes reports whether the scenario publishes through the HTTP API.
func (p *Params) publishes() bool {
	return p.Scenario == Fanout || p.Scenario == Saturate || p.Scenario == Topics
}

// Validate checks the parameters once the flags are parsed. fileLimit is
// the process's limit on open files (0: unknown, not checked). Its errors
// are *ParamError.
func (p *Params) Validate(fileLimit uint64) error {
	if _, err := ParseScenario(string(p.Scenario)); err != nil {
		return err
	}
	for _, check := range []func() error{p.validateCommon, p.validateCounts, p.validateLoad, p.validateDB} {
		if err := check(); err != nil {
			return err
		}
	}
	if need := uint64(p.Conns()) + uint64(p.Parallel) + ReservedFiles; fileLimit > 0 && need > fileLimit {
		return bad(p.countFlag(), "asks for %d connections, which need about %d open files, over this process's limit of %d "+
			"(RLIMIT_NOFILE, already raised to its hard limit): lower it, or raise the hard limit (ulimit -Hn, LimitNOFILE)",
			p.Conns(), need, fileLimit)
	}
	return nil
}

func (p *Params) validateCommon() error {
	switch {
	case len(p.WS) == 0:
		return bad("ws", "is required: the gateways' WebSocket URLs (ws://host:port/api/realtime)")
	case p.publishes() && len(p.API) == 0:
		return bad("api", "is required by %s: the gateways' HTTP base URLs (http://host:port), for publishing", p.Scenario)
	case p.Duration <= 0:
		return bad("duration", "must be positive, not %v", p.Duration)
	case p.Drain < 0:
		return bad("drain", "must not be negative, not %v", p.Drain)
	case p.Runs < 1:
		return bad("runs", "must be at least 1, not %d", p.Runs)
	case p.Parallel < 1:
		return bad("parallel", "must be at least 1, not %d", p.Parallel)
	}
	for _, pid := range p.PIDs {
		if pid <= 0 {
			return bad("pid", "must be a process id, not %d", pid)
		}
	}
	return nil
}

func (p *Params) validateCounts() error {
	switch p.Scenario {
	case Idle:
		if p.Connections < 1 {
			return bad("connections", "must be at least 1, not %d", p.Connections)
		}
	case Topics:
		if p.Topics < 1 {
			return bad("topics", "must be at least 1, not %d", p.Topics)
		}
		if p.PerTopic < 1 {
			return bad("subscribers-per-topic", "must be at least 1, not %d", p.PerTopic)
		}
	default:
		if p.Subscribers < 1 {
			return bad("subscribers", "must be at least 1, not %d", p.Subscribers)
		}
	}
	return nil
}

func (p *Params) validateLoad() error {
	if p.Scenario == Idle {
		return nil
	}
	switch {
	case p.Scenario != Saturate && (p.Rate <= 0 || math.IsInf(p.Rate, 0) || math.IsNaN(p.Rate)):
		return bad("rate", "must be a positive number of messages a second, not %v", p.Rate)
	case p.Messages < 0:
		return bad("messages", "must not be negative (0 means no limit but --duration), not %d", p.Messages)
	case p.Size < MinSize:
		return bad("size", "must be at least %d bytes, what the send time {\"sent\":UNIX_NANOSECONDS,\"pad\":\"\"} takes, not %d", MinSize, p.Size)
	case p.Size > MaxSize:
		return bad("size", "must be at most %d bytes, not %d", MaxSize, p.Size)
	case p.Publishers < 1:
		return bad("publishers", "must be at least 1, not %d", p.Publishers)
	}
	if p.Scenario != Saturate {
		return nil
	}
	switch {
	case p.Batch < 1 || p.Batch > MaxBatch:
		return bad("batch", "must be between 1 and %d (what one emit/batch request takes), not %d", MaxBatch, p.Batch)
	case p.Window < 0:
		return bad("window", "must not be negative (0 means no limit), not %d", p.Window)
	case p.Window > 0 && p.Window < p.Batch:
		return bad("window", "must be 0 (no limit) or at least --batch (%d), or no batch could ever go out; not %d", p.Batch, p.Window)
	}
	return nil
}

func (p *Params) validateDB() error {
	if p.Scenario != DB {
		return nil
	}
	switch {
	case p.Database == "":
		return bad("database", "is required by db (or set UPDRAFT_DATABASE_URL): the PostgreSQL URL to insert rows through")
	case !tableName.MatchString(p.Table):
		return bad("table", "must be a table name (letters, digits, _) or schema.table, not %q", p.Table)
	}
	return nil
}
