package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/updraft/updraft/client"
	"github.com/updraft/updraft/internal/bench"
)

// scenarioHelp describes each scenario in `updraft bench SCENARIO -h`.
var scenarioHelp = map[bench.Scenario]string{
	bench.Fanout: `One topic, --subscribers subscribers spread over --ws, and messages emitted
through --api at --rate a second: one schedule, with up to --publishers
requests in flight so that it holds when a request takes longer than the
interval; whatever is due at once goes as one batch.`,
	bench.Saturate: `As fanout, but --publishers publishers emit batches of --batch messages as
fast as the gateways take them, holding back while the slowest subscriber is
more than --window messages behind (so nobody is closed as a slow consumer).`,
	bench.Idle: `--connections connections, each subscribed to a topic of its own, held idle
for --duration. Reports the connect rate and the gateways' memory per
connection, their growth divided by the connections: RSS (with --pid) and
the Go heap in use plus goroutine stacks (from each --ws gateway's /metrics;
point --ws at the gateways themselves, not a load balancer). Gateways keep
memory they grew for earlier connections: measure freshly started ones.`,
	bench.Topics: `--topics topics with --subscribers-per-topic subscribers each, and messages
going round the topics at --rate a second in all, paced as in fanout.`,
	bench.DB: `Inserts rows into --table at --rate rows a second through --database, paced
as in fanout, with --subscribers subscribed to the table's topic: latency runs
from just before the INSERT to the client. Creates the table if missing (id
bigserial, sent bigint, pad text) and installs the capture trigger as 'updraft
track' does (UPDRAFT_TRACKER_NOTIFY and UPDRAFT_HIDDEN_COLUMNS apply). A
tracker must be running on that database: 'updraft tracker', or 'updraft serve'
with UPDRAFT_DATABASE_URL in embedded mode.`,
}

// benchConfig is what every run of a `bench` command shares.
type benchConfig struct {
	p          bench.Params
	json       bool
	apiKey     string
	token      string
	header     http.Header // extra handshake headers (--origin)
	cpuProfile string      // --cpuprofile: where to write the load generator's CPU profile
	http       *http.Client
	stderr     io.Writer // safe for concurrent use

	pollers    []*bench.Poller // read the subscribers: one per core, made on first use
	pollerNext atomic.Uint32
	pollerOnce sync.Once
	pollerErr  error
}

// poller returns the next of the pollers that read subscribers, in turn.
func (cfg *benchConfig) poller() (*bench.Poller, error) {
	cfg.pollerOnce.Do(func() {
		for range runtime.GOMAXPROCS(0) {
			p, err := bench.NewPoller()
			if err != nil {
				cfg.pollerErr = err
				return
			}
			cfg.pollers = append(cfg.pollers, p)
		}
	})
	if cfg.pollerErr != nil {
		return nil, cfg.pollerErr
	}
	return cfg.pollers[int(cfg.pollerNext.Add(1))%len(cfg.pollers)], nil
}

// runBench drives running gateways with a load scenario and reports what
// was delivered, how fast, and what it cost the servers.
func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || isHelpFlag(args[0]) {
		benchUsage(stderr)
		if len(args) == 0 {
			return errUsage
		}
		return flag.ErrHelp
	}
	if strings.HasPrefix(args[0], "-") {
		fmt.Fprintf(stderr, "updraft bench: want the scenario first, then flags (updraft bench SCENARIO [flags]), got %q\n\n", args[0])
		benchUsage(stderr)
		return errUsage
	}
	s, err := bench.ParseScenario(args[0])
	if err != nil {
		fmt.Fprintf(stderr, "updraft bench: %v\n\n", err)
		benchUsage(stderr)
		return errUsage
	}
	cfg, err := parseBenchFlags(s, args[1:], stderr)
	if err != nil {
		return err
	}
	if cfg.cpuProfile != "" {
		stop, err := startCPUProfile(cfg.cpuProfile)
		if err != nil {
			return err
		}
		defer stop()
	}
	for run := 1; run <= cfg.p.Runs; run++ {
		res, err := runScenario(ctx, cfg, run)
		if err != nil {
			if ctx.Err() != nil {
				return errors.New("interrupted")
			}
			return fmt.Errorf("%s run %d: %w", s, run, err)
		}
		if err := printResult(stdout, cfg, &res); err != nil {
			return err
		}
	}
	return nil
}

