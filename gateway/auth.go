package gateway

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/updraft/updraft/protocol"
)

// Claims are what a token grants: the subject and the topic patterns it may
// subscribe and publish to, plus forced filters per table topic.
type Claims struct {
	jwt.RegisteredClaims
	Subscribe []string          `json:"subscribe,omitempty"`
	Publish   []string          `json:"publish,omitempty"`
	Filters   map[string]string `json:"filters,omitempty"`
}

// anonymous grants everything: a connect without a token on a gateway with
// anonymous access enabled (development only).
var anyTopic = []string{"*", "**"}

var (
	errNoToken     = errors.New("a token is required")
	errNoSecret    = errors.New("this server accepts no tokens (no UPDRAFT_JWT_SECRET); connect without one")
	errTokenNoSub  = errors.New("token has no sub claim")
	errSubChanged  = errors.New("a refreshed token must keep the same sub")
	errTokenExpire = errors.New("token expired")
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
	}
	for _, list := range [][]string{c.Subscribe, c.Publish} {
		for _, p := range list {
			if err := protocol.ValidatePattern(p); err != nil {
				return nil, fmt.Errorf("token grants an invalid pattern: %w", err)
			}
		}
	}
	for topic := range c.Filters {
		if err := protocol.ValidateTopic(topic); err != nil {
			return nil, fmt.Errorf("token forces a filter on an invalid topic: %w", err)
		}
	}
	return &c, nil
}

// expiry is when the claims stop being valid; zero when they never do.
func (c *Claims) expiry() time.Time {
	if c.ExpiresAt == nil {
		return time.Time{}
	}
	return c.ExpiresAt.Time
}

// checkOrigin applies UPDRAFT_ALLOWED_ORIGINS. A request without an Origin
// header is a non-browser client and allowed. With no list configured only
// the gateway's own origin (same host) is allowed.
func (s *Server) checkOrigin(r *http.Request) error {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return nil
	}
	for _, allowed := range s.cfg.AllowedOrigins {
		if allowed == "*" || strings.EqualFold(strings.TrimSuffix(allowed, "/"), origin) {
			return nil
		}
	}
	if len(s.cfg.AllowedOrigins) == 0 {
		if u, err := url.Parse(origin); err == nil && strings.EqualFold(u.Host, r.Host) {
			return nil
		}
	}
	return fmt.Errorf("origin %q is not allowed (UPDRAFT_ALLOWED_ORIGINS)", origin)
}
