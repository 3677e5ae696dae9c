package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/updraft/updraft/gateway"
	"github.com/updraft/updraft/protocol"
)

// maxEmitAnswer bounds what emit reads of the server's answer.
const maxEmitAnswer = 1 << 20

// runEmit publishes one event, or a stream of them, through the HTTP API.
func runEmit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return emit(ctx, args, os.Stdin, stdout, stderr)
}

// emitRequest is the body of POST /api/v1/emit.
type emitRequest struct {
	Topic   string          `json:"topic"`
	Event   string          `json:"event"`
	Data    json.RawMessage `json:"data,omitempty"`
	Persist bool            `json:"persist,omitempty"`
}

func emit(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlagSet("emit", stderr)
	api := addAPIFlags(fs)
	persist := fs.Bool("persist", false, "also store the message durably in PostgreSQL")
	stream := fs.Bool("stream", false, "stream standard input, one JSON value per line, through POST /api/v1/stream")
	rollup := fs.Duration("rollup", 0, "with --stream: publish the lines that arrive within this `window` (at most 1s) as one message")
	timeout := fs.Duration("timeout", 10*time.Second, "how long to wait for the server (with --stream: after standard input ends; 0 waits forever)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: updraft emit [flags] TOPIC EVENT [DATA]")
		fmt.Fprintln(stderr, "       updraft emit --stream [--rollup 40ms] [flags] TOPIC EVENT < tokens.ndjson")
		fmt.Fprintln(stderr, "\nPublishes an event through POST /api/v1/emit and prints its position {\"epoch\",\"seq\"}.")
		fmt.Fprintln(stderr, "DATA is JSON; \"-\" reads it from standard input; without DATA the event has no data.")
		fmt.Fprintln(stderr, "\nWith --stream, sends standard input as it is read, one JSON value per line, each line")
		fmt.Fprintln(stderr, "published as EVENT when it arrives, then EVENT.end (or EVENT.error), and prints")
		fmt.Fprintln(stderr, "{\"first_seq\",\"last_seq\",\"count\",\"epoch\"}.")
		fmt.Fprintln(stderr)
		fs.PrintDefaults()
	}
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	key := api.apiKey()
	if *stream {
		return emitStream(ctx, fs, streamArgs{base: *api.base, key: key, pos: pos, persist: *persist, rollup: *rollup, timeout: *timeout}, stdin, stdout)
	}
	if *rollup != 0 {
		return badArgs(fs, "--rollup needs --stream")
	}
	if len(pos) < 2 || len(pos) > 3 {
		return badArgs(fs, "want TOPIC EVENT [DATA], got %d arguments", len(pos))
	}
	body := emitRequest{Topic: pos[0], Event: pos[1], Persist: *persist}
	if err := protocol.ValidatePublish(body.Topic, body.Event); err != nil {
		return err
	}
	if len(pos) == 3 {
		data, err := emitData(pos[2], stdin)
		if err != nil {
			return err
		}
		body.Data = data
	}
	endpoint, err := apiURL(*api.base, "/api/v1/emit", nil)
	if err != nil {
		return err
	}
	if *timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *timeout)
		defer cancel()
	}
	answer, err := postEmit(ctx, endpoint, key, &body)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "%s\n", answer)
	return err
}

// parseInterspersed parses fs's flags before the positional arguments
// and, so that `emit --stream TOPIC EVENT --rollup 40ms` reads naturally,
// "--name" flags after them too. Only a double dash marks a late flag: a
// DATA argument such as -5 or "-" stays positional, and no JSON value
// starts with "--".
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := parseFlags(fs, args); err != nil {
			return nil, err
		}
		args = fs.Args()
		for len(args) > 0 && !(len(args[0]) > 2 && strings.HasPrefix(args[0], "--")) {
			pos = append(pos, args[0])
			args = args[1:]
		}
		if len(args) == 0 {
			return pos, nil
		}
	}
}

// streamArgs are the parsed arguments of `emit --stream`.
type streamArgs struct {
	base, key string
	pos       []string
	persist   bool
	rollup    time.Duration
	timeout   time.Duration
}

