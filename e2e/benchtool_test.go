package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/updraft/updraft/internal/testenv"
)

// The smoke runs of `updraft bench`: every scenario, with tiny counts,
// against real gateways (race-checked under `make test`, like the bench
// binary itself). They check that the tool works and that every message
// arrived, never a timing.

// benchFigures is what the smoke runs read of a --json result.
type benchFigures struct {
	Scenario            string   `json:"scenario"`
	Run                 int      `json:"run"`
	Connections         int      `json:"connections"`
	Topics              int      `json:"topics"`
	SubscribersPerTopic int      `json:"subscribers_per_topic"`
	ConnectRate         float64  `json:"connect_rate"`
	Published           int64    `json:"published"`
	Expected            int64    `json:"expected"`
	Delivered           int64    `json:"delivered"`
	DeliveredFraction   *float64 `json:"delivered_fraction"`
	DeliveryRate        *float64 `json:"deliveries_per_second"`
	SlowCloses          int      `json:"slow_consumer_closes"`
	OtherCloses         int      `json:"other_closes"`
	OutOfOrder          int64    `json:"out_of_order"`
	Ignored             int64    `json:"ignored_events"`
	LatencyP50          *float64 `json:"latency_p50_ms"`
	LatencyP99          *float64 `json:"latency_p99_ms"`
	LatencyMax          *float64 `json:"latency_max_ms"`
	ServerCPU           *float64 `json:"server_cpu_seconds"`
	RSSPerConn          *float64 `json:"server_rss_per_conn_bytes"`
	HeapStackPerConn    *float64 `json:"server_heap_stack_per_conn_bytes"`
	GoroutinesPerConn   *float64 `json:"server_goroutines_per_conn"`
}

// runBenchTool runs `updraft bench args... --json` and returns one result
// per run; a non-zero exit fails the test.
func runBenchTool(t *testing.T, args ...string) []benchFigures {
	t.Helper()
	out := runBenchToolRaw(t, append(args, "--json")...)
	var runs []benchFigures
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		var f benchFigures
		if err := json.Unmarshal(sc.Bytes(), &f); err != nil {
			t.Fatalf("bench printed %q: %v", sc.Text(), err)
		}
		runs = append(runs, f)
	}
	return runs
}

