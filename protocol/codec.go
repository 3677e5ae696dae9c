package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Separator joins the messages packed into one frame.
const Separator = '\n'

// Decoding errors. A DecodeError carries one of these and, when it could be
// read, the request's ref so the reply can name it.
var (
	ErrMalformed   = errors.New("protocol: malformed message")
	ErrMissingType = errors.New("protocol: missing type")
	ErrMissingRef  = errors.New("protocol: missing ref")
	ErrUnknownType = errors.New("protocol: unknown type")
	// ErrInvalidUTF8: the message holds bytes that are not UTF-8. Every
	// frame is a text frame, which must be UTF-8 (RFC 6455 section 8.1; a
	// browser closes a connection that receives anything else with 1007),
	// so such a message is refused rather than passed on. Escapes such as
	// \u00ff are UTF-8 and pass.
	ErrInvalidUTF8 = errors.New("protocol: invalid UTF-8")
)

// DecodeError is a message that could not be turned into a Request.
type DecodeError struct {
	Ref    string // the message's ref, when one could be read
	Err    error  // one of the sentinels above
	Detail string // human-readable specifics
}

func (e *DecodeError) Error() string { return e.Err.Error() + ": " + e.Detail }
func (e *DecodeError) Unwrap() error { return e.Err }

// Lines calls fn with each message of a frame: the non-blank lines between
// separators, surrounding whitespace trimmed. The slices alias frame.
func Lines(frame []byte, fn func(line []byte)) {
	for len(frame) > 0 {
		i := bytes.IndexByte(frame, Separator)
		var line []byte
		if i < 0 {
			line, frame = frame, nil
		} else {
			line, frame = frame[:i], frame[i+1:]
		}
		if line = bytes.TrimSpace(line); len(line) > 0 {
			fn(line)
		}
	}
}

// requestTypeList is the one list of client-to-server types: DecodeRequest
// accepts exactly these, and the gateway's handler table has one entry per
// type (its test walks RequestTypes).
var requestTypeList = [...]string{
	TypeConnect, TypeRefresh, TypePing,
	TypeSubscribe, TypeUnsubscribe, TypePublish,
	TypeTrack, TypeUntrack, TypeMembers, TypeHistory,
}

var requestTypes = func() map[string]bool {
	m := make(map[string]bool, len(requestTypeList))
	for _, t := range requestTypeList {
		m[t] = true
	}
	return m
}()

// RequestTypes returns the request types DecodeRequest accepts, in a fresh
// slice. A server must answer every one of them.
func RequestTypes() []string { return append([]string(nil), requestTypeList[:]...) }

// DecodeRequest parses one client message. It checks the envelope (a JSON
// object with a known type and a non-empty ref), not the fields of the type.
func DecodeRequest(line []byte) (Request, error) {
	var r Request
	if !utf8.Valid(line) {
		return r, &DecodeError{Ref: salvageRef(line), Err: ErrInvalidUTF8, Detail: "a message must be UTF-8 text"}
	}
	if err := json.Unmarshal(line, &r); err != nil {
		return Request{}, &DecodeError{Ref: salvageRef(line), Err: ErrMalformed, Detail: jsonDetail(err)}
	}
	switch {
	case r.Type == "":
		return r, &DecodeError{Ref: r.Ref, Err: ErrMissingType, Detail: "every message needs a type"}
	case !requestTypes[r.Type]:
		return r, &DecodeError{Ref: r.Ref, Err: ErrUnknownType, Detail: fmt.Sprintf("%q is not a request type", truncate(r.Type, 64))}
	case r.Ref == "":
		return r, &DecodeError{Err: ErrMissingRef, Detail: "every request needs a non-empty ref"}
	case len(r.Ref) > 64:
		return r, &DecodeError{Err: ErrMalformed, Detail: "ref longer than 64 bytes"}
	}
	return r, nil
}

// MessageType returns the type of one message, so that a reader can decode
// it into its own struct (Reply, Event, PresenceEvent, Disconnect, Request).
// Every message this package encodes starts with its type, which is read
// without a JSON pass and, for the types above, without allocating; any
// other message is read as JSON. ErrMalformed for a line that is not a
// JSON object, ErrMissingType for one without a type.
func MessageType(line []byte) (string, error) {
	const prefix = `{"type":"`
	if bytes.HasPrefix(line, []byte(prefix)) {
		rest := line[len(prefix):]
		if i := bytes.IndexByte(rest, '"'); i > 0 && bytes.IndexByte(rest[:i], '\\') < 0 {
			if t, ok := knownType(rest[:i]); ok {
				return t, nil
			}
		}
	}
	var env struct {
		Type string `json:"type"`
	}
	if err := json.Unmarshal(line, &env); err != nil {
		return "", &DecodeError{Err: ErrMalformed, Detail: jsonDetail(err)}
	}
	if env.Type == "" {
		return "", &DecodeError{Err: ErrMissingType, Detail: "every message needs a type"}
	}
	return env.Type, nil
}