// emitStream sends stdin to POST /api/v1/stream as it is read and prints
// the server's final answer.
func emitStream(ctx context.Context, fs *flag.FlagSet, a streamArgs, stdin io.Reader, stdout io.Writer) error {
	if len(a.pos) != 2 {
		return badArgs(fs, "with --stream want TOPIC EVENT (the data comes on standard input), got %d arguments", len(a.pos))
	}
	if a.persist {
		return badArgs(fs, "--persist cannot be combined with --stream")
	}
	topic, event := a.pos[0], a.pos[1]
	if err := protocol.ValidatePublish(topic, event); err != nil {
		return err
	}
	if len(event) > gateway.MaxStreamEventLen {
		return fmt.Errorf("%w: a stream's event name is at most %d bytes (the server adds .end and .error)", protocol.ErrBadEvent, gateway.MaxStreamEventLen)
	}
	if a.rollup < 0 || a.rollup > gateway.MaxStreamRollup {
		return fmt.Errorf("--rollup must be between 0 and %v, not %v", gateway.MaxStreamRollup, a.rollup)
	}
	q := url.Values{"topic": {topic}, "event": {event}}
	if a.rollup > 0 {
		q.Set("rollup", a.rollup.String())
	}
	endpoint, err := apiURL(a.base, "/api/v1/stream", q)
	if err != nil {
		return err
	}

	// A stream lasts as long as its input: the timeout starts when
	// standard input ends.
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	errNoAnswer := fmt.Errorf("no answer within %v after standard input ended", a.timeout)
	ended := make(chan struct{})
	if a.timeout > 0 {
		go func() {
			select {
			case <-ctx.Done():
				return
			case <-ended:
			}
			t := time.NewTimer(a.timeout)
			defer t.Stop()
			select {
			case <-ctx.Done():
			case <-t.C:
				cancel(errNoAnswer)
			}
		}()
	}
	// Not an in-memory reader, so the request goes out chunked, each read
	// of stdin sent as it comes.
	body := &endReader{r: stdin, ended: ended}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, body)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-ndjson")
	answer, err := apiDo(req, a.key, maxEmitAnswer)
	if err != nil {
		if errors.Is(context.Cause(ctx), errNoAnswer) {
			return errNoAnswer
		}
		return err
	}
	var sum struct {
		Epoch *string `json:"epoch"`
		Count *int    `json:"count"`
	}
	if err := json.Unmarshal(answer, &sum); err != nil || sum.Epoch == nil || sum.Count == nil {
		return fmt.Errorf("unexpected answer from %s: %s", endpoint, snippet(answer))
	}
	_, err = fmt.Fprintf(stdout, "%s\n", answer)
	return err
}

// endReader passes reads through and closes ended when its reader is
// done (end of input or an error).
type endReader struct {
	r     io.Reader
	ended chan struct{}
	once  sync.Once
}

func (e *endReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil {
		e.once.Do(func() { close(e.ended) })
	}
	return n, err
}

// emitData reads DATA ("-" for standard input) and checks that it is JSON.
func emitData(arg string, stdin io.Reader) (json.RawMessage, error) {
	raw := []byte(arg)
	from := "DATA"
	if arg == "-" {
		var err error
		if raw, err = io.ReadAll(stdin); err != nil {
			return nil, fmt.Errorf("reading DATA from standard input: %w", err)
		}
		from = "DATA on standard input"
	}
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return nil, fmt.Errorf("%s is empty", from)
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		if arg == "-" {
			return nil, fmt.Errorf("%s is not valid JSON: %v", from, err)
		}
		return nil, fmt.Errorf("DATA must be JSON; quote it for the shell: '{\"text\":\"hi\"}' (%q is not valid JSON: %v)", arg, err)
	}
	return buf.Bytes(), nil
}

// apiURL turns the gateway's base URL into the endpoint at path, with
// query q.
func apiURL(base, path string, q url.Values) (string, error) {
	u, err := url.Parse(base)
	if err != nil {
		return "", fmt.Errorf("--url: %w", err)
	}
	if u.Scheme == "ws" || u.Scheme == "wss" {
		return "", fmt.Errorf("--url: %q is a WebSocket URL; give the gateway's base URL, %s, and updraft adds %s", base, suggestBase(u), path)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return "", fmt.Errorf("--url: %q is not an http:// or https:// URL; give the gateway's base URL, such as http://127.0.0.1:8080", base)
	}
	if err := checkBasePath(base, u, path); err != nil {
		return "", err
	}
	u.Path = strings.TrimSuffix(u.Path, "/") + path
	u.RawQuery, u.Fragment = q.Encode(), ""
	return u.String(), nil
}

