package gateway

import (
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"

	"github.com/updraft/updraft/protocol"
)

// Claims are what a token grants: the subject and the topic patterns it may
// subscribe and publish to, plus forced row filters.
type Claims struct {
	jwt.RegisteredClaims
	Subscribe []string `json:"subscribe,omitempty"`
	Publish   []string `json:"publish,omitempty"`
	// Filters maps a table-topic pattern ("orders", "*") to a filter that
	// every subscription and history read on a matching table topic gets,
	// ANDed with the client's own filter.
	Filters map[string]string `json:"filters,omitempty"`

	forced []forcedFilter // Filters parsed by authenticate, sorted by pattern
}

// forcedFilter is one parsed entry of Claims.Filters.
type forcedFilter struct {
	pattern string
	filter  protocol.Filter
}

// anonymous grants everything: a connect without a token on a gateway with
// anonymous access enabled (development only).
var anyTopic = []string{"*", "**"}

var (
	errNoToken     = errors.New("a token is required")
	errNoSecret    = errors.New("this server accepts no tokens (no UPDRAFT_JWT_SECRET); connect without one")
	errTokenNoSub  = errors.New("token has no sub claim")
	errTokenNoExp  = errors.New("token has no exp claim")
	errSubChanged  = errors.New("a refreshed token must keep the same sub")
	errTokenExpire = errors.New("token expired")
	errTokenUTF8   = errors.New("token claims are not valid UTF-8")
)

// authenticate turns a connect or refresh token into claims. An empty token
// is anonymous, allowed only when the server allows it.
func (s *Server) authenticate(token string) (*Claims, error) {
	if token == "" {
		if !s.cfg.AllowAnonymous {
			return nil, errNoToken
		}
		return &Claims{Subscribe: anyTopic, Publish: anyTopic}, nil
	}
	if len(s.cfg.JWTSecret) == 0 {
		return nil, errNoSecret
	}
	var c Claims
	_, err := jwt.ParseWithClaims(token, &c, func(*jwt.Token) (any, error) { return s.cfg.JWTSecret, nil },
		jwt.WithValidMethods([]string{"HS256", "HS384", "HS512"}), jwt.WithLeeway(5*time.Second))
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return nil, errTokenExpire
	case err != nil:
		return nil, fmt.Errorf("invalid token: %w", err)
	case c.Subject == "":
		return nil, errTokenNoSub
	case c.ExpiresAt == nil:
		// A token that never expires would work for good once leaked.
		return nil, errTokenNoExp
	case !claimsUTF8(token):
		return nil, errTokenUTF8
	}
	for _, list := range [][]string{c.Subscribe, c.Publish} {
		for _, p := range list {
			if err := protocol.ValidatePattern(p); err != nil {
				return nil, fmt.Errorf("token grants an invalid pattern: %w", err)
			}
		}
	}
	forced, err := parseForced(c.Filters)
	if err != nil {
		return nil, err
	}
	c.forced = forced
	return &c, nil
}

// claimsUTF8 reports whether a token's claims segment is UTF-8. The sub
// goes into frames (an event's from, a presence member's key), which must
// be UTF-8; encoding/json would instead turn each bad byte into U+FFFD,
// making subs that differ only there one identity. So such a token is
// refused.
func claimsUTF8(token string) bool {
	_, rest, _ := strings.Cut(token, ".")
	payload, _, _ := strings.Cut(rest, ".")
	b, err := base64.RawURLEncoding.DecodeString(payload)
	return err == nil && utf8.Valid(b)
}

// parseForced validates and parses a token's forced filters. Any bad entry
// refuses the whole token: a forced filter the server cannot apply must
// not turn into access to every row.
func parseForced(filters map[string]string) ([]forcedFilter, error) {
	forced := make([]forcedFilter, 0, len(filters))
	for pattern, s := range filters {
		if err := protocol.ValidatePattern(pattern); err != nil {
			return nil, fmt.Errorf("token forces a filter on an invalid topic pattern: %w", err)
		}
		if !protocol.IsTable(pattern) {
			return nil, fmt.Errorf("token forces a filter on %q: filters apply to table topics only (no '/')", pattern)
		}
		f, err := protocol.ParseFilter(s)
		if err != nil {
			return nil, fmt.Errorf("token forces an invalid filter on %q: %w", pattern, err)
		}
		forced = append(forced, forcedFilter{pattern: pattern, filter: f})
	}
	// A fixed order makes the combined filter the same on every request.
	slices.SortFunc(forced, func(a, b forcedFilter) int { return strings.Compare(a.pattern, b.pattern) })
	return forced, nil
}

// forcedOn is the AND of every forced filter whose pattern matches topic;
// the zero Filter when none does. Application topics have none.
func (c *Claims) forcedOn(topic string) protocol.Filter {
	var f protocol.Filter
	if !protocol.IsTable(topic) {
		return f
	}
	for _, ff := range c.forced {
		if protocol.MatchPattern(ff.pattern, topic) {
			f = f.And(ff.filter)
		}
	}
	return f
}

// expiry is when the claims stop being valid; zero for anonymous claims,
// which never do (authenticate refuses tokens without exp).
func (c *Claims) expiry() time.Time {
	if c.ExpiresAt == nil {
		return time.Time{}
	}
	return c.ExpiresAt.Time
}
