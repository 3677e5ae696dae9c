package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/updraft/updraft/client"
	"github.com/updraft/updraft/protocol"
)

// maxMembersAnswer bounds what presence reads of the server's answer:
// thousands of members with states of up to a few KiB.
const maxMembersAnswer = 64 << 20

// runPresence lists a topic's members through the HTTP API, or follows
// them over WebSocket with --watch.
func runPresence(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("presence", stderr)
	api := addAPIFlags(fs)
	jsonOut := fs.Bool("json", false, "print one JSON object per member per line instead of a table")
	timeout := fs.Duration("timeout", 10*time.Second, "how long to wait for each answer from the server (0 waits forever)")
	watch := fs.Bool("watch", false, "connect over WebSocket, print the members, then each presence event as one JSON line until interrupted")
	track := fs.String("track", "", "join TOPIC with this `state` (a JSON object such as '{\"name\":\"Ann\"}') over WebSocket and stay until interrupted, printing the members whenever they change")
	rt := addRealtimeFlags(fs)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: updraft presence [--json] [flags] TOPIC")
		fmt.Fprintln(stderr, "       updraft presence --watch [--token JWT] [flags] TOPIC")
		fmt.Fprintln(stderr, "       updraft presence --track '{\"name\":\"Ann\"}' [--watch] [--token JWT] [flags] TOPIC")
		fmt.Fprintln(stderr, "\nLists the members of TOPIC through GET /api/v1/presence: a table of key, conn,")
		fmt.Fprintln(stderr, "joined time and state, or with --json one JSON object per member per line.")
		fmt.Fprintln(stderr, "\nWith --watch, subscribes to TOPIC with presence over WebSocket, authenticated by")
		fmt.Fprintln(stderr, "--token rather than --api-key, and prints one JSON line for the members,")
		fmt.Fprintln(stderr, "{\"type\":\"members\",\"topic\",\"members\"}, then one per presence event,")
		fmt.Fprintln(stderr, "{\"type\":\"presence\",\"topic\",\"event\",\"member\"}, and the members again after")
		fmt.Fprintln(stderr, "every reconnect. Stop it with Ctrl-C.")
		fmt.Fprintln(stderr, "\nWith --track STATE, also joins TOPIC with STATE (a JSON object; quote it for the")
		fmt.Fprintln(stderr, "shell) and stays a member, across reconnects, until interrupted. It prints the")
		fmt.Fprintln(stderr, "members table each time the members change (with --watch, the JSON lines instead).")
		fmt.Fprintln(stderr)
		fs.PrintDefaults()
	}
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	tracking := false
	fs.Visit(func(f *flag.Flag) { tracking = tracking || f.Name == "track" })
	if len(pos) != 1 {
		return badArgs(fs, "want one TOPIC, got %d arguments", len(pos))
	}
	topic := pos[0]
	if err := protocol.ValidateTopic(topic); err != nil {
		return err
	}
	if *timeout < 0 {
		return badArgs(fs, "--timeout must not be negative")
	}
	var state json.RawMessage
	if tracking {
		if *jsonOut {
			return badArgs(fs, "--json lists the members once; with --track, --watch prints JSON lines")
		}
		if state, err = trackState(*track); err != nil {
			return err
		}
	}
	if *watch || tracking {
		return watchPresence(ctx, *api.base, rt, topic, *timeout, watchMode{tables: !*watch, state: state, track: tracking}, stdout, stderr)
	}

	endpoint, err := apiURL(*api.base, "/api/v1/presence", url.Values{"topic": {topic}})
	if err != nil {
		return err
	}
	if *timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *timeout)
		defer cancel()
	}
	members, err := getMembers(ctx, endpoint, api.apiKey())
	if err != nil {
		return err
	}
	if *jsonOut {
		return printMembersJSON(stdout, members)
	}
	if err := printMembersTable(stdout, members); err != nil {
		return err
	}
	noun := "members"
	if len(members) == 1 {
		noun = "member"
	}
	fmt.Fprintf(stderr, "%d %s\n", len(members), noun)
	return nil
}

// getMembers asks GET /api/v1/presence for the members.
func getMembers(ctx context.Context, endpoint, key string) ([]protocol.Member, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, endpoint, nil)
	if err != nil {
		return nil, err
	}
	answer, err := apiDo(req, key, maxMembersAnswer)
	if err != nil {
		return nil, err
	}
	var fields map[string]json.RawMessage
	if json.Unmarshal(answer, &fields) == nil {
		var members []protocol.Member
		if raw, ok := fields["members"]; ok && json.Unmarshal(raw, &members) == nil {
			return members, nil
		}
	}
	return nil, fmt.Errorf("unexpected answer from %s: %s", endpoint, snippet(answer))
}

// printMembersTable prints members as a table with a header, nothing when
// there are none.
func printMembersTable(w io.Writer, members []protocol.Member) error {
	if len(members) == 0 {
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY\tCONN\tJOINED\tSTATE")
	for _, m := range members {
		state := "-"
		if len(m.State) > 0 {
			var buf bytes.Buffer
			if json.Compact(&buf, m.State) == nil {
				state = buf.String()
			} else {
				state = string(m.State)
			}
		}
		joined := time.UnixMilli(m.Joined).UTC().Format(time.RFC3339)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", m.Key, m.Conn, joined, state)
	}
	return tw.Flush()
}

// printMembersJSON prints each member as one JSON line.
func printMembersJSON(w io.Writer, members []protocol.Member) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false) // print states as the server sent them
	for i := range members {
		if err := enc.Encode(&members[i]); err != nil {
			return err
		}
	}
	return nil
}