// checkBasePath refuses a base URL that already names one of the
// gateway's endpoints (/api/v1/emit, /api/realtime): appending path to it
// would only earn a 404.
func checkBasePath(base string, u *url.URL, path string) error {
	if strings.Contains(u.Path+"/", "/api/") {
		return fmt.Errorf("--url: %q names an endpoint; give the gateway's base URL, %s, and updraft adds %s", base, suggestBase(u), path)
	}
	return nil
}

// suggestBase returns the base URL the user probably meant by u: http(s)
// for ws(s), and the path before /api.
func suggestBase(u *url.URL) string {
	s := *u
	switch s.Scheme {
	case "ws":
		s.Scheme = "http"
	case "wss":
		s.Scheme = "https"
	}
	if i := strings.Index(s.Path+"/", "/api/"); i >= 0 {
		s.Path = s.Path[:i]
	}
	s.RawPath, s.RawQuery, s.Fragment = "", "", ""
	return s.String()
}

// postEmit sends the request and returns the server's answer, or an error
// carrying the server's *protocol.Error.
func postEmit(ctx context.Context, endpoint, key string, body *emitRequest) ([]byte, error) {
	var payload bytes.Buffer
	enc := json.NewEncoder(&payload)
	enc.SetEscapeHTML(false) // send DATA as given, not with <, > and & escaped
	if err := enc.Encode(body); err != nil {
		return nil, fmt.Errorf("encoding the request: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, &payload)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	answer, err := apiDo(req, key, maxEmitAnswer)
	if err != nil {
		return nil, err
	}
	var pos protocol.Position
	if err := json.Unmarshal(answer, &pos); err != nil || pos.Seq == 0 {
		return nil, fmt.Errorf("unexpected answer from %s: %s", endpoint, snippet(answer))
	}
	return answer, nil
}

// apiDo sends req to the HTTP API with key (none when empty) and returns
// the server's successful answer, trimmed, or an error carrying the
// server's *protocol.Error when it sent one. An answer longer than limit
// bytes is an error.
func apiDo(req *http.Request, key string, limit int64) ([]byte, error) {
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("reading the answer: %w", err)
	}
	answer = bytes.TrimSpace(answer)
	if resp.StatusCode/100 != 2 {
		return nil, apiFailure(resp, answer, key == "")
	}
	if int64(len(answer)) > limit {
		return nil, fmt.Errorf("the answer of %s is larger than %d bytes", req.URL.Path, limit)
	}
	return answer, nil
}

// apiFailure describes a failed answer, with the server's error when it
// sent one.
func apiFailure(resp *http.Response, answer []byte, noKey bool) error {
	var env struct {
		Error *protocol.Error `json:"error"`
	}
	var err error
	if json.Unmarshal(answer, &env) == nil && env.Error != nil && env.Error.Code != "" {
		err = fmt.Errorf("server answered %s: %w", resp.Status, env.Error)
	} else {
		err = fmt.Errorf("server answered %s: %s", resp.Status, snippet(answer))
	}
	if resp.StatusCode == http.StatusUnauthorized && noKey {
		err = fmt.Errorf("%w (no API key was sent: pass --api-key or set UPDRAFT_API_KEY)", err)
	}
	return err
}

// snippet shortens an unexpected answer for an error message.
func snippet(b []byte) string {
	const max = 200
	if len(b) == 0 {
		return "(empty body)"
	}
	if len(b) > max {
		return fmt.Sprintf("%q...", b[:max])
	}
	return fmt.Sprintf("%q", b)
}

// apiFlags are the flags of the commands that call the HTTP API.
type apiFlags struct {
	base, key *string
}

func addAPIFlags(fs *flag.FlagSet) apiFlags {
	return apiFlags{
		base: fs.String("url", getenvDefault("UPDRAFT_URL", "http://127.0.0.1:8080"), "the gateway's base `URL` (default $UPDRAFT_URL)"),
		key:  fs.String("api-key", "", "the HTTP API `key` (default $UPDRAFT_API_KEY)"),
	}
}

// apiKey returns --api-key, else $UPDRAFT_API_KEY.
func (f apiFlags) apiKey() string {
	if *f.key != "" {
		return *f.key
	}
	return os.Getenv("UPDRAFT_API_KEY")
}

// getenvDefault returns the environment variable name, or def when unset
// or empty.
func getenvDefault(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
