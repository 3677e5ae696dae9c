package broker

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// errMalformed: a payload or history entry read from the store could not be
// decoded. It is reported, never panicked on: anything can write to Redis.
var errMalformed = errors.New("broker: malformed payload")

// newEpoch returns a fresh epoch: 16 random hex characters. Epochs are
// compared for equality only; 64 random bits make it vanishingly unlikely
// that a topic's new epoch repeats an old one, which would hide a gap.
func newEpoch() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never returns an error
	return hex.EncodeToString(b[:])
}

// Encoded publication (the "body"), written once by the publisher and kept
// verbatim in the history stream and in the live payload:
//
//	version   1 byte, codecVersion (2; version 1 had no flags byte and is
//	          still decoded, as flags 0)
//	flags     1 byte: bit 0 Truncated
//	event     uvarint length, bytes
//	from      uvarint length, bytes
//	ts        varint (zig-zag), Unix milliseconds
//	data      uvarint length, bytes
//	old       uvarint length, bytes
//
// The live payload published on a topic's channel prefixes the body with
// the position, in text, so that the Lua script can build it by
// concatenation:
//
//	<epoch> ":" <seq in decimal> ":" <body>
const (
	codecVersion  = 2
	flagTruncated = 1 << 0
)

// appendPublication appends p's encoding to dst.
func appendPublication(dst []byte, p Publication) []byte {
	var flags byte
	if p.Truncated {
		flags |= flagTruncated
	}
	dst = append(dst, codecVersion, flags)
	dst = appendField(dst, p.Event)
	dst = appendField(dst, p.From)
	dst = binary.AppendVarint(dst, p.TS)
	dst = appendField(dst, p.Data)
	dst = appendField(dst, p.Old)
	return dst
}

func appendField[T ~string | ~[]byte](dst []byte, v T) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(v)))
	return append(dst, v...)
}

// publicationSize bounds the length of p's encoding, to size buffers.
func publicationSize(p Publication) int {
	return 2 + 5*binary.MaxVarintLen64 + len(p.Event) + len(p.From) + len(p.Data) + len(p.Old)
}

// decodePublication decodes a body written by appendPublication. Data and
// Old share one fresh allocation (so they are the caller's to keep, and
// independent of s); Event and From are cloned so that the message does not
// pin the whole payload string in memory.
func decodePublication(s string) (Publication, error) {
	var flags byte
	switch {
	case len(s) >= 2 && s[0] == codecVersion:
		flags, s = s[1], s[2:]
	case len(s) >= 1 && s[0] == 1:
		s = s[1:]
	default:
		return Publication{}, fmt.Errorf("%w: unknown version", errMalformed)
	}
	if flags&^flagTruncated != 0 {
		return Publication{}, fmt.Errorf("%w: unknown flags %#x", errMalformed, flags)
	}
	d := decoder{s: s}
	event := d.field()
	from := d.field()
	ts := d.varint()
	data := d.field()
	old := d.field()
	if d.err != nil {
		return Publication{}, d.err
	}
	if len(d.s) != 0 {
		return Publication{}, fmt.Errorf("%w: %d trailing bytes", errMalformed, len(d.s))
	}
	p := Publication{Event: strings.Clone(event), From: strings.Clone(from), TS: ts, Truncated: flags&flagTruncated != 0}
	if n := len(data) + len(old); n > 0 {
		buf := make([]byte, n)
		copy(buf, data)
		copy(buf[len(data):], old)
		if len(data) > 0 {
			p.Data = buf[:len(data):len(data)]
		}
		if len(old) > 0 {
			p.Old = buf[len(data):]
		}
	}
	return p, nil
}

// decodePayload splits a live payload into its position and publication.
func decodePayload(s string) (Position, Publication, error) {
	epoch, rest, ok := strings.Cut(s, ":")
	if !ok || epoch == "" {
		return Position{}, Publication{}, fmt.Errorf("%w: no epoch", errMalformed)
	}
	seqText, body, ok := strings.Cut(rest, ":")
	if !ok {
		return Position{}, Publication{}, fmt.Errorf("%w: no seq", errMalformed)
	}
	seq, err := strconv.ParseUint(seqText, 10, 64)
	if err != nil || seq == 0 {
		return Position{}, Publication{}, fmt.Errorf("%w: seq %q", errMalformed, seqText)
	}
	pub, err := decodePublication(body)
	if err != nil {
		return Position{}, Publication{}, err
	}
	return Position{Epoch: strings.Clone(epoch), Seq: seq}, pub, nil
}

// decoder reads the fields of a body, remembering the first error.
type decoder struct {
	s   string
	err error
}

func (d *decoder) uvarint() uint64 {
	var x uint64
	for i := 0; i < binary.MaxVarintLen64; i++ {
		if i >= len(d.s) {
			break
		}
		b := d.s[i]
		if i == binary.MaxVarintLen64-1 && b > 1 {
			break // overflows 64 bits
		}
		x |= uint64(b&0x7f) << (7 * i)
		if b < 0x80 {
			d.s = d.s[i+1:]
			return x
		}
	}
	if d.err == nil {
		d.err = fmt.Errorf("%w: bad varint", errMalformed)
	}
	d.s = ""
	return 0
}

func (d *decoder) varint() int64 {
	ux := d.uvarint()
	x := int64(ux >> 1)
	if ux&1 != 0 {
		x = ^x
	}
	return x
}

func (d *decoder) field() string {
	n := d.uvarint()
	if d.err != nil {
		return ""
	}
	if n > uint64(len(d.s)) {
		d.err = fmt.Errorf("%w: field of %d bytes, %d left", errMalformed, n, len(d.s))
		d.s = ""
		return ""
	}
	v := d.s[:n]
	d.s = d.s[n:]
	return v
}