// membersLine is what presence --watch prints for the members in a
// subscribe reply.
type membersLine struct {
	Type    string            `json:"type"` // "members"
	Topic   string            `json:"topic"`
	Members []protocol.Member `json:"members"`
}

func newMembersLine(topic string, members []protocol.Member) *membersLine {
	if members == nil {
		members = []protocol.Member{}
	}
	return &membersLine{Type: "members", Topic: topic, Members: members}
}

// trackState checks the state given to --track: a JSON object.
func trackState(arg string) (json.RawMessage, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal([]byte(arg), &obj); err != nil || obj == nil {
		why := "not a JSON object"
		if err != nil {
			why = "not valid JSON: " + err.Error()
		}
		return nil, fmt.Errorf(`--track STATE must be a JSON object; quote it for the shell: --track '{"name":"Ann"}' (%q is %s)`, arg, why)
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, []byte(arg)); err != nil {
		return nil, err // unreachable: it parsed
	}
	return buf.Bytes(), nil
}

// watchMode says what watchPresence prints, and whether it joins.
type watchMode struct {
	tables bool            // print the members table on each change, not JSON lines
	track  bool            // join the topic with state
	state  json.RawMessage // nil tracks without state
}

// watchPresence follows topic's presence over WebSocket until interrupted,
// a member of it with mode.state when mode.track.
func watchPresence(ctx context.Context, base string, rt realtimeFlags, topic string, timeout time.Duration, mode watchMode, stdout, stderr io.Writer) error {
	u, err := baseRealtimeURL(base)
	if err != nil {
		return err
	}
	opts := rt.options("updraft-presence/" + client.Version)
	opts.RequestTimeout = timeout
	if timeout == 0 {
		opts.RequestTimeout = -1 // none
	}

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	out := newLineOutput("presence", stdout, stderr, cancel)
	cfg := followConfig{url: u, opts: opts, topics: []string{topic}}
	tables := &presenceTables{out: out}
	var sub *client.Subscription // follow's goroutine only: set by subscribed, read by ready
	if mode.tables {
		cfg.options = func(string) []client.SubscribeOption {
			return []client.SubscribeOption{client.WithPresence(func(protocol.PresenceEvent) { tables.print() })}
		}
		cfg.subscribed = func(s *client.Subscription) { sub = s }
		cfg.resubscribed = func(string, protocol.SubscribeResult) { tables.print() }
	} else {
		w := &presenceWatch{out: out}
		cfg.options = func(string) []client.SubscribeOption {
			return []client.SubscribeOption{client.WithPresence(func(ev protocol.PresenceEvent) { w.print(&ev) })}
		}
		cfg.subscribed = func(sub *client.Subscription) { w.start(newMembersLine(topic, sub.Result().Members)) }
		cfg.resubscribed = func(t string, res protocol.SubscribeResult) { w.print(newMembersLine(t, res.Members)) }
	}
	cfg.ready = func(ctx context.Context, c *client.Client) error {
		if mode.track {
			if err := c.Track(ctx, topic, mode.state); err != nil {
				return err
			}
			out.note("tracking %s as %s", topic, stateNote(mode.state))
		}
		if mode.tables {
			tables.start(sub)
		}
		return nil
	}
	return follow(ctx, out, cfg)
}

// stateNote shows a tracked state in a note.
func stateNote(state json.RawMessage) string {
	if state == nil {
		return "a member without state"
	}
	return string(state)
}

// presenceTables prints the members table of presence --track each time
// the members change: the subscription's list, with every presence event
// applied, read under mu so that the last table printed is the latest.
type presenceTables struct {
	out *lineOutput

	mu   sync.Mutex
	sub  *client.Subscription // guarded by mu: nil until start
	last string               // guarded by mu: the last table printed
}

// start prints the first table of sub's members, once the topic is joined;
// tables print from then on.
func (p *presenceTables) start(sub *client.Subscription) {
	p.mu.Lock()
	p.sub = sub
	p.mu.Unlock()
	p.print()
}

// print prints the members when they differ from the last table.
func (p *presenceTables) print() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.sub == nil {
		return
	}
	sub := p.sub
	var b strings.Builder
	members := sub.Members()
	if err := printMembersTable(&b, members); err != nil {
		return // unreachable: a strings.Builder does not fail
	}
	if b.Len() == 0 {
		b.WriteString("(no members)\n")
	}
	if b.String() == p.last {
		return
	}
	sep := "\n"
	if p.last == "" {
		sep = ""
	}
	p.last = b.String()
	p.out.text(sep + p.last)
	noun := "members"
	if len(members) == 1 {
		noun = "member"
	}
	p.out.note("%d %s on %s", len(members), noun, sub.Topic())
}

// presenceWatch prints the lines of presence --watch in order: the presence
// handler may run before Subscribe returns with the members that precede
// its events, so lines wait until the first members line is out.
type presenceWatch struct {
	out *lineOutput

	mu      sync.Mutex
	started bool  // guarded by mu: the first members line is out
	held    []any // guarded by mu: lines that came before it
}

// start prints the first members line, then the lines held back.
func (w *presenceWatch) start(first any) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.out.line(first)
	for _, v := range w.held {
		w.out.line(v)
	}
	w.held, w.started = nil, true
}

// print prints v, or holds it back until start.
func (w *presenceWatch) print(v any) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.started {
		w.held = append(w.held, v)
		return
	}
	w.out.line(v)
}
