package gateway

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
)

// originRule is one parsed entry of Config.AllowedOrigins.
type originRule struct {
	any    bool   // "*": every origin
	scheme string // lower case
	host   string // lower case, without brackets for IPv6
	port   string // "" when the origin has none
	// anyPort: the entry ended with ":*" and matches the host on every
	// port, and without one.
	anyPort bool
}

// ValidateOrigins checks a list of allowed origins (UPDRAFT_ALLOWED_ORIGINS):
// each is "*", an origin like https://app.example.com, or one with a port
// wildcard like http://localhost:*.
func ValidateOrigins(list []string) error {
	_, err := parseOrigins(list)
	return err
}

func parseOrigins(list []string) ([]originRule, error) {
	rules := make([]originRule, 0, len(list))
	for _, o := range list {
		r, err := parseOriginRule(strings.TrimSpace(o))
		if err != nil {
			return nil, fmt.Errorf("UPDRAFT_ALLOWED_ORIGINS: %q is not an origin like https://app.example.com, http://localhost:* (any port) or *: %w", o, err)
		}
		rules = append(rules, r)
	}
	return rules, nil
}

func parseOriginRule(o string) (originRule, error) {
	if o == "*" {
		return originRule{any: true}, nil
	}
	anyPort := false
	if rest, ok := strings.CutSuffix(o, ":*"); ok {
		o, anyPort = rest, true
	}
	r, err := parseOrigin(strings.TrimSuffix(o, "/"))
	if err != nil {
		return r, err
	}
	if anyPort && r.port != "" {
		return r, errors.New("a port and a port wildcard")
	}
	r.anyPort = anyPort
	return r, nil
}

// parseOrigin parses a serialized origin, scheme://host[:port], and nothing
// else: no user, path, query or fragment.
func parseOrigin(o string) (originRule, error) {
	u, err := url.Parse(o)
	switch {
	case err != nil:
		return originRule{}, err
	case u.Scheme == "" || u.Host == "" || u.Opaque != "":
		return originRule{}, errors.New("no scheme://host")
	case u.User != nil || u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.ForceQuery:
		return originRule{}, errors.New("an origin has no user, path or query")
	case strings.Contains(u.Host, "*"):
		return originRule{}, errors.New("only the port may be a wildcard")
	}
	port := u.Port()
	if strings.HasSuffix(u.Host, ":") || strings.Trim(port, "0123456789") != "" {
		return originRule{}, errors.New("bad port")
	}
	return originRule{scheme: strings.ToLower(u.Scheme), host: strings.ToLower(u.Hostname()), port: port}, nil
}

func (r originRule) match(o originRule) bool {
	return r.any || (r.scheme == o.scheme && r.host == o.host && (r.anyPort || r.port == o.port))
}

// checkOrigin applies UPDRAFT_ALLOWED_ORIGINS to a WebSocket upgrade. A
// request without an Origin header is a non-browser client and allowed.
// A browser's origin must be on the list: the request's Host proves
// nothing, since a page on a name that its owner points at the gateway
// (DNS rebinding) sends a Host equal to its own Origin. Without the
// setting no browser origin is allowed. Each refusal is logged, rate
// limited, because the page cannot see why the browser failed.
func (s *Server) checkOrigin(r *http.Request) error {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return nil
	}
	if o, err := parseOrigin(origin); err == nil {
		for _, rule := range s.origins {
			if rule.match(o) {
				return nil
			}
		}
	}
	const fix = "add it to UPDRAFT_ALLOWED_ORIGINS (comma-separated origins; http://localhost:* allows every port)"
	if ok, suppressed := s.originLog.allow(origin, time.Now()); ok {
		s.log.Warn("origin refused", zap.String("origin", origin), zap.String("fix", fix),
			zap.Int("refusals_not_logged", suppressed))
	}
	return fmt.Errorf("origin %q is not allowed: %s", origin, fix)
}

// Rate of the origin refusal log: an origin is logged at most once per
// originLogEvery, and at most maxLoggedOrigins distinct ones per
// originLogEvery, so neither the log nor the memory grows with what a
// client sends.
const (
	originLogEvery   = time.Minute
	maxLoggedOrigins = 64
	maxOriginKey     = 256 // bytes of an origin kept as a key
)

// originLog decides which origin refusals are logged.
type originLog struct {
	mu         sync.Mutex
	last       map[string]time.Time // guarded by mu: when each origin was last logged
	suppressed int                  // guarded by mu: refusals not logged since the last line
}

// allow reports whether to log a refusal of origin at now, and how many
// refusals were left out of the log since the previous line.
func (l *originLog) allow(origin string, now time.Time) (bool, int) {
	if len(origin) > maxOriginKey {
		origin = origin[:maxOriginKey]
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.last == nil {
		l.last = make(map[string]time.Time)
	}
	if t, ok := l.last[origin]; ok && now.Sub(t) < originLogEvery {
		l.suppressed++
		return false, 0
	}
	if len(l.last) >= maxLoggedOrigins {
		for o, t := range l.last {
			if now.Sub(t) >= originLogEvery {
				delete(l.last, o)
			}
		}
		if len(l.last) >= maxLoggedOrigins {
			l.suppressed++
			return false, 0
		}
	}
	l.last[origin] = now
	n := l.suppressed
	l.suppressed = 0
	return true, n
}