// knownType returns the constant equal to b, so a known type costs no
// allocation.
func knownType(b []byte) (string, bool) {
	switch string(b) {
	case TypeReply:
		return TypeReply, true
	case TypeEvent:
		return TypeEvent, true
	case TypePresence:
		return TypePresence, true
	case TypeDisconnect:
		return TypeDisconnect, true
	}
	for _, t := range requestTypeList {
		if t == string(b) {
			return t, true
		}
	}
	return "", false
}

// salvageRef reads the ref of a message DecodeRequest refuses, so that the
// client can match the error to its request; "" when there is none, or
// when it was not UTF-8 (encoding/json replaced bytes: not what the client
// sent).
func salvageRef(line []byte) string {
	var env struct {
		Ref string `json:"ref"`
	}
	if json.Unmarshal(line, &env) != nil || len(env.Ref) > 64 || strings.ContainsRune(env.Ref, utf8.RuneError) {
		return ""
	}
	return env.Ref
}

func jsonDetail(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("invalid JSON at byte %d", se.Offset)
	case errors.As(err, &te):
		if te.Field != "" {
			return fmt.Sprintf("field %q must be %s, not %s", te.Field, te.Type, te.Value)
		}
		return "a message must be a JSON object, not " + te.Value
	}
	return "invalid JSON"
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// AppendEvent appends the wire form of e to dst. It is the hot-path encoder
// (one call per message per node), so it writes the JSON by hand: Topic,
// Event and Epoch are validated names needing no escaping, Data and Old must
// already be valid JSON, and Type is always "event".
func AppendEvent(dst []byte, e *Event) []byte {
	dst = append(dst, `{"type":"event","topic":"`...)
	dst = append(dst, e.Topic...)
	dst = append(dst, `","event":"`...)
	dst = append(dst, e.Event...)
	dst = append(dst, `","epoch":"`...)
	dst = append(dst, e.Epoch...)
	dst = append(dst, `","seq":`...)
	dst = strconv.AppendUint(dst, e.Seq, 10)
	dst = append(dst, `,"ts":`...)
	dst = strconv.AppendInt(dst, e.TS, 10)
	if e.From != "" {
		dst = append(dst, `,"from":`...)
		dst = AppendString(dst, e.From)
	}
	if len(e.Data) > 0 {
		dst = append(dst, `,"data":`...)
		dst = append(dst, e.Data...)
	}
	if len(e.Old) > 0 {
		dst = append(dst, `,"old":`...)
		dst = append(dst, e.Old...)
	}
	if e.Truncated {
		dst = append(dst, `,"truncated":true`...)
	}
	return append(dst, '}')
}

const hexDigits = "0123456789abcdef"

// AppendString appends s as a JSON string, escaping what JSON requires and
// replacing invalid UTF-8 with U+FFFD, as encoding/json does.
func AppendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		b := s[i]
		if b < utf8.RuneSelf {
			if b >= 0x20 && b != '"' && b != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '"', '\\':
				dst = append(dst, '\\', b)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[b>>4], hexDigits[b&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// EncodeReply returns the wire form of an ok reply carrying data, which is
// marshalled with encoding/json (nil means no data).
func EncodeReply(ref string, data any) []byte {
	r := Reply{Type: TypeReply, Ref: ref, OK: true}
	if data != nil {
		raw, err := json.Marshal(data)
		if err != nil {
			return EncodeError(ref, CodeInternal, "encoding reply: "+err.Error())
		}
		r.Data = raw
	}
	b, _ := json.Marshal(&r) // cannot fail: every field is marshallable
	return b
}

// EncodeError returns the wire form of a failed reply.
func EncodeError(ref, code, message string) []byte {
	b, _ := json.Marshal(&Reply{Type: TypeReply, Ref: ref, Error: &Error{Code: code, Message: message}})
	return b
}

// EncodeDisconnect returns the wire form of a disconnect message.
func EncodeDisconnect(code int, reason string) []byte {
	b, _ := json.Marshal(&Disconnect{Type: TypeDisconnect, Code: code, Reason: reason, Reconnect: Reconnects(code)})
	return b
}
