package presence

import "time"

// Timings is how a cluster of nodes keeps presence within one timeout T:
// how long a member lives in the store, how often each node renews its
// members and sweeps the topics it watches, and the safety net on the
// Redis keys. Timing derives them all from T; no other place holds these
// fractions.
//
// A node killed right after a heartbeat leaves its members alive for TTL;
// the next sweep after that finds them, so they leave within TTL + Sweep,
// which is under T (TestTimingLeavesWithinTimeout).
type Timings struct {
	// Timeout is T: a dead node's members leave within it.
	Timeout time.Duration
	// TTL (2T/3) is a member's lifetime in the store from its last Track
	// or Heartbeat: the ttl the gateway passes to both.
	TTL time.Duration
	// Heartbeat (T/3) is how often a node renews all its members, and how
	// long one renewal may take: two fit in a TTL, so one late heartbeat
	// does not expire a live member.
	Heartbeat time.Duration
	// Sweep (T/6) is how often a node sweeps the topics where it has a
	// presence subscriber.
	Sweep time.Duration
	// KeyTTL (safetyFactor × TTL, 2T) is the safety-net TTL of a topic's
	// Redis keys (see Redis), so that the keys of a topic whose nodes all
	// died vanish even if nobody sweeps it.
	KeyTTL time.Duration
}

// safetyFactor times a membership's ttl is the safety-net TTL of its
// topic's Redis keys.
const safetyFactor = 3

// Timing returns the timings of presence timeout T.
func Timing(timeout time.Duration) Timings {
	ttl := timeout * 2 / 3
	return Timings{
		Timeout:   timeout,
		TTL:       ttl,
		Heartbeat: timeout / 3,
		Sweep:     timeout / 6,
		KeyTTL:    safetyFactor * ttl,
	}
}
