package bench

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
)

// ClockTicks is the unit of the CPU times in /proc/PID/stat: USER_HZ,
// which Linux fixes at 100 a second for user space on every architecture
// Go supports.
const ClockTicks = 100

// ParseCPUSeconds returns the CPU time a process has used, user and
// system, from the contents of its /proc/PID/stat.
func ParseCPUSeconds(stat []byte) (float64, error) {
	// The command name (field 2) is in parentheses and may hold spaces
	// and parentheses: the fields after it start after the last ')'.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("bench: /proc/PID/stat without a command name")
	}
	fields := bytes.Fields(stat[i+1:])
	// fields[0] is field 3 (state); utime and stime are fields 14 and 15.
	const utime, stime = 14 - 3, 15 - 3
	if len(fields) <= stime {
		return 0, fmt.Errorf("bench: /proc/PID/stat has %d fields after the command name, want more than %d", len(fields), stime)
	}
	var ticks uint64
	for _, f := range [][]byte{fields[utime], fields[stime]} {
		v, err := strconv.ParseUint(string(f), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("bench: /proc/PID/stat: CPU time %q: %v", f, err)
		}
		ticks += v
	}
	return float64(ticks) / ClockTicks, nil
}

// ParseRSS returns a process's resident set size in bytes from the
// contents of its /proc/PID/status (the VmRSS line, in kB).
func ParseRSS(status []byte) (int64, error) {
	for line := range bytes.Lines(status) {
		rest, ok := bytes.CutPrefix(line, []byte("VmRSS:"))
		if !ok {
			continue
		}
		rest = bytes.TrimSuffix(bytes.TrimSpace(rest), []byte("kB"))
		kb, err := strconv.ParseInt(string(bytes.TrimSpace(rest)), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("bench: /proc/PID/status: VmRSS %q: %v", line, err)
		}
		return kb * 1024, nil
	}
	return 0, errors.New("bench: /proc/PID/status has no VmRSS line (a kernel thread, or a zombie)")
}

// ParseMetric returns the value of an unlabelled sample called name in a
// Prometheus text exposition, such as go_memstats_heap_inuse_bytes, and
// whether it was there.
func ParseMetric(text []byte, name string) (float64, bool) {
	for line := range bytes.Lines(text) {
		rest, ok := bytes.CutPrefix(line, []byte(name))
		if !ok || len(rest) == 0 || rest[0] != ' ' {
			continue
		}
		fields := bytes.Fields(rest)
		if len(fields) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(string(fields[0]), 64)
		if err != nil {
			return 0, false
		}
		return v, true
	}
	return 0, false
}
