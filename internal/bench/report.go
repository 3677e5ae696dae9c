package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Result holds every figure of one run. `updraft bench --json` prints it
// as one JSON object per run; its field names are stable, so that scripts
// and docs/benchmarks.md can rely on them. A figure that does not apply to
// the scenario, or could not be measured, is null, never 0.
type Result struct {
	Scenario string    `json:"scenario"`
	Run      int       `json:"run"`  // 1 for the first run
	Runs     int       `json:"runs"` // --runs
	Start    time.Time `json:"start"`

	// The load.
	Gateways            int      `json:"gateways"`              // --ws URLs
	Connections         int      `json:"connections"`           // WebSockets opened
	Topics              int      `json:"topics"`                // topics subscribed to
	SubscribersPerTopic int      `json:"subscribers_per_topic"` // connections on each topic
	Rate                *float64 `json:"rate"`                  // the target, messages (db: rows) a second; null for saturate and idle
	Size                *int     `json:"size"`                  // bytes of each message's data; null for idle
	DurationSeconds     float64  `json:"duration_seconds"`      // --duration

	// Connecting: every connection connected and subscribed.
	ConnectSeconds float64 `json:"connect_seconds"`
	ConnectRate    float64 `json:"connect_rate"` // connections a second

	// Publishing and delivery. Expected is published messages times the
	// subscribers of their topics; Delivered counts the events of the run
	// that arrived, each once.
	Published         int64    `json:"published"`       // messages the server accepted (db: rows committed)
	PublishSeconds    float64  `json:"publish_seconds"` // from the first publish to the last answer
	PublishRate       float64  `json:"publish_rate"`    // published a second
	Expected          int64    `json:"expected"`
	Delivered         int64    `json:"delivered"`
	DeliveredFraction *float64 `json:"delivered_fraction"`    // delivered / expected; null when nothing was expected
	DeliveryRate      *float64 `json:"deliveries_per_second"` // from the first publish to the last delivery; null for idle
	DrainSeconds      float64  `json:"drain_seconds"`         // waited after publishing for the last deliveries
	SlowCloses        int      `json:"slow_consumer_closes"`  // connections the server closed with 4008
	OtherCloses       int      `json:"other_closes"`          // connections lost otherwise
	OutOfOrder        int64    `json:"out_of_order"`          // events with a seq not above the previous one
	Ignored           int64    `json:"ignored_events"`        // events on the topics that were not the run's

	// Latency from send to receipt (db: from just before the INSERT), in
	// milliseconds, within RelativeError; null without deliveries.
	LatencyP50 *float64 `json:"latency_p50_ms"`
	LatencyP95 *float64 `json:"latency_p95_ms"`
	LatencyP99 *float64 `json:"latency_p99_ms"`
	LatencyMax *float64 `json:"latency_max_ms"`

	// The server, with --pid: CPU time (user and system, summed over the
	// processes) from the first publish to the end of the drain (idle:
	// from the first connect to the end of the hold).
	PIDs                   []int    `json:"server_pids"`
	ServerCPUSeconds       *float64 `json:"server_cpu_seconds"`
	DeliveriesPerCPUSecond *float64 `json:"deliveries_per_cpu_second"`
	// The load generator's own CPU time (this process: receivers and
	// publishers) over the same window, to see how much of a shared
	// machine it took.
	BenchCPUSeconds float64 `json:"bench_cpu_seconds"`

	// Idle only: the growth of the servers, summed, divided by the
	// connections. RSS needs --pid; the Go heap in use plus goroutine
	// stacks, and the goroutines, come from each gateway's /metrics.
	RSSPerConn        *float64 `json:"server_rss_per_conn_bytes"`
	HeapStackPerConn  *float64 `json:"server_heap_stack_per_conn_bytes"`
	GoroutinesPerConn *float64 `json:"server_goroutines_per_conn"`
}

// Ptr returns a pointer to v, for Result's nullable figures.
func Ptr[T any](v T) *T { return &v }

// SetLatency fills the latency figures from h; they stay null when h is
// nil or empty.
func (r *Result) SetLatency(h *Histogram) {
	if h == nil || h.Count() == 0 {
		r.LatencyP50, r.LatencyP95, r.LatencyP99, r.LatencyMax = nil, nil, nil, nil
		return
	}
	ms := func(ns int64) *float64 { return Ptr(float64(ns) / 1e6) }
	r.LatencyP50, r.LatencyP95, r.LatencyP99 = ms(h.Quantile(0.50)), ms(h.Quantile(0.95)), ms(h.Quantile(0.99))
	r.LatencyMax = ms(h.Max())
}

// SetDelivery fills Expected, Delivered, DeliveredFraction and
// DeliveriesPerCPUSecond, the latter from ServerCPUSeconds, which must be
// set first (it stays null when that is unknown or zero, and when nothing
// was expected).
func (r *Result) SetDelivery(expected, delivered int64) {
	r.Expected, r.Delivered = expected, delivered
	r.DeliveredFraction = nil
	if f, ok := Fraction(delivered, expected); ok {
		r.DeliveredFraction = &f
	}
	r.DeliveriesPerCPUSecond = nil
	if expected > 0 && r.ServerCPUSeconds != nil && *r.ServerCPUSeconds > 0 {
		r.DeliveriesPerCPUSecond = Ptr(float64(delivered) / *r.ServerCPUSeconds)
	}
}

// WriteJSON writes r as one line of JSON.
func WriteJSON(w io.Writer, r *Result) error {
	if r.PIDs == nil {
		r.PIDs = []int{}
	}
	return json.NewEncoder(w).Encode(r)
}

