package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/updraft/updraft/client"
	"github.com/updraft/updraft/protocol"
)

const defaultRealtimeURL = "ws://127.0.0.1:8080/api/realtime"

// runTail subscribes to topics and prints their events as JSON lines until
// interrupted.
func runTail(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("tail", stderr)
	rawURL := fs.String("url", tailDefaultURL(), "the gateway's WebSocket `URL` (default from $UPDRAFT_URL)")
	rt := addRealtimeFlags(fs)
	filter := fs.String("filter", "", "a row `filter` for every TOPIC, which must then be table topics (status=eq.paid&amount=gt.100)")
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

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	out := newLineOutput("tail", stdout, stderr, cancel)
	return follow(ctx, out, followConfig{
		url:     u,
		opts:    rt.options("updraft-tail/" + client.Version),
		topics:  topics,
		handler: func(ev protocol.Event) { out.line(&ev) },
		options: func(t string) []client.SubscribeOption {
			var sopts []client.SubscribeOption
			if *filter != "" {
				// The server judges it: a filter that does not parse, or
				// one on an application topic, is refused with the reason.
				sopts = append(sopts, client.WithFilter(*filter))
			}
			if *rewind > 0 {
				sopts = append(sopts, client.WithRewind(*rewind))
			}
			return sopts
		},
		resubscribed: func(t string, res protocol.SubscribeResult) {
			if !res.Recovered {
				out.note("%s: events since the last one seen could not be recovered", t)
			}
		},
	})
}

// realtimeFlags are the flags of the commands that connect over WebSocket.
type realtimeFlags struct {
	token, origin *string
}

func addRealtimeFlags(fs *flag.FlagSet) realtimeFlags {
	return realtimeFlags{
		token:  fs.String("token", "", "the `JWT` to connect with (default $UPDRAFT_TOKEN; none connects anonymously)"),
		origin: fs.String("origin", "", "an `Origin` header for the handshake"),
	}
}

// options returns the client options the flags ask for, the token
// defaulting to $UPDRAFT_TOKEN.
func (f realtimeFlags) options(sdk string) client.Options {
	opts := client.Options{Token: *f.token, SDK: sdk}
	if opts.Token == "" {
		opts.Token = os.Getenv("UPDRAFT_TOKEN")
	}
	if *f.origin != "" {
		opts.Header = http.Header{"Origin": {*f.origin}}
	}
	return opts
}

// followConfig says what follow subscribes to.
type followConfig struct {
	url    string
	opts   client.Options // OnStatus and OnDisconnect are follow's
	topics []string
	// handler receives the topics' events; it may be nil.
	handler func(protocol.Event)
	// options, when set, returns the options of a topic's subscription.
	options func(topic string) []client.SubscribeOption
	// subscribed, when set, is called with each subscription once the
	// server accepted it.
	subscribed func(*client.Subscription)
	// resubscribed, when set, is called after each successful automatic
	// resubscription, on the client's handler goroutine.
	resubscribed func(topic string, res protocol.SubscribeResult)
	// ready, when set, is called once every topic is subscribed; its error
	// ends follow.
	ready func(ctx context.Context, c *client.Client) error
}

// follow connects, subscribes to the topics and returns when ctx ends (nil
// when interrupted), when the client stops for good or when the server
// refuses a resubscription. It reports connection changes through out,
// which it stops before returning.
func follow(ctx context.Context, out *lineOutput, cfg followConfig) error {
	opts := cfg.opts
	opts.OnStatus = func(s client.Status) {
		if s != client.StatusReconnecting { // OnReconnect says why and when
			out.note("%s", s)
		}
	}
	opts.OnReconnect = func(attempt int, delay time.Duration, cause error) {
		if attempt == 1 {
			out.note("connection lost: %s; reconnecting %s", dropCause(cause), reconnectDelay(delay))
		} else {
			out.note("reconnect failed: %s; reconnecting %s (attempt %d)", dropCause(cause), reconnectDelay(delay), attempt)
		}
	}
	opts.OnError = func(err error) {
		// A refused resubscribe ends follow through WithOnResubscribe, and a
		// lost recovery is noted there too; what is left are the retries,
		// which would otherwise pass in silence.
		if re := (*client.RetryError)(nil); errors.As(err, &re) {
			out.note("%v", re)
		}
	}
	c, err := client.Dial(ctx, cfg.url, opts)
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

	refused := make(chan error, len(cfg.topics)) // a subscription refused on resubscribe
	for _, t := range cfg.topics {
		sopts := []client.SubscribeOption{client.WithOnResubscribe(func(res protocol.SubscribeResult, err error) {
			switch {
			case err != nil:
				refused <- err
			case cfg.resubscribed != nil:
				cfg.resubscribed(t, res)
			}
		})}
		if cfg.options != nil {
			sopts = append(sopts, cfg.options(t)...)
		}
		sub, err := c.Subscribe(ctx, t, cfg.handler, sopts...)
		if err != nil {
			if ctx.Err() != nil {
				return tailEnd(ctx)
			}
			return err
		}
		if cfg.subscribed != nil {
			cfg.subscribed(sub)
		}
	}
	out.note("subscribed to %s (session %s on node %s)", strings.Join(cfg.topics, ", "), c.Session(), c.Node())
	if cfg.ready != nil {
		if err := cfg.ready(ctx, c); err != nil {
			if ctx.Err() != nil {
				return tailEnd(ctx)
			}
			return err
		}
	}
	select {
	case <-ctx.Done():
		return tailEnd(ctx)
	case <-c.Done():
		return c.Err()
	case err := <-refused:
		return err
	}
}

