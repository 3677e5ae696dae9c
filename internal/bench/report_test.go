package bench

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"
)

// The JSON field names are documented and stable: this list changes only
// with docs/benchmarks.md.
var jsonFields = []string{
	"scenario", "run", "runs", "start",
	"gateways", "connections", "topics", "subscribers_per_topic", "rate", "size", "duration_seconds",
	"connect_seconds", "connect_rate",
	"published", "publish_seconds", "publish_rate", "expected", "delivered", "delivered_fraction",
	"deliveries_per_second", "drain_seconds", "slow_consumer_closes", "other_closes", "out_of_order", "ignored_events",
	"latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "latency_max_ms",
	"server_pids", "server_cpu_seconds", "deliveries_per_cpu_second", "bench_cpu_seconds",
	"server_rss_per_conn_bytes", "server_heap_stack_per_conn_bytes", "server_goroutines_per_conn",
}

func TestResultJSONFieldsAreStable(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	if err := WriteJSON(&buf, &Result{Scenario: "idle"}); err != nil {
		t.Fatal(err)
	}
	if strings.Count(buf.String(), "\n") != 1 {
		t.Errorf("not one line: %q", buf.String())
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
		t.Fatal(err)
	}
	var got []string
	for k := range m {
		got = append(got, k)
	}
	want := slices.Clone(jsonFields)
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("fields %v\nwant %v", got, want)
	}
	// Unknown figures are null, never 0; no PIDs is an empty list.
	for _, k := range []string{"rate", "size", "delivered_fraction", "latency_p50_ms", "server_cpu_seconds", "deliveries_per_cpu_second", "server_rss_per_conn_bytes"} {
		if string(m[k]) != "null" {
			t.Errorf("%s is %s, want null", k, m[k])
		}
	}
	if string(m["server_pids"]) != "[]" {
		t.Errorf("server_pids is %s, want []", m["server_pids"])
	}
}

func TestSetDeliveryAndLatency(t *testing.T) {
	t.Parallel()
	var r Result
	r.ServerCPUSeconds = Ptr(4.0)
	r.SetDelivery(1000, 998)
	if *r.DeliveredFraction != 0.998 || *r.DeliveriesPerCPUSecond != 249.5 {
		t.Errorf("fraction %v, per CPU-second %v", *r.DeliveredFraction, *r.DeliveriesPerCPUSecond)
	}
	r.ServerCPUSeconds = nil
	r.SetDelivery(1000, 1000)
	if *r.DeliveredFraction != 1 || r.DeliveriesPerCPUSecond != nil {
		t.Errorf("without CPU: fraction %v, per CPU-second %v", *r.DeliveredFraction, r.DeliveriesPerCPUSecond)
	}
	r.ServerCPUSeconds = Ptr(0.0) // less than a clock tick
	r.SetDelivery(10, 10)
	if r.DeliveriesPerCPUSecond != nil {
		t.Error("deliveries per CPU-second from 0 CPU seconds")
	}

	var h Histogram
	r.SetLatency(&h)
	if r.LatencyP50 != nil {
		t.Error("latency from an empty histogram")
	}
	for i := range 100 {
		h.Record(int64(i+1) * 1_000_000) // 1 to 100 ms
	}
	r.SetLatency(&h)
	if *r.LatencyP50 < 49.6 || *r.LatencyP50 > 50.4 || *r.LatencyP99 < 98.2 || *r.LatencyP99 > 99.8 || *r.LatencyMax != 100 {
		t.Errorf("p50 %v p99 %v max %v ms", *r.LatencyP50, *r.LatencyP99, *r.LatencyMax)
	}
}

func TestWriteTable(t *testing.T) {
	t.Parallel()
	r := Result{Scenario: "fanout", Run: 1, Runs: 1, Start: time.Date(2026, 11, 27, 4, 0, 0, 0, time.UTC), Gateways: 2,
		Connections: 1000, Topics: 1, SubscribersPerTopic: 1000, Rate: Ptr(100.0), Size: Ptr(128), DurationSeconds: 10,
		ConnectSeconds: 0.25, ConnectRate: 4000, Published: 1000, PublishSeconds: 10, PublishRate: 100,
		DeliveryRate: Ptr(99_950.0), SlowCloses: 2, PIDs: []int{1, 2}, ServerCPUSeconds: Ptr(8.0)}
	r.SetDelivery(1_000_000, 999_000)
	var h Histogram
	h.Record(3_000_000)
	r.SetLatency(&h)
	var buf bytes.Buffer
	if err := WriteTable(&buf, &r); err != nil {
		t.Fatal(err)
	}
	table := strings.Join(strings.Fields(buf.String()), " ") // the columns' padding aside
	for _, want := range []string{
		"1,000 connections on 1 topics (1,000 each) through 2 gateways; 128-byte messages 100.0/s for 10.0s",
		"999,000 of 1,000,000 expected (fraction 0.999)",
		"deliveries/s", "99,950",
		"slow-consumer closes (4008) 2",
		"8.00 s over 2 processes",
		"124,875", // deliveries per server CPU-second
	} {
		if !strings.Contains(table, want) {
			t.Errorf("the table lacks %q:\n%s", want, buf.String())
		}
	}
	r.ServerCPUSeconds = nil
	r.SetDelivery(1_000_000, 999_000)
	buf.Reset()
	WriteTable(&buf, &r)
	if !strings.Contains(buf.String(), "unknown (needs --pid)") {
		t.Errorf("without --pid the table does not say CPU is unknown:\n%s", buf.String())
	}
}

func TestNumAndGroup(t *testing.T) {
	t.Parallel()
	for v, want := range map[float64]string{0: "0.00", 0.123: "0.12", 9.999: "10.00", 12.34: "12.3", 999.9: "999.9", 1234.5: "1,235", 1_000_000: "1,000,000", -2500: "-2,500"} {
		if got := Num(v); got != want {
			t.Errorf("Num(%v) = %q, want %q", v, got, want)
		}
	}
	for n, want := range map[int64]string{0: "0", 999: "999", 1000: "1,000", 123456789: "123,456,789", -1000: "-1,000"} {
		if got := Group(n); got != want {
			t.Errorf("Group(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestFormatProgress(t *testing.T) {
	t.Parallel()
	got := FormatProgress(Progress{Scenario: Fanout, Elapsed: 3 * time.Second, Phase: "publishing", Connected: 1000, Conns: 1000,
		Sent: 300, Delivered: 299_000, Rate: 99_800})
	for _, want := range []string{"bench fanout", "3.0s", "publishing", "connected 1,000/1,000", "sent 300", "delivered 299,000", "99,800/s"} {
		if !strings.Contains(got, want) {
			t.Errorf("%q lacks %q", got, want)
		}
	}
	if idle := FormatProgress(Progress{Scenario: Idle, Phase: "holding", Connected: 5, Conns: 5}); strings.Contains(idle, "sent") {
		t.Errorf("idle progress mentions sending: %q", idle)
	}
}