// WriteTable writes r as a table of figures for people.
func WriteTable(w io.Writer, r *Result) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(name, format string, args ...any) {
		fmt.Fprintf(tw, "%s\t%s\n", name, fmt.Sprintf(format, args...))
	}
	row("scenario", "%s, run %d of %d, %s", r.Scenario, r.Run, r.Runs, r.Start.Format(time.RFC3339))
	row("load", "%s", describeLoad(r))
	row("connected", "%s in %ss (%s/s)", Group(int64(r.Connections)), Num(r.ConnectSeconds), Num(r.ConnectRate))
	if r.Scenario == string(Idle) {
		writeIdleRows(row, r)
	} else {
		writeDeliveryRows(row, r)
	}
	cpu := "unknown (needs --pid)"
	if r.ServerCPUSeconds != nil {
		cpu = Num(*r.ServerCPUSeconds) + " s over " + strconv.Itoa(len(r.PIDs)) + " processes"
	}
	row("server CPU", "%s", cpu)
	row("bench CPU (this process)", "%s s", Num(r.BenchCPUSeconds))
	if r.Scenario != string(Idle) {
		row("deliveries per server CPU-second", "%s", orUnknown(r.DeliveriesPerCPUSecond, Num))
	}
	return tw.Flush()
}

func describeLoad(r *Result) string {
	s := fmt.Sprintf("%s connections on %s topics (%s each) through %d gateways",
		Group(int64(r.Connections)), Group(int64(r.Topics)), Group(int64(r.SubscribersPerTopic)), r.Gateways)
	if r.Scenario == string(Idle) {
		return s + fmt.Sprintf(", held %ss", Num(r.DurationSeconds))
	}
	rate := "as fast as possible"
	if r.Rate != nil {
		rate = Num(*r.Rate) + "/s"
	}
	what := "messages"
	if r.Scenario == string(DB) {
		what = "rows" // the data of a row's event is about that size
	}
	return s + fmt.Sprintf("; %d-byte %s %s for %ss", *r.Size, what, rate, Num(r.DurationSeconds))
}

func writeIdleRows(row func(string, string, ...any), r *Result) {
	kib := func(v float64) string { return Num(v/1024) + " KiB" }
	row("server RSS per connection", "%s", orUnknown(r.RSSPerConn, kib))
	row("server Go heap+stacks per connection", "%s", orUnknown(r.HeapStackPerConn, kib))
	row("server goroutines per connection", "%s", orUnknown(r.GoroutinesPerConn, Num))
}

func writeDeliveryRows(row func(string, string, ...any), r *Result) {
	row("published", "%s in %ss (%s/s)", Group(r.Published), Num(r.PublishSeconds), Num(r.PublishRate))
	frac := "-"
	if r.DeliveredFraction != nil {
		frac = strconv.FormatFloat(*r.DeliveredFraction, 'f', -1, 64)
	}
	row("delivered", "%s of %s expected (fraction %s), last %ss after publishing", Group(r.Delivered), Group(r.Expected), frac, Num(r.DrainSeconds))
	row("deliveries/s", "%s", orUnknown(r.DeliveryRate, Num))
	lat := "-"
	if r.LatencyP50 != nil {
		lat = fmt.Sprintf("%s / %s / %s / %s ms", Num(*r.LatencyP50), Num(*r.LatencyP95), Num(*r.LatencyP99), Num(*r.LatencyMax))
	}
	row("latency p50/p95/p99/max", "%s", lat)
	row("slow-consumer closes (4008)", "%d", r.SlowCloses)
	if r.OtherCloses > 0 {
		row("connections lost otherwise", "%d", r.OtherCloses)
	}
	if r.OutOfOrder > 0 {
		row("out of order or duplicate", "%s", Group(r.OutOfOrder))
	}
	if r.Ignored > 0 {
		row("events not of this run", "%s", Group(r.Ignored))
	}
}

func orUnknown(v *float64, format func(float64) string) string {
	if v == nil {
		return "unknown"
	}
	return format(*v)
}

// Num formats a figure for people: thousands grouped from 1,000 up, one
// decimal from 10, two below (Num(1234.5) is "1,235", Num(0.123) "0.12").
func Num(v float64) string {
	switch a := math.Abs(v); {
	case math.IsNaN(v) || math.IsInf(v, 0):
		return strconv.FormatFloat(v, 'f', -1, 64)
	case a >= 1000:
		return Group(int64(math.Round(v)))
	case a >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	default:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
}

// Group formats n with commas between groups of three digits.
func Group(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	if neg {
		b.WriteByte('-')
	}
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// Progress is what a run reports once a second on standard error.
type Progress struct {
	Scenario  Scenario
	Elapsed   time.Duration
	Phase     string // connecting, publishing, draining, holding
	Connected int
	Conns     int
	Sent      int64
	Delivered int64
	Rate      float64 // deliveries a second over the last report's interval
}

// FormatProgress formats p as one line, without a newline.
func FormatProgress(p Progress) string {
	s := fmt.Sprintf("bench %s %5.1fs %-10s connected %s/%s", p.Scenario, p.Elapsed.Seconds(), p.Phase,
		Group(int64(p.Connected)), Group(int64(p.Conns)))
	if p.Scenario == Idle {
		return s
	}
	return s + fmt.Sprintf("  sent %s  delivered %s  %s/s", Group(p.Sent), Group(p.Delivered), Num(p.Rate))
}