// startCPUProfile profiles this process into path until stop.
func startCPUProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("--cpuprofile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("--cpuprofile: %w", err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}

func isHelpFlag(arg string) bool {
	return arg == "-h" || arg == "-help" || arg == "--help" || arg == "help"
}

// printResult prints one run's figures: a JSON line, or a table (after a
// blank line, but for the first run).
func printResult(w io.Writer, cfg *benchConfig, res *bench.Result) error {
	if cfg.json {
		return bench.WriteJSON(w, res)
	}
	if res.Run > 1 {
		fmt.Fprintln(w)
	}
	return bench.WriteTable(w, res)
}

// parseBenchFlags parses and checks the flags of scenario s.
func parseBenchFlags(s bench.Scenario, args []string, stderr io.Writer) (*benchConfig, error) {
	cfg := &benchConfig{p: bench.Defaults(s), stderr: &lockedWriter{w: stderr}}
	fs := newFlagSet("bench "+string(s), stderr)
	key, rt, database := bindBenchFlags(fs, cfg)
	fs.Usage = func() { scenarioUsage(fs, s, stderr) }
	if err := parseFlags(fs, args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, benchBad(stderr, s, fmt.Errorf("unexpected argument %q: only flags follow the scenario", fs.Arg(0)))
	}
	var set []string
	fs.Visit(func(f *flag.Flag) { set = append(set, f.Name) })
	if err := bench.CheckFlags(s, set); err != nil {
		return nil, benchBad(stderr, s, err)
	}

	p := &cfg.p
	cfg.apiKey = key.apiKey()
	opts := rt.options("updraft-bench/" + client.Version)
	cfg.token, cfg.header = opts.Token, opts.Header
	p.Database = *database
	if p.Database == "" && s == bench.DB {
		p.Database = os.Getenv("UPDRAFT_DATABASE_URL")
	}
	if err := normalizeBenchURLs(p); err != nil {
		return nil, benchBad(stderr, s, err)
	}
	limit, err := raiseFileLimit()
	if err != nil {
		fmt.Fprintf(cfg.stderr, "updraft bench: cannot raise the open file limit: %v\n", err)
	}
	if err := p.Validate(limit); err != nil {
		return nil, benchBad(stderr, s, err)
	}
	for _, pid := range p.PIDs {
		if _, err := processCPU(pid); err != nil {
			return nil, benchBad(stderr, s, &bench.ParamError{Flag: "pid", Msg: err.Error()})
		}
	}
	cfg.http = benchHTTPClient(p.Publishers + 2)
	return cfg, nil
}

// bindBenchFlags defines the flags on fs, bound to cfg, with the
// scenario's defaults.
func bindBenchFlags(fs *flag.FlagSet, cfg *benchConfig) (apiFlags, realtimeFlags, *string) {
	p := &cfg.p
	fs.Var((*urlList)(&p.WS), "ws", "the gateways' WebSocket `URLs` (ws://host:port/api/realtime), comma-separated or repeated; connections go round-robin")
	fs.Var((*urlList)(&p.API), "api", "the gateways' HTTP base `URLs` (http://host:port), comma-separated or repeated; publish requests go round-robin")
	key := apiFlags{key: fs.String("api-key", "", "the HTTP API `key` (default $UPDRAFT_API_KEY)")}
	rt := addRealtimeFlags(fs)
	fs.Var((*pidList)(&p.PIDs), "pid", "the gateways' process `ids`, comma-separated or repeated: server CPU from /proc/PID/stat (and RSS for idle)")
	fs.DurationVar(&p.Duration, "duration", p.Duration, "how long to publish (idle: to hold the connections)")
	fs.DurationVar(&p.Drain, "drain", p.Drain, "the longest wait for messages in flight after publishing")
	fs.IntVar(&p.Runs, "runs", p.Runs, "how many times to run the scenario, each with new connections and topics")
	fs.IntVar(&p.Parallel, "parallel", p.Parallel, "how many connections to open at a time")
	fs.BoolVar(&cfg.json, "json", false, "print one JSON object per run instead of a table")
	fs.StringVar(&cfg.cpuProfile, "cpuprofile", "", "write the load generator's own CPU profile to `file` (go tool pprof reads it)")

	fs.IntVar(&p.Subscribers, "subscribers", p.Subscribers, "how many subscribers")
	fs.IntVar(&p.Connections, "connections", p.Connections, "how many idle connections")
	fs.IntVar(&p.Topics, "topics", p.Topics, "how many topics")
	fs.IntVar(&p.PerTopic, "subscribers-per-topic", p.PerTopic, "how many subscribers each topic has")
	fs.Float64Var(&p.Rate, "rate", p.Rate, "messages (db: rows) a second, in all")
	fs.Int64Var(&p.Messages, "messages", 0, "stop publishing after this many messages (0: --duration alone bounds the run)")
	fs.IntVar(&p.Size, "size", p.Size, fmt.Sprintf("bytes of each message's data, the send time padded (at least %d)", bench.MinSize))
	fs.IntVar(&p.Publishers, "publishers", p.Publishers, "how many requests (db: INSERTs) may be in flight at once")
	fs.IntVar(&p.Batch, "batch", p.Batch, fmt.Sprintf("messages per emit request (at most %d)", bench.MaxBatch))
	fs.IntVar(&p.Window, "window", p.Window, "the most messages in flight to the slowest subscriber (0: no limit)")
	database := fs.String("database", "", "the PostgreSQL `URL` to insert through (default $UPDRAFT_DATABASE_URL)")
	fs.StringVar(&p.Table, "table", p.Table, "the table to insert into, created if missing")
	return key, rt, database
}

// normalizeBenchURLs turns --ws into WebSocket URLs and checks --api.
func normalizeBenchURLs(p *bench.Params) error {
	for i, raw := range p.WS {
		u, err := realtimeURL(raw)
		if err != nil {
			return &bench.ParamError{Flag: "ws", Msg: fmt.Sprintf("%q is not a WebSocket URL (want ws://host:port/api/realtime)", raw)}
		}
		p.WS[i] = u
	}
	for _, raw := range p.API {
		if _, err := apiURL(raw, "/api/v1/emit", nil); err != nil {
			return &bench.ParamError{Flag: "api", Msg: fmt.Sprintf("%q is not an http:// or https:// base URL (want http://host:port)", raw)}
		}
	}
	return nil
}

// benchBad reports a bad parameter and returns errUsage.
func benchBad(stderr io.Writer, s bench.Scenario, err error) error {
	fmt.Fprintf(stderr, "updraft bench %s: %v\nRun 'updraft bench %s -h' for its flags.\n", s, err, s)
	return errUsage
}

func benchUsage(w io.Writer) {
	fmt.Fprintln(w, `Usage: updraft bench SCENARIO [flags]

Drives running gateways with a load, printing progress on standard error once
a second and the figures on standard output: a table, or one JSON object per
run with --json. Publishers use the HTTP emit API; each message's data carries
its send time, so receivers measure the latency from send to receipt. Give
--pid the gateways' process ids (and the tracker's for db) for the servers'
CPU time and deliveries per server CPU-second. Topics are named bench/RUN/...:
with --token, the token must allow subscribing to them (bench/**).

Scenarios:`)
	for _, s := range bench.Scenarios {
		first, _, _ := strings.Cut(scenarioHelp[s], "\n")
		fmt.Fprintf(w, "  %-9s %s...\n", s, first)
	}
	fmt.Fprintln(w, "\nRun 'updraft bench SCENARIO -h' for a scenario's flags and defaults.")
}

// scenarioUsage prints scenario s's help and the flags it takes.
func scenarioUsage(fs *flag.FlagSet, s bench.Scenario, w io.Writer) {
	fmt.Fprintf(w, "Usage: updraft bench %s [flags]\n\n%s\n\nFlags:\n", s, scenarioHelp[s])
	shown := flag.NewFlagSet(fs.Name(), flag.ContinueOnError)
	shown.SetOutput(w)
	fs.VisitAll(func(f *flag.Flag) {
		if bench.FlagApplies(f.Name, s) {
			shown.Var(f.Value, f.Name, f.Usage)
		}
	})
	shown.PrintDefaults()
}

// urlList is a flag holding URLs, comma-separated or repeated.
type urlList []string

func (l *urlList) String() string { return strings.Join(*l, ",") }

func (l *urlList) Set(v string) error {
	for _, u := range strings.Split(v, ",") {
		if u = strings.TrimSpace(u); u != "" {
			*l = append(*l, u)
		}
	}
	return nil
}

// pidList is a flag holding process ids, comma-separated or repeated.
type pidList []int

func (l *pidList) String() string {
	s := make([]string, len(*l))
	for i, pid := range *l {
		s[i] = strconv.Itoa(pid)
	}
	return strings.Join(s, ",")
}

func (l *pidList) Set(v string) error {
	for _, f := range strings.Split(v, ",") {
		pid, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			return fmt.Errorf("%q is not a process id", f)
		}
		*l = append(*l, pid)
	}
	return nil
}

// benchHTTPClient returns the client publishers share: it keeps a
// connection per concurrent request to each gateway alive, where
// http.DefaultClient keeps two and would reconnect under load.
func benchHTTPClient(conns int) *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = max(conns, 2)
	return &http.Client{Transport: t, Timeout: 30 * time.Second}
}

// metricsURL returns the /metrics URL of the gateway a WebSocket URL
// points at.
func metricsURL(wsURL string) (string, error) {
	u, err := url.Parse(wsURL)
	if err != nil {
		return "", err
	}
	u.Scheme = map[string]string{"ws": "http", "wss": "https"}[u.Scheme]
	u.Path, u.RawPath, u.RawQuery, u.Fragment = "/metrics", "", "", ""
	return u.String(), nil
}

// lockedWriter serialises writes from the progress reporter and the run.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer // guarded by mu
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
