package bench

import (
	"bytes"
	"strconv"
)

// A bench message's data is {"sent":T,"pad":"xxx…"}: T the Unix time in
// nanoseconds when it was sent, pad filling the data to the size asked
// for. A db row carries the same two values in columns of those names, so
// its event's data (to_jsonb of the row) holds "sent": T too.
const (
	payloadHead = `{"sent":`
	payloadMid  = `,"pad":"`
	payloadTail = `"}`
	// sentDigits is how many digits a Unix time in nanoseconds has from
	// 2001 to 2286.
	sentDigits = 19
	// MinSize is the smallest data size: the send time and an empty pad.
	MinSize = len(payloadHead) + sentDigits + len(payloadMid) + len(payloadTail)
)

// PadLen returns how many pad characters make a payload of size bytes.
func PadLen(size int) int { return max(size-MinSize, 0) }

// AppendPayload appends the data of a message sent at sent (Unix
// nanoseconds) to dst: size bytes, or MinSize when size is smaller.
func AppendPayload(dst []byte, sent int64, size int) []byte {
	dst = append(dst, payloadHead...)
	dst = strconv.AppendInt(dst, sent, 10)
	dst = append(dst, payloadMid...)
	for range PadLen(size) {
		dst = append(dst, 'x')
	}
	return append(dst, payloadTail...)
}

var (
	eventPrefix = []byte(`{"type":"event"`)
	seqKey      = []byte(`"seq":`)
	dataKey     = []byte(`"data":`)
	sentKey     = []byte(`"sent":`)
	// payloadStart is how a bench message's data starts.
	payloadStart = []byte(payloadHead)
)

// IsEvent reports whether line is an event message.
func IsEvent(line []byte) bool { return bytes.HasPrefix(line, eventPrefix) }

// ParseEvent reads the seq and the send time of an event line as the
// gateway writes it (protocol.AppendEvent: "seq" before "data"), without
// decoding the JSON: it finds "seq": and, after "data":, the "sent": that
// starts a bench message's data or is among a table row's columns
// (to_jsonb writes "sent": T, with a space). ok is false when either is
// missing, as on an event that another publisher sent.
func ParseEvent(line []byte) (seq uint64, sent int64, ok bool) {
	i := find(line, seqKey, 3)
	if i < 0 {
		return 0, 0, false
	}
	rest := line[i+len(seqKey):]
	v, n := leadingDigits(rest)
	if n == 0 {
		return 0, 0, false
	}
	seq, rest = v, rest[n:]
	d := find(rest, dataKey, 1)
	if d < 0 {
		return 0, 0, false
	}
	rest = rest[d+len(dataKey):]
	if bytes.HasPrefix(rest, payloadStart) { // a bench message
		rest = rest[len(payloadStart):]
	} else { // a table row
		s := find(rest, sentKey, 3)
		if s < 0 {
			return 0, 0, false
		}
		rest = rest[s+len(sentKey):]
	}
	for len(rest) > 0 && rest[0] == ' ' {
		rest = rest[1:]
	}
	v, n = leadingDigits(rest)
	if n == 0 || v > 1<<63-1 {
		return 0, 0, false
	}
	return seq, int64(v), true
}

// find returns the index of key in b, -1 when absent. It looks for the
// byte key[at], rare in event lines ('q' of "seq", 'd' of "data"), where
// bytes.Index would stop at every '"' of the JSON.
func find(b, key []byte, at int) int {
	for from := at; from < len(b); {
		i := bytes.IndexByte(b[from:], key[at])
		if i < 0 {
			return -1
		}
		if start := from + i - at; bytes.HasPrefix(b[start:], key) {
			return start
		}
		from += i + 1
	}
	return -1
}

// leadingDigits parses the decimal digits b starts with, up to 19 of
// them, and returns the value and how many there were.
func leadingDigits(b []byte) (uint64, int) {
	var v uint64
	n := 0
	for n < len(b) && n < 19 && b[n] >= '0' && b[n] <= '9' {
		v = v*10 + uint64(b[n]-'0')
		n++
	}
	return v, n
}
