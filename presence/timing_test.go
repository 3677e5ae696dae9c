package presence_test

import (
	"testing"
	"time"

	"github.com/updraft/updraft/presence"
)

// TestTimingLeavesWithinTimeout checks the promise of the presence
// timeout for every timeout a server accepts (UPDRAFT_PRESENCE_TIMEOUT is
// at least 1s), odd nanoseconds included: a dead node's members expire
// after TTL and the next sweep finds them, so TTL + Sweep must stay under
// the timeout.
func TestTimingLeavesWithinTimeout(t *testing.T) {
	t.Parallel()
	timeouts := []time.Duration{time.Second, time.Second + 1, 3 * time.Second, 15 * time.Second, 15*time.Second + 7, time.Minute - 1, time.Hour, 24 * time.Hour}
	for d := time.Second; d < 2*time.Second; d += 997 * time.Microsecond {
		timeouts = append(timeouts, d)
	}
	for _, timeout := range timeouts {
		tm := presence.Timing(timeout)
		switch {
		case tm.Timeout != timeout:
			t.Fatalf("Timing(%v).Timeout = %v", timeout, tm.Timeout)
		case tm.TTL+tm.Sweep >= timeout:
			t.Fatalf("Timing(%v): TTL %v + Sweep %v is not under the timeout", timeout, tm.TTL, tm.Sweep)
		case tm.Heartbeat <= 0 || tm.Sweep <= 0:
			t.Fatalf("Timing(%v): heartbeat %v, sweep %v: want both positive", timeout, tm.Heartbeat, tm.Sweep)
		case 2*tm.Heartbeat > tm.TTL:
			// One late heartbeat must not expire a live member.
			t.Fatalf("Timing(%v): two heartbeats of %v do not fit in TTL %v", timeout, tm.Heartbeat, tm.TTL)
		case tm.KeyTTL < tm.TTL+tm.Sweep:
			// A dead node's member must still be stored when the sweep
			// comes, for its leave to be signalled.
			t.Fatalf("Timing(%v): KeyTTL %v ends before TTL %v + Sweep %v", timeout, tm.KeyTTL, tm.TTL, tm.Sweep)
		}
	}
}

// TestTimingDefault pins the timings of the default timeout, as
// docs/architecture.md ("Presence") states them.
func TestTimingDefault(t *testing.T) {
	t.Parallel()
	want := presence.Timings{Timeout: 15 * time.Second, TTL: 10 * time.Second, Heartbeat: 5 * time.Second, Sweep: 2500 * time.Millisecond, KeyTTL: 30 * time.Second}
	if got := presence.Timing(15 * time.Second); got != want {
		t.Errorf("Timing(15s) = %+v, want %+v", got, want)
	}
}