// runBenchToolRaw runs `updraft bench args...` with a bare environment and
// returns its standard output.
func runBenchToolRaw(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, testenv.Binary(t), append([]string{"bench"}, args...)...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("updraft bench %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	t.Logf("updraft bench %s (%.1fs):\n%s%s", strings.Join(args, " "), time.Since(start).Seconds(), stdout.String(), stderr.String())
	return stdout.String()
}

// checkAllDelivered fails unless the run delivered every message it
// published to every subscriber of its topic, once and in order.
func checkAllDelivered(t *testing.T, f benchFigures, published int64) {
	t.Helper()
	switch {
	case published > 0 && f.Published != published:
		t.Errorf("run %d published %d messages, want %d", f.Run, f.Published, published)
	case f.Published <= 0:
		t.Errorf("run %d published nothing", f.Run)
	}
	if want := f.Published * int64(f.SubscribersPerTopic); f.Expected != want || f.Delivered != want {
		t.Errorf("run %d: expected %d, delivered %d; want both %d (%d messages × %d subscribers)",
			f.Run, f.Expected, f.Delivered, want, f.Published, f.SubscribersPerTopic)
	}
	if f.DeliveredFraction == nil || *f.DeliveredFraction != 1 {
		t.Errorf("run %d: fraction delivered %v, want 1", f.Run, f.DeliveredFraction)
	}
	if f.SlowCloses != 0 || f.OtherCloses != 0 || f.OutOfOrder != 0 || f.Ignored != 0 {
		t.Errorf("run %d: %d slow-consumer closes, %d other closes, %d out of order, %d ignored; want none",
			f.Run, f.SlowCloses, f.OtherCloses, f.OutOfOrder, f.Ignored)
	}
	if f.LatencyP50 == nil || f.LatencyMax == nil || f.DeliveryRate == nil || *f.DeliveryRate <= 0 {
		t.Errorf("run %d: no latency or delivery rate: %+v", f.Run, f)
	}
}

// TestBenchToolScenarios runs fanout, saturate, topics and idle against
// two gateways on one Redis.
func TestBenchToolScenarios(t *testing.T) {
	_, nodes := startCluster(t, 2, nil)
	common := []string{
		"--ws", nodes[0].WSURL() + "," + nodes[1].WSURL(),
		"--api", nodes[0].URL(), "--api", nodes[1].URL(),
		"--api-key", apiKey,
		"--pid", fmt.Sprintf("%d,%d", nodes[0].PID(), nodes[1].PID()),
	}
	with := func(args ...string) []string { return append(append([]string(nil), args...), common...) }

	t.Run("fanout", func(t *testing.T) {
		runs := runBenchTool(t, with("fanout", "--subscribers", "5", "--rate", "40", "--messages", "20", "--duration", "2s", "--runs", "2")...)
		if len(runs) != 2 || runs[0].Run != 1 || runs[1].Run != 2 {
			t.Fatalf("--runs 2 printed %d results: %+v", len(runs), runs)
		}
		for _, f := range runs {
			if f.Connections != 5 || f.Topics != 1 || f.SubscribersPerTopic != 5 || f.ServerCPU == nil {
				t.Errorf("run %d: %+v", f.Run, f)
			}
			checkAllDelivered(t, f, 20)
		}
	})
	t.Run("saturate", func(t *testing.T) {
		runs := runBenchTool(t, with("saturate", "--subscribers", "5", "--publishers", "2", "--batch", "10", "--window", "20",
			"--messages", "100", "--duration", "2s")...)
		if len(runs) != 1 {
			t.Fatalf("%d results", len(runs))
		}
		checkAllDelivered(t, runs[0], 0) // as many as two seconds allowed, up to 100
	})
	t.Run("topics", func(t *testing.T) {
		prof := filepath.Join(t.TempDir(), "bench.prof")
		runs := runBenchTool(t, with("topics", "--topics", "3", "--subscribers-per-topic", "2", "--rate", "60", "--messages", "30",
			"--duration", "2s", "--cpuprofile", prof)...)
		if len(runs) != 1 || runs[0].Connections != 6 || runs[0].Topics != 3 {
			t.Fatalf("results: %+v", runs)
		}
		checkAllDelivered(t, runs[0], 30)
		// A CPU profile is gzip-compressed protocol buffers.
		if b, err := os.ReadFile(prof); err != nil || len(b) < 2 || b[0] != 0x1f || b[1] != 0x8b {
			t.Errorf("--cpuprofile wrote no profile: %d bytes, %v", len(b), err)
		}
	})
	t.Run("idle", func(t *testing.T) {
		runs := runBenchTool(t, with("idle", "--connections", "20", "--duration", "1s")...)
		if len(runs) != 1 {
			t.Fatalf("%d results", len(runs))
		}
		f := runs[0]
		if f.Connections != 20 || f.Topics != 20 || f.ConnectRate <= 0 || f.OtherCloses != 0 {
			t.Errorf("idle: %+v", f)
		}
		if f.RSSPerConn == nil || f.HeapStackPerConn == nil || f.GoroutinesPerConn == nil || f.ServerCPU == nil {
			t.Errorf("idle: a memory or CPU figure is missing: %+v", f)
		}
		if f.Published != 0 || f.DeliveredFraction != nil || f.DeliveryRate != nil || f.LatencyP50 != nil {
			t.Errorf("idle reports deliveries: %+v", f)
		}
	})
	t.Run("table", func(t *testing.T) {
		out := runBenchToolRaw(t, with("fanout", "--subscribers", "3", "--rate", "20", "--messages", "5", "--duration", "1s")...)
		table := strings.Join(strings.Fields(out), " ")
		for _, want := range []string{"delivered 15 of 15 expected (fraction 1)", "slow-consumer closes (4008) 0", "deliveries per server CPU-second"} {
			if !strings.Contains(table, want) {
				t.Errorf("the table lacks %q:\n%s", want, out)
			}
		}
	})
}

// TestBenchToolDB inserts rows through PostgreSQL into a table the tool
// creates and tracks, with an embedded node running the tracker in
// process.
func TestBenchToolDB(t *testing.T) {
	pg := testenv.StartPostgres(t)
	node := testenv.StartNode(t, nodeEnv("", map[string]string{
		"UPDRAFT_DATABASE_URL": pg.URL(), "UPDRAFT_POLL_INTERVAL": "50ms",
	}))
	runs := runBenchTool(t, "db", "--ws", node.WSURL(), "--database", pg.URL(), "--subscribers", "3",
		"--rate", "40", "--messages", "20", "--duration", "2s", "--pid", fmt.Sprint(node.PID()))
	if len(runs) != 1 || runs[0].Topics != 1 || runs[0].Connections != 3 {
		t.Fatalf("results: %+v", runs)
	}
	checkAllDelivered(t, runs[0], 20)
	var rows int
	if err := pg.DB(t).QueryRow(`SELECT count(*) FROM bench_rows WHERE sent > 1`).Scan(&rows); err != nil || rows != 20 {
		t.Errorf("bench_rows holds %d rows of the run (%v), want 20", rows, err)
	}
}
