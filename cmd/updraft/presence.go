package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
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
	rt := addRealtimeFlags(fs)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: updraft presence [--json] [flags] TOPIC")
		fmt.Fprintln(stderr, "       updraft presence --watch [--token JWT] [flags] TOPIC")
		fmt.Fprintln(stderr, "\nLists the members of TOPIC through GET /api/v1/presence: a table of key, conn,")
		fmt.Fprintln(stderr, "joined time and state, or with --json one JSON object per member per line.")
		fmt.Fprintln(stderr, "\nWith --watch, subscribes to TOPIC with presence over WebSocket, authenticated by")
		fmt.Fprintln(stderr, "--token rather than --api-key, and prints one JSON line for the members,")
		fmt.Fprintln(stderr, "{\"type\":\"members\",\"topic\",\"members\"}, then one per presence event,")
		fmt.Fprintln(stderr, "{\"type\":\"presence\",\"topic\",\"event\",\"member\"}, and the members again after")
		fmt.Fprintln(stderr, "every reconnect. Stop it with Ctrl-C.")
		fmt.Fprintln(stderr)
		fs.PrintDefaults()
	}
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
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
	if *watch {
		return watchPresence(ctx, *api.base, rt, topic, *timeout, stdout, stderr)
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

// watchPresence follows topic's presence over WebSocket until interrupted.
func watchPresence(ctx context.Context, base string, rt realtimeFlags, topic string, timeout time.Duration, stdout, stderr io.Writer) error {
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
	w := &presenceWatch{out: out}
	return follow(ctx, out, followConfig{
		url:    u,
		opts:   opts,
		topics: []string{topic},
		options: func(string) []client.SubscribeOption {
			return []client.SubscribeOption{client.WithPresence(func(ev protocol.PresenceEvent) { w.print(&ev) })}
		},
		subscribed: func(sub *client.Subscription) { w.start(newMembersLine(topic, sub.Result().Members)) },
		resubscribed: func(t string, res protocol.SubscribeResult) {
			w.print(newMembersLine(t, res.Members))
		},
	})
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
