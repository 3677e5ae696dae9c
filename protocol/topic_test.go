package protocol

import (
	"errors"
	"strings"
	"testing"
)

func TestValidateTopic(t *testing.T) {
	valid := []string{"orders", "billing.invoices", "chat/general", "doc/42", "a/b/c", "user@x:y-z_1/q", strings.Repeat("a", 255)}
	invalid := []string{"", "/chat", "chat/", "chat//x", "chat general", "chat/é", "a*b", strings.Repeat("a", 256), "a\nb"}
	for _, s := range valid {
		if err := ValidateTopic(s); err != nil {
			t.Errorf("ValidateTopic(%q) = %v, want nil", s, err)
		}
	}
	for _, s := range invalid {
		if err := ValidateTopic(s); !errors.Is(err, ErrBadTopic) {
			t.Errorf("ValidateTopic(%q) = %v, want ErrBadTopic", s, err)
		}
	}
	if !IsTable("orders") || !IsTable("billing.invoices") || IsTable("chat/general") {
		t.Error("IsTable disagrees with the slash rule")
	}
}

func TestValidatePublish(t *testing.T) {
	tests := []struct {
		topic, event string
		want         error
	}{
		{"chat/general", "message", nil},
		{"chat/general", "a.b:c-d_e", nil},
		{"orders", "message", ErrTableTopic},
		{"chat//x", "message", ErrBadTopic},
		{"chat/general", "", ErrBadEvent},
		{"chat/general", "a/b", ErrBadEvent},
		{"chat/general", strings.Repeat("e", 65), ErrBadEvent},
		{"chat/general", "INSERT", ErrReserved},
		{"chat/general", "DELETE", ErrReserved},
	}
	for _, tt := range tests {
		err := ValidatePublish(tt.topic, tt.event)
		if tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
			t.Errorf("ValidatePublish(%q, %q) = %v, want %v", tt.topic, tt.event, err, tt.want)
		}
	}
}

func TestValidatePresence(t *testing.T) {
	for _, tt := range []struct {
		topic string
		want  error
	}{
		{"doc/42", nil},
		{"orders", ErrNoPresence},
		{"billing.invoices", ErrNoPresence},
		{"doc//42", ErrBadTopic},
		{"", ErrBadTopic},
	} {
		err := ValidatePresence(tt.topic)
		if tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
			t.Errorf("ValidatePresence(%q) = %v, want %v", tt.topic, err, tt.want)
		}
	}
	if err := ValidatePresence("orders"); !strings.Contains(err.Error(), "database changes only") {
		t.Errorf("the refusal %q does not say why", err)
	}
}

func TestMatchPattern(t *testing.T) {
	tests := []struct {
		pattern, topic string
		want           bool
	}{
		{"orders", "orders", true},
		{"orders", "order", false},
		{"orders", "orders/x", false},
		{"*", "orders", true},
		{"*", "billing.invoices", true},
		{"*", "chat/general", false},
		{"chat/*", "chat/general", true},
		{"chat/*", "chat", false},
		{"chat/*", "chat/a/b", false},
		{"chat/*", "news/general", false},
		{"doc/**", "doc/42", true},
		{"doc/**", "doc/42/cursor/7", true},
		{"doc/**", "doc", false},
		{"doc/**", "docs/1", false},
		{"**", "orders", true},
		{"**", "a/b/c", true},
		{"*/general", "chat/general", true},
		{"*/general", "chat/other", false},
		{"a/*/c", "a/b/c", true},
		{"a/*/c", "a/b/d", false},
		{"chat/general", "chat/general", true},
	}
	for _, tt := range tests {
		if got := MatchPattern(tt.pattern, tt.topic); got != tt.want {
			t.Errorf("MatchPattern(%q, %q) = %v, want %v", tt.pattern, tt.topic, got, tt.want)
		}
	}
	if !MatchAny([]string{"orders", "chat/*"}, "chat/x") || MatchAny(nil, "chat/x") {
		t.Error("MatchAny")
	}
	if n := testing.AllocsPerRun(100, func() { MatchPattern("doc/*/x/**", "doc/1/x/y/z") }); n != 0 {
		t.Errorf("MatchPattern allocated %v times", n)
	}
}

func TestValidatePattern(t *testing.T) {
	for _, p := range []string{"orders", "*", "**", "chat/*", "doc/**", "*/x/*", "a/*/**"} {
		if err := ValidatePattern(p); err != nil {
			t.Errorf("ValidatePattern(%q) = %v", p, err)
		}
	}
	for _, p := range []string{"", "**/x", "chat/a*", "chat//x", "/x", "x/", "a b"} {
		if err := ValidatePattern(p); !errors.Is(err, ErrBadPattern) {
			t.Errorf("ValidatePattern(%q) = %v, want ErrBadPattern", p, err)
		}
	}
}

func FuzzMatchPattern(f *testing.F) {
	f.Add("doc/**", "doc/1/2")
	f.Add("*/x", "a/x")
	f.Fuzz(func(t *testing.T, pattern, topic string) {
		// Callers validate topics before matching; the properties hold for
		// valid topics.
		if ValidateTopic(topic) != nil {
			return
		}
		got := MatchPattern(pattern, topic)
		if !strings.Contains(pattern, "*") && got != (pattern == topic) {
			t.Fatalf("literal pattern %q vs %q: got %v", pattern, topic, got)
		}
		if !MatchPattern("**", topic) {
			t.Fatalf("** does not match %q", topic)
		}
		if MatchPattern("*", topic) != IsTable(topic) {
			t.Fatalf("* must match exactly the one-segment topics, %q", topic)
		}
	})
}
