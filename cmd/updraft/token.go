package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/updraft/updraft/protocol"
)

// tokenClaims are the claims of an Updraft token (docs/protocol.md, Tokens).
type tokenClaims struct {
	Subscribe []string          `json:"subscribe,omitempty"`
	Publish   []string          `json:"publish,omitempty"`
	Filters   map[string]string `json:"filters,omitempty"`
	jwt.RegisteredClaims
}

// runToken mints an HS256 token for a subject and its topic patterns.
func runToken(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("token", stderr)
	sub := fs.String("sub", "", "the token's subject (`user id`); required")
	subscribe := fs.String("subscribe", "", "comma-separated `patterns` the holder may subscribe to (orders,chat/*,doc/**)")
	publish := fs.String("publish", "", "comma-separated `patterns` the holder may publish to")
	filters := map[string]string{}
	fs.Func("filter", "a forced filter `topic=filter` (orders=customer_id=eq.7); repeat for more topics", func(v string) error {
		topic, filter, ok := strings.Cut(v, "=")
		if !ok || filter == "" {
			return errors.New("want topic=filter, e.g. orders=customer_id=eq.7")
		}
		if err := protocol.ValidatePattern(topic); err != nil {
			return err
		}
		if _, err := protocol.ParseFilter(filter); err != nil {
			return err
		}
		if _, dup := filters[topic]; dup {
			return fmt.Errorf("two filters for %s; join conditions with & instead", topic)
		}
		filters[topic] = filter
		return nil
	})
	ttl := fs.Duration("ttl", time.Hour, "how long the token is valid")
	secret := fs.String("secret", "", "the HS256 signing secret (default $UPDRAFT_JWT_SECRET)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: updraft token --sub ID [--subscribe P,..] [--publish P,..] [--filter TOPIC=FILTER].. [--ttl D] [--secret S]")
		fmt.Fprintln(stderr, "\nPrints a signed JWT for the gateway (HS256, the secret the gateway has in UPDRAFT_JWT_SECRET).")
		fmt.Fprintln(stderr)
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return badArgs(fs, "unexpected argument %q", fs.Arg(0))
	}
	if *sub == "" {
		return badArgs(fs, "--sub is required")
	}
	if *ttl <= 0 {
		return badArgs(fs, "--ttl must be positive, not %v", *ttl)
	}
	key := *secret
	if key == "" {
		key = os.Getenv("UPDRAFT_JWT_SECRET")
	}
	if key == "" {
		return errors.New("no signing secret: pass --secret or set UPDRAFT_JWT_SECRET")
	}
	subs, err := parsePatterns("--subscribe", *subscribe)
	if err != nil {
		return err
	}
	pubs, err := parsePatterns("--publish", *publish)
	if err != nil {
		return err
	}
	tok, err := mintToken(key, *sub, subs, pubs, filters, *ttl, time.Now())
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, tok)
	return err
}

// mintToken signs the claims with key.
func mintToken(key, sub string, subscribe, publish []string, filters map[string]string, ttl time.Duration, now time.Time) (string, error) {
	claims := tokenClaims{
		Subscribe: subscribe,
		Publish:   publish,
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:   sub,
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
		},
	}
	if len(filters) > 0 {
		claims.Filters = filters
	}
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(key))
	if err != nil {
		return "", fmt.Errorf("signing the token: %w", err)
	}
	return tok, nil
}

// parsePatterns splits a comma-separated list of topic patterns and checks each.
func parsePatterns(flagName, list string) ([]string, error) {
	var out []string
	for p := range strings.SplitSeq(list, ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		if err := protocol.ValidatePattern(p); err != nil {
			return nil, fmt.Errorf("%s: %w", flagName, err)
		}
		out = append(out, p)
	}
	return out, nil
}

// badArgs reports bad arguments the flag package did not catch, with the
// usage, and returns errUsage.
func badArgs(fs *flag.FlagSet, format string, args ...any) error {
	fmt.Fprintf(fs.Output(), "%s: %s\n", fs.Name(), fmt.Sprintf(format, args...))
	fs.Usage()
	return errUsage
}
