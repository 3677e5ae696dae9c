package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"

	"github.com/updraft/updraft/client"
	"github.com/updraft/updraft/protocol"
)

const defaultRealtimeURL = "ws://127.0.0.1:8080/api/realtime"

// runTail subscribes to topics and prints their events as JSON lines until
// interrupted.
func runTail(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("tail", stderr)
	rawURL := fs.String("url", tailDefaultURL(), "the gateway's WebSocket `URL` (default from $UPDRAFT_URL)")
	token := fs.String("token", "", "the `JWT` to connect with (default $UPDRAFT_TOKEN; none connects anonymously)")
	origin := fs.String("origin", "", "an `Origin` header for the handshake")
	filter := fs.String("filter", "", "a row `filter` for the table topics (status=eq.paid&amount=gt.100)")
	rewind := fs.Int("rewind", 0, "first print the last `N` retained events of each topic (chat scroll-back, a stream so far)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: updraft tail [flags] TOPIC [TOPIC...]")
		fmt.Fprintln(stderr, "\nSubscribes to the topics and prints each event as one JSON line on standard output,")
		fmt.Fprintln(stderr, "connection changes on standard error. Reconnects by itself; stop it with Ctrl-C.")
		fmt.Fprintln(stderr)
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *rewind < 0 {
		fmt.Fprintln(stderr, "updraft tail: --rewind must not be negative")
		return errUsage
	}
	topics := fs.Args()
	if len(topics) == 0 {
		return badArgs(fs, "want at least one TOPIC")
	}
	seen := map[string]bool{}
	for _, t := range topics {
		if err := protocol.ValidateTopic(t); err != nil {
			return err
		}
		if seen[t] {
			return badArgs(fs, "topic %s given twice", t)
		}
		seen[t] = true
	}
	u, err := realtimeURL(*rawURL)
	if err != nil {
		return err
	}
	tok := *token
	if tok == "" {
		tok = os.Getenv("UPDRAFT_TOKEN")
	}

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	out := &tailOutput{stdout: stdout, stderr: stderr, fail: cancel}
	out.enc = json.NewEncoder(stdout)
	out.enc.SetEscapeHTML(false) // print data as the server sent it
	opts := client.Options{
		Token: tok,
		SDK:   "updraft-tail/" + client.Version,
		OnStatus: func(s client.Status) {
			out.note("%s", s)
		},
		OnDisconnect: func(code int, reason string) {
			out.note("connection closed: %d %s", code, reason)
		},
	}
	if *origin != "" {
		opts.Header = http.Header{"Origin": {*origin}}
	}
	c, err := client.Dial(ctx, u, opts)
	if err != nil {
		if ctx.Err() != nil {
			return tailEnd(ctx)
		}
		return err
	}
	defer func() {
		_ = c.Close()
		out.stop()
	}()

	refused := make(chan error, len(topics)) // a subscription refused on resubscribe
	for _, t := range topics {
		sopts := []client.SubscribeOption{client.WithOnResubscribe(func(res protocol.SubscribeResult, err error) {
			switch {
			case err != nil:
				refused <- err
			case !res.Recovered:
				out.note("%s: events since the last one seen could not be recovered", t)
			}
		})}
		if *filter != "" && protocol.IsTable(t) {
			sopts = append(sopts, client.WithFilter(*filter))
		}
		if *rewind > 0 {
			sopts = append(sopts, client.WithRewind(*rewind))
		}
		if _, err := c.Subscribe(ctx, t, out.event, sopts...); err != nil {
			if ctx.Err() != nil {
				return tailEnd(ctx)
			}
			return err
		}
	}
	out.note("subscribed to %s (session %s on node %s)", strings.Join(topics, ", "), c.Session(), c.Node())
	select {
	case <-ctx.Done():
		return tailEnd(ctx)
	case <-c.Done():
		return c.Err()
	case err := <-refused:
		return err
	}
}

// tailEnd is tail's result once ctx ended: nil when interrupted, the cause
// when printing failed.
func tailEnd(ctx context.Context) error {
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// tailOutput serialises tail's printing and stops it when tail returns, so
// that nothing is written after runTail returned.
type tailOutput struct {
	stdout, stderr io.Writer
	enc            *json.Encoder // writes to stdout
	fail           context.CancelCauseFunc

	mu      sync.Mutex
	stopped bool // guarded by mu
}

// event prints an event as one JSON line.
func (o *tailOutput) event(ev protocol.Event) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.stopped {
		return
	}
	if err := o.enc.Encode(&ev); err != nil {
		o.stopped = true
		o.fail(fmt.Errorf("writing events: %w", err))
	}
}

// note prints a connection change on stderr.
func (o *tailOutput) note(format string, args ...any) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.stopped {
		fmt.Fprintf(o.stderr, "updraft tail: "+format+"\n", args...)
	}
}

func (o *tailOutput) stop() {
	o.mu.Lock()
	o.stopped = true
	o.mu.Unlock()
}

// tailDefaultURL derives the WebSocket URL from $UPDRAFT_URL (the base URL
// emit uses) when it is set.
func tailDefaultURL() string {
	base := os.Getenv("UPDRAFT_URL")
	if base == "" {
		return defaultRealtimeURL
	}
	u, err := url.Parse(base)
	if err != nil || u.Host == "" {
		return defaultRealtimeURL
	}
	u.Path = strings.TrimSuffix(u.Path, "/") + "/api/realtime"
	u.RawQuery, u.Fragment = "", ""
	if s, err := realtimeURL(u.String()); err == nil {
		return s
	}
	return defaultRealtimeURL
}

// realtimeURL accepts a ws://, wss://, http:// or https:// URL and returns
// the WebSocket URL to dial; a URL without a path gets /api/realtime.
func realtimeURL(s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil {
		return "", fmt.Errorf("--url: %w", err)
	}
	switch u.Scheme {
	case "ws", "wss":
	case "http":
		u.Scheme = "ws"
	case "https":
		u.Scheme = "wss"
	default:
		return "", fmt.Errorf("--url: %q is not a ws://, wss://, http:// or https:// URL", s)
	}
	if u.Host == "" {
		return "", fmt.Errorf("--url: %q has no host", s)
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = "/api/realtime"
	}
	return u.String(), nil
}