// dropCause says why a connection dropped or a reconnect failed, without
// the layers of wrapping around a network error.
func dropCause(err error) string {
	var ce *client.CloseError
	var ne *net.OpError
	switch {
	case errors.As(err, &ce) && ce.Reason == "":
		return fmt.Sprintf("closed with %d", ce.Code)
	case errors.As(err, &ce):
		return fmt.Sprintf("closed with %d (%s)", ce.Code, ce.Reason)
	case errors.As(err, &ne):
		return ne.Error()
	}
	return err.Error()
}

// reconnectDelay says when a reconnect attempt comes: "in 85ms", "in 1.2s".
func reconnectDelay(d time.Duration) string {
	switch {
	case d <= 0:
		return "now"
	case d < time.Second:
		return "in " + d.Round(time.Millisecond).String()
	}
	return "in " + d.Round(100*time.Millisecond).String()
}

// tailEnd is the result of a command that follows topics once ctx ended:
// nil when interrupted, the cause when printing failed.
func tailEnd(ctx context.Context) error {
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// lineOutput serialises the printing of a command that follows topics (JSON
// lines on stdout, notes on stderr) and stops it when the command returns,
// so that nothing is written after it returned.
type lineOutput struct {
	name           string // the command, to prefix notes
	stdout, stderr io.Writer
	enc            *json.Encoder // writes to stdout
	fail           context.CancelCauseFunc

	mu      sync.Mutex
	stopped bool // guarded by mu
}

// newLineOutput returns the output of command name; fail is called with
// the error when writing to stdout fails.
func newLineOutput(name string, stdout, stderr io.Writer, fail context.CancelCauseFunc) *lineOutput {
	o := &lineOutput{name: name, stdout: stdout, stderr: stderr, fail: fail, enc: json.NewEncoder(stdout)}
	o.enc.SetEscapeHTML(false) // print data as the server sent it
	return o
}

// line prints v as one JSON line.
func (o *lineOutput) line(v any) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.stopped {
		return
	}
	if err := o.enc.Encode(v); err != nil {
		o.stopped = true
		o.fail(fmt.Errorf("writing to standard output: %w", err))
	}
}

// text prints s on stdout as it is.
func (o *lineOutput) text(s string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.stopped {
		return
	}
	if _, err := io.WriteString(o.stdout, s); err != nil {
		o.stopped = true
		o.fail(fmt.Errorf("writing to standard output: %w", err))
	}
}

// note prints a connection change on stderr.
func (o *lineOutput) note(format string, args ...any) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.stopped {
		fmt.Fprintf(o.stderr, "updraft "+o.name+": "+format+"\n", args...)
	}
}

func (o *lineOutput) stop() {
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
	if s, err := baseRealtimeURL(base); err == nil {
		return s
	}
	return defaultRealtimeURL
}

// baseRealtimeURL returns the WebSocket URL of the gateway whose base URL
// (as emit takes it) is base.
func baseRealtimeURL(base string) (string, error) {
	u, err := url.Parse(base)
	if err != nil {
		return "", fmt.Errorf("--url: %w", err)
	}
	if u.Host == "" {
		return "", fmt.Errorf("--url: %q has no host", base)
	}
	if err := checkBasePath(base, u, "/api/realtime"); err != nil {
		return "", err
	}
	u.Path = strings.TrimSuffix(u.Path, "/") + "/api/realtime"
	u.RawQuery, u.Fragment = "", ""
	return realtimeURL(u.String())
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
