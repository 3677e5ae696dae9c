package main

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/updraft/updraft/protocol"
)

// parseToken verifies tok with secret and returns its claims.
func parseToken(t *testing.T, tok, secret string) *tokenClaims {
	t.Helper()
	var claims tokenClaims
	_, err := jwt.ParseWithClaims(tok, &claims, func(*jwt.Token) (any, error) { return []byte(secret), nil },
		jwt.WithValidMethods([]string{"HS256"}), jwt.WithExpirationRequired(), jwt.WithIssuedAt())
	if err != nil {
		t.Fatalf("parsing the token: %v", err)
	}
	return &claims
}

func TestTokenRoundTrip(t *testing.T) {
	t.Parallel()
	var stdout, stderr bytes.Buffer
	before := time.Now().Truncate(time.Second)
	err := runToken(context.Background(), []string{
		"--sub", "user-7",
		"--subscribe", "orders, chat/*,doc/**",
		"--publish", "chat/*",
		"--filter", "orders=customer_id=eq.7",
		"--filter", "billing.invoices=status=in.(open,late)&amount=gt.10",
		"--ttl", "90m",
		"--secret", "s3cret",
	}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("runToken: %v (stderr %q)", err, stderr.String())
	}
	tok := strings.TrimSpace(stdout.String())
	if strings.Count(stdout.String(), "\n") != 1 || strings.Count(tok, ".") != 2 {
		t.Fatalf("output %q is not one JWT line", stdout.String())
	}
	c := parseToken(t, tok, "s3cret")
	if c.Subject != "user-7" {
		t.Errorf("sub %q", c.Subject)
	}
	if !slices.Equal(c.Subscribe, []string{"orders", "chat/*", "doc/**"}) || !slices.Equal(c.Publish, []string{"chat/*"}) {
		t.Errorf("subscribe %q publish %q", c.Subscribe, c.Publish)
	}
	if len(c.Filters) != 2 || c.Filters["orders"] != "customer_id=eq.7" || c.Filters["billing.invoices"] != "status=in.(open,late)&amount=gt.10" {
		t.Errorf("filters %v", c.Filters)
	}
	if c.IssuedAt == nil || c.IssuedAt.Before(before) || c.IssuedAt.After(time.Now()) {
		t.Errorf("iat %v", c.IssuedAt)
	}
	if c.ExpiresAt == nil || c.ExpiresAt.Sub(c.IssuedAt.Time) != 90*time.Minute {
		t.Errorf("exp %v, iat %v", c.ExpiresAt, c.IssuedAt)
	}
	// Another secret does not verify it.
	if _, err := jwt.Parse(tok, func(*jwt.Token) (any, error) { return []byte("other"), nil }); !errors.Is(err, jwt.ErrTokenSignatureInvalid) {
		t.Errorf("verified with the wrong secret: %v", err)
	}
}

func TestTokenMinimalOmitsEmptyClaims(t *testing.T) {
	t.Parallel()
	var stdout bytes.Buffer
	if err := runToken(context.Background(), []string{"--sub", "svc", "--secret", "k"}, &stdout, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	tok := strings.TrimSpace(stdout.String())
	var raw jwt.MapClaims
	if _, err := jwt.ParseWithClaims(tok, &raw, func(*jwt.Token) (any, error) { return []byte("k"), nil }); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"subscribe", "publish", "filters"} {
		if _, ok := raw[k]; ok {
			t.Errorf("claim %s present: %v", k, raw)
		}
	}
	if exp, _ := raw.GetExpirationTime(); exp == nil || time.Until(exp.Time) > time.Hour || time.Until(exp.Time) < 59*time.Minute {
		t.Errorf("default ttl: exp %v", exp)
	}
}

// TestTokenSecretFromEnv is not parallel: it sets the environment.
func TestTokenSecretFromEnv(t *testing.T) {
	t.Setenv("UPDRAFT_JWT_SECRET", "from-env")
	var stdout bytes.Buffer
	if err := runToken(context.Background(), []string{"--sub", "u"}, &stdout, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	parseToken(t, strings.TrimSpace(stdout.String()), "from-env")

	t.Setenv("UPDRAFT_JWT_SECRET", "")
	err := runToken(context.Background(), []string{"--sub", "u"}, &stdout, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "UPDRAFT_JWT_SECRET") || !strings.Contains(err.Error(), "--secret") {
		t.Errorf("without a secret: %v", err)
	}
}

func TestTokenBadInput(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		args   []string
		usage  bool   // a usage error (exit 2)
		want   error  // matched with errors.Is when set
		stderr string // expected in stderr or in the error
	}{
		{"no sub", []string{"--secret", "k"}, true, nil, "--sub is required"},
		{"bad subscribe pattern", []string{"--sub", "u", "--secret", "k", "--subscribe", "chat/x*"}, false, protocol.ErrBadPattern, "--subscribe"},
		{"bad publish pattern", []string{"--sub", "u", "--secret", "k", "--publish", "**/chat"}, false, protocol.ErrBadPattern, "--publish"},
		{"filter without =", []string{"--sub", "u", "--secret", "k", "--filter", "orders"}, true, nil, "topic=filter"},
		{"filter with bad topic", []string{"--sub", "u", "--secret", "k", "--filter", "a//b=x=eq.1"}, true, nil, "invalid topic pattern"},
		{"filter twice", []string{"--sub", "u", "--secret", "k", "--filter", "t=a=eq.1", "--filter", "t=b=eq.2"}, true, nil, "two filters"},
		{"filter unparsable", []string{"--sub", "u", "--secret", "k", "--filter", "orders=status=like.x"}, true, nil, "unknown operator"},
		{"zero ttl", []string{"--sub", "u", "--secret", "k", "--ttl", "0s"}, true, nil, "--ttl"},
		{"bad ttl", []string{"--sub", "u", "--secret", "k", "--ttl", "soon"}, true, nil, "invalid value"},
		{"extra argument", []string{"--sub", "u", "--secret", "k", "orders"}, true, nil, "unexpected argument"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var stdout, stderr bytes.Buffer
			err := runToken(context.Background(), tt.args, &stdout, &stderr)
			if err == nil {
				t.Fatalf("no error; printed %q", stdout.String())
			}
			if got := errors.Is(err, errUsage); got != tt.usage {
				t.Errorf("usage error %v, want %v (%v)", got, tt.usage, err)
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("error %v, want %v", err, tt.want)
			}
			if !strings.Contains(stderr.String()+err.Error(), tt.stderr) {
				t.Errorf("neither error %q nor stderr %q mention %q", err, stderr.String(), tt.stderr)
			}
			if stdout.Len() != 0 {
				t.Errorf("printed %q", stdout.String())
			}
		})
	}
}

func TestTokenExitCodes(t *testing.T) {
	t.Parallel()
	var stdout, stderr bytes.Buffer
	if code := run([]string{"token", "--secret", "k"}, &stdout, &stderr); code != 2 {
		t.Errorf("missing --sub: exit %d, want 2", code)
	}
	if code := run([]string{"token", "--sub", "u", "--secret", "k", "--subscribe", "a*"}, &stdout, &stderr); code != 1 {
		t.Errorf("bad pattern: exit %d, want 1", code)
	}
	stdout.Reset()
	if code := run([]string{"token", "--sub", "u", "--secret", "k"}, &stdout, &stderr); code != 0 || stdout.Len() == 0 {
		t.Errorf("good token: exit %d, output %q", code, stdout.String())
	}
}
