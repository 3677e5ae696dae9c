package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/updraft/updraft/protocol"
)

// maxEmitAnswer bounds what emit reads of the server's answer.
const maxEmitAnswer = 1 << 20

// runEmit publishes one event through the HTTP API.
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
	base := fs.String("url", getenvDefault("UPDRAFT_URL", "http://127.0.0.1:8080"), "the gateway's base `URL` (default $UPDRAFT_URL)")
	apiKey := fs.String("api-key", "", "the HTTP API `key` (default $UPDRAFT_API_KEY)")
	persist := fs.Bool("persist", false, "also store the message durably in PostgreSQL")
	timeout := fs.Duration("timeout", 10*time.Second, "how long to wait for the server")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: updraft emit [flags] TOPIC EVENT [DATA]")
		fmt.Fprintln(stderr, "\nPublishes an event through POST /api/v1/emit and prints its position {\"epoch\",\"seq\"}.")
		fmt.Fprintln(stderr, "DATA is JSON; \"-\" reads it from standard input; without DATA the event has no data.")
		fmt.Fprintln(stderr)
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() < 2 || fs.NArg() > 3 {
		return badArgs(fs, "want TOPIC EVENT [DATA], got %d arguments", fs.NArg())
	}
	body := emitRequest{Topic: fs.Arg(0), Event: fs.Arg(1), Persist: *persist}
	if err := protocol.ValidatePublish(body.Topic, body.Event); err != nil {
		return err
	}
	if fs.NArg() == 3 {
		data, err := emitData(fs.Arg(2), stdin)
		if err != nil {
			return err
		}
		body.Data = data
	}
	endpoint, err := emitURL(*base)
	if err != nil {
		return err
	}
	key := *apiKey
	if key == "" {
		key = os.Getenv("UPDRAFT_API_KEY")
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
		return nil, fmt.Errorf("%s is not valid JSON: %v", from, err)
	}
	return buf.Bytes(), nil
}

// emitURL turns the gateway's base URL into the emit endpoint.
func emitURL(base string) (string, error) {
	u, err := url.Parse(base)
	if err != nil {
		return "", fmt.Errorf("--url: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return "", fmt.Errorf("--url: %q is not an http:// or https:// URL", base)
	}
	u.Path = strings.TrimSuffix(u.Path, "/") + "/api/v1/emit"
	u.RawQuery, u.Fragment = "", ""
	return u.String(), nil
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
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, maxEmitAnswer))
	if err != nil {
		return nil, fmt.Errorf("reading the answer: %w", err)
	}
	answer = bytes.TrimSpace(answer)
	if resp.StatusCode/100 != 2 {
		return nil, emitFailure(resp, answer, key == "")
	}
	var pos protocol.Position
	if err := json.Unmarshal(answer, &pos); err != nil || pos.Seq == 0 {
		return nil, fmt.Errorf("unexpected answer from %s: %s", endpoint, snippet(answer))
	}
	return answer, nil
}

// emitFailure describes a failed answer, with the server's error when it
// sent one.
func emitFailure(resp *http.Response, answer []byte, noKey bool) error {
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

// getenvDefault returns the environment variable name, or def when unset
// or empty.
func getenvDefault(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
