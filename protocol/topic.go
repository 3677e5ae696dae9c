package protocol

import (
	"errors"
	"fmt"
	"strings"
)

// Limits of the topic and event-name grammar.
const (
	MaxTopicLen = 255
	MaxEventLen = 64
)

// Grammar errors, wrapped with the offending value.
var (
	ErrBadTopic    = errors.New("protocol: invalid topic")
	ErrBadEvent    = errors.New("protocol: invalid event name")
	ErrReserved    = errors.New("protocol: event name reserved for table topics")
	ErrBadPattern  = errors.New("protocol: invalid topic pattern")
	ErrTableTopic  = errors.New("protocol: table topics receive events only from the tracker")
	ErrNoPresence  = errors.New("protocol: table topics carry database changes only, no presence")
	errEmptySegmnt = "empty segment (leading, trailing or doubled '/')"
)

// Reserved event names: the tracker's change events.
const (
	EventInsert = "INSERT"
	EventUpdate = "UPDATE"
	EventDelete = "DELETE"
)

func topicByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '_' || c == '-' || c == '.' || c == ':' || c == '@' || c == '/'
}

func eventByte(c byte) bool {
	return topicByte(c) && c != '@' && c != '/'
}

// ValidateTopic checks a topic against the grammar: 1 to 255 bytes of
// A-Z a-z 0-9 _ - . : @ /, with no empty segment.
func ValidateTopic(t string) error {
	if t == "" {
		return fmt.Errorf("%w: empty", ErrBadTopic)
	}
	if len(t) > MaxTopicLen {
		return fmt.Errorf("%w: longer than %d bytes", ErrBadTopic, MaxTopicLen)
	}
	for i := 0; i < len(t); i++ {
		if !topicByte(t[i]) {
			return fmt.Errorf("%w: %q: byte %q not allowed (use A-Z a-z 0-9 _ - . : @ /)", ErrBadTopic, t, t[i])
		}
	}
	if t[0] == '/' || t[len(t)-1] == '/' || strings.Contains(t, "//") {
		return fmt.Errorf("%w: %q: %s", ErrBadTopic, t, errEmptySegmnt)
	}
	return nil
}

// IsTable reports whether a valid topic names a database table: it has no
// '/'. Table topics receive events only from the tracker.
func IsTable(topic string) bool { return strings.IndexByte(topic, '/') < 0 }

// ValidateEvent checks an event name published on an application topic:
// 1 to 64 bytes of A-Z a-z 0-9 _ - . :, and not one of the table events.
func ValidateEvent(name string) error {
	if name == "" {
		return fmt.Errorf("%w: empty", ErrBadEvent)
	}
	if len(name) > MaxEventLen {
		return fmt.Errorf("%w: longer than %d bytes", ErrBadEvent, MaxEventLen)
	}
	for i := 0; i < len(name); i++ {
		if !eventByte(name[i]) {
			return fmt.Errorf("%w: %q: byte %q not allowed (use A-Z a-z 0-9 _ - . :)", ErrBadEvent, name, name[i])
		}
	}
	switch name {
	case EventInsert, EventUpdate, EventDelete:
		return fmt.Errorf("%w: %q", ErrReserved, name)
	}
	return nil
}

// ValidatePublish checks that topic and event name may be published by a
// client or the HTTP API.
func ValidatePublish(topic, event string) error {
	if err := ValidateTopic(topic); err != nil {
		return err
	}
	if IsTable(topic) {
		return fmt.Errorf("%w: %q", ErrTableTopic, topic)
	}
	return ValidateEvent(event)
}

// ValidatePresence checks that topic may carry presence (track, members,
// subscribe with presence): a valid application topic. A table topic may
// not: no row filter applies to presence, so it would carry one tenant's
// state to every other tenant of the table.
func ValidatePresence(topic string) error {
	if err := ValidateTopic(topic); err != nil {
		return err
	}
	if IsTable(topic) {
		return fmt.Errorf("%w: %q is a table topic; presence is for application topics (with a '/')", ErrNoPresence, topic)
	}
	return nil
}

// ValidatePattern checks a permission pattern: a topic whose segments may
// be "*" (exactly one segment) and whose last segment may be "**" (one or
// more segments).
func ValidatePattern(p string) error {
	if p == "" {
		return fmt.Errorf("%w: empty", ErrBadPattern)
	}
	segs := strings.Split(p, "/")
	for i, s := range segs {
		switch {
		case s == "":
			return fmt.Errorf("%w: %q: %s", ErrBadPattern, p, errEmptySegmnt)
		case s == "**" && i != len(segs)-1:
			return fmt.Errorf("%w: %q: ** may only be the last segment", ErrBadPattern, p)
		case s == "*" || s == "**":
		case strings.Contains(s, "*"):
			return fmt.Errorf("%w: %q: * must be a whole segment", ErrBadPattern, p)
		default:
			if err := ValidateTopic(s); err != nil {
				return fmt.Errorf("%w: %q: %v", ErrBadPattern, p, err)
			}
		}
	}
	return nil
}

// MatchPattern reports whether topic matches pattern: segments are compared
// one by one, "*" matches any one segment, a final "**" matches one or more.
// It allocates nothing.
func MatchPattern(pattern, topic string) bool {
	for {
		pi := strings.IndexByte(pattern, '/')
		ti := strings.IndexByte(topic, '/')
		pseg, tseg := pattern, topic
		if pi >= 0 {
			pseg = pattern[:pi]
		}
		if ti >= 0 {
			tseg = topic[:ti]
		}
		if pseg == "**" && pi < 0 {
			return topic != ""
		}
		if pseg != "*" && pseg != tseg || tseg == "" {
			return false
		}
		if pi < 0 || ti < 0 {
			return pi < 0 && ti < 0
		}
		pattern, topic = pattern[pi+1:], topic[ti+1:]
	}
}

// MatchAny reports whether topic matches one of patterns.
func MatchAny(patterns []string, topic string) bool {
	for _, p := range patterns {
		if MatchPattern(p, topic) {
			return true
		}
	}
	return false
}
