package main

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/updraft/updraft/internal/bench"
)

// maxMetricsAnswer bounds what a gateway's /metrics may send.
const maxMetricsAnswer = 16 << 20

// processCPU returns the CPU seconds process pid has used.
func processCPU(pid int) (float64, error) {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, fmt.Errorf("process %d: %w", pid, err)
	}
	return bench.ParseCPUSeconds(stat)
}

// serverCPU returns the CPU seconds the processes have used, summed; nil
// without processes.
func serverCPU(pids []int) (*float64, error) {
	if len(pids) == 0 {
		return nil, nil
	}
	var sum float64
	for _, pid := range pids {
		s, err := processCPU(pid)
		if err != nil {
			return nil, fmt.Errorf("--pid: %w", err)
		}
		sum += s
	}
	return &sum, nil
}

// cpuSample is the CPU time used so far by the servers (nil without
// --pid) and by this process.
type cpuSample struct {
	server *float64
	self   float64
}

func (r *benchRun) sampleCPU() (cpuSample, error) {
	server, err := serverCPU(r.p.PIDs)
	return cpuSample{server: server, self: selfCPU().Seconds()}, err
}

// setCPU records the CPU time used between two samples.
func (r *benchRun) setCPU(before, after cpuSample) {
	r.res.ServerCPUSeconds = cpuUsed(before.server, after.server)
	r.res.BenchCPUSeconds = after.self - before.self
}

// cpuUsed returns the CPU seconds between two readings, nil when unknown.
func cpuUsed(before, after *float64) *float64 {
	if before == nil || after == nil {
		return nil
	}
	return bench.Ptr(math.Round((*after-*before)*bench.ClockTicks) / bench.ClockTicks) // whole ticks, without float noise
}

// serverMemory is the gateways' memory at one moment, summed over them;
// a nil figure is unknown.
type serverMemory struct {
	rss        *float64 // VmRSS of --pid, bytes
	heapStack  *float64 // go_memstats_heap_inuse_bytes + go_memstats_stack_inuse_bytes
	goroutines *float64 // go_goroutines
}

// readServerMemory reads RSS from /proc for --pid and the Go runtime's
// figures from each --ws gateway's /metrics. A gateway whose /metrics
// cannot be read leaves the Go figures unknown, with a note on stderr.
func (r *benchRun) readServerMemory(ctx context.Context) (serverMemory, error) {
	var m serverMemory
	if len(r.p.PIDs) > 0 {
		var sum float64
		for _, pid := range r.p.PIDs {
			status, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
			if err != nil {
				return m, fmt.Errorf("--pid: process %d: %w", pid, err)
			}
			rss, err := bench.ParseRSS(status)
			if err != nil {
				return m, fmt.Errorf("--pid: process %d: %w", pid, err)
			}
			sum += float64(rss)
		}
		m.rss = &sum
	}
	var heap, stack, goroutines float64
	for _, ws := range uniq(r.p.WS) {
		text, err := r.fetchMetrics(ctx, ws)
		if err != nil {
			fmt.Fprintf(r.cfg.stderr, "updraft bench: no Go memory figures: %v\n", err)
			return m, nil
		}
		h, ok1 := bench.ParseMetric(text, "go_memstats_heap_inuse_bytes")
		s, ok2 := bench.ParseMetric(text, "go_memstats_stack_inuse_bytes")
		g, ok3 := bench.ParseMetric(text, "go_goroutines")
		if !ok1 || !ok2 || !ok3 {
			fmt.Fprintf(r.cfg.stderr, "updraft bench: no Go memory figures: the /metrics of %s lacks go_memstats_heap_inuse_bytes, go_memstats_stack_inuse_bytes or go_goroutines\n", ws)
			return m, nil
		}
		heap, stack, goroutines = heap+h, stack+s, goroutines+g
	}
	m.heapStack, m.goroutines = bench.Ptr(heap+stack), &goroutines
	return m, nil
}

// fetchMetrics reads the /metrics of the gateway at WebSocket URL ws.
func (r *benchRun) fetchMetrics(ctx context.Context, ws string) ([]byte, error) {
	u, err := metricsURL(ws)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	text, err := apiDo(req, "", maxMetricsAnswer)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", u, err)
	}
	return text, nil
}

// idle connects --connections connections, holds them for --duration and
// reports the connect rate and what each costs the servers.
func (r *benchRun) idle(ctx context.Context) error {
	if r.res.Run == 2 {
		fmt.Fprintln(r.cfg.stderr, "updraft bench idle: the gateways keep memory they grew for earlier connections, so runs after the first show less growth per connection")
	}
	before, err := r.readServerMemory(ctx)
	if err != nil {
		return err
	}
	cpu0, err := r.sampleCPU()
	if err != nil {
		return err
	}
	if err := r.connect(ctx); err != nil {
		return err
	}
	defer r.closeAll()
	r.phase.Store(phaseHolding)
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(r.p.Duration):
	}
	after, err := r.readServerMemory(ctx)
	if err != nil {
		return err
	}
	cpu1, err := r.sampleCPU()
	if err != nil {
		return err
	}
	r.closeAll()
	r.setCPU(cpu0, cpu1)
	n := float64(r.p.Connections)
	r.res.RSSPerConn = perConn(before.rss, after.rss, n)
	r.res.HeapStackPerConn = perConn(before.heapStack, after.heapStack, n)
	r.res.GoroutinesPerConn = perConn(before.goroutines, after.goroutines, n)
	r.collect(time.Time{})
	return nil
}

// perConn returns (after-before)/n, nil when either is unknown.
func perConn(before, after *float64, n float64) *float64 {
	if before == nil || after == nil {
		return nil
	}
	return bench.Ptr((*after - *before) / n)
}

// uniq returns s without repeats, in order.
func uniq(s []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, v := range s {
		if !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	return out
}
