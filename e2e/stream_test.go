package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/updraft/updraft/internal/bench"
	"github.com/updraft/updraft/internal/testenv"
	"github.com/updraft/updraft/protocol"
)

// streamEnv is the cluster configuration of the streaming tests: room in
// history for a whole stream, and no rate limit in the way.
var streamEnv = map[string]string{"UPDRAFT_HISTORY_SIZE": "5000", "UPDRAFT_CLIENT_RATE": "100000"}

// TestStreamFanout: 1,000 subscribers spread over three gateways watch one
// topic while a 2,000-token stream is POSTed to one gateway at a steady
// pace, one line at a time: every subscriber receives every token exactly
// once, in order, then the .end event that names them.
func TestStreamFanout(t *testing.T) {
	_, nodes := startCluster(t, 3, streamEnv)
	const topic, watchers, tokens = "ai/answer-1", 1000, 2000

	ws := startTokenWatchers(t, nodes, topic, watchers)
	st := startTokenStream(t, nodes[0], topic, "token", tokens, time.Millisecond)
	// About 35s on two race-checked cores: two million deliveries.
	sum := st.result(t, 5*time.Minute)
	if sum.Count != tokens || sum.LastSeq != sum.FirstSeq+tokens-1 || sum.Epoch == "" {
		t.Fatalf("stream answer %+v, want %d tokens with consecutive seqs", sum, tokens)
	}

	testenv.Eventually(t, 2*time.Minute, func() bool {
		for _, w := range ws {
			if !w.finished() {
				return false
			}
		}
		return true
	}, "not every watcher saw the end of the stream (first behind: %s)", lazy(func() string { return lagging(ws) }))
	for i, w := range ws {
		w.check(t, fmt.Sprintf("watcher %d", i), sum, tokens)
	}
	// Every token, and the end, counted as an HTTP message on the node
	// that took the stream.
	if n := metric(t, nodes[0], `updraft_messages_in_total{source="http"}`); n != tokens+1 {
		t.Errorf("node 1 counted %v HTTP messages, want %d", n, tokens+1)
	}
}

// TestStreamLateJoinerRewind: a subscriber that joins a running stream at
// about token 1,000 with "rewind":5000 gets the retained tokens first, then
// the live ones, and so every token exactly once, in order, then the end.
//
// It relies on subscribe's rewind (docs/protocol.md, "subscribe"): a
// server without it answers recovered:false and replays nothing.
func TestStreamLateJoinerRewind(t *testing.T) {
	_, nodes := startCluster(t, 3, streamEnv)
	const topic, tokens = "ai/answer-2", 2000

	st := startTokenStream(t, nodes[0], topic, "token", tokens, time.Millisecond)
	testenv.Eventually(t, 60*time.Second, func() bool { return st.written.Load() >= tokens/2 },
		"the stream did not reach token %d", tokens/2)
	late := dialTokenWatcher(t, nodes[1], topic, 5000)
	if w := st.written.Load(); w >= tokens || late.subSeq == 0 {
		t.Fatalf("the late subscriber joined at seq %d with %d tokens written: not in the middle of the stream", late.subSeq, w)
	}
	t.Logf("the late subscriber joined at seq %d", late.subSeq)
	sum := st.result(t, 60*time.Second)
	testenv.Eventually(t, 60*time.Second, late.finished, "the late subscriber did not see the end (%s tokens so far)",
		lazy(func() string { return strconv.FormatInt(late.progress.Load(), 10) }))
	if !late.recovered {
		t.Errorf("subscribe with rewind answered recovered:false: the server did not replay history")
	}
	late.check(t, "late subscriber", sum, tokens)
}

// streamSummary is the answer to a stream and the data of its .end event.
type streamSummary struct {
	FirstSeq uint64 `json:"first_seq"`
	LastSeq  uint64 `json:"last_seq"`
	Count    uint64 `json:"count"`
	Epoch    string `json:"epoch,omitempty"`
}

// tokenStream is a POST /api/v1/stream in progress, fed through a pipe.
type tokenStream struct {
	written atomic.Int64 // lines handed to the request body
	answer  chan streamAnswer
}

type streamAnswer struct {
	status int
	body   []byte
	err    error
}

// startTokenStream POSTs n tokens, {"i":0,...} to {"i":n-1,...}, to
// node's stream endpoint, writing one line every pace; the body ends after
// the last one.
func startTokenStream(t *testing.T, node *testenv.Node, topic, event string, n int, pace time.Duration) *tokenStream {
	t.Helper()
	pr, pw := io.Pipe()
	t.Cleanup(func() { pw.CloseWithError(errors.New("test over")) }) // unblocks the writer
	q := url.Values{"topic": {topic}, "event": {event}}
	req, err := http.NewRequest(http.MethodPost, node.URL()+"/api/v1/stream?"+q.Encode(), pr)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+apiKey)
	req.Header.Set("Content-Type", "application/x-ndjson")
	st := &tokenStream{answer: make(chan streamAnswer, 1)}
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			st.answer <- streamAnswer{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		st.answer <- streamAnswer{status: resp.StatusCode, body: b, err: err}
	}()
	go func() {
		tick := time.NewTicker(pace)
		defer tick.Stop()
		line := make([]byte, 0, 64)
		for i := range n {
			<-tick.C // pacing the model, not waiting for a condition
			line = fmt.Appendf(line[:0], "{\"i\":%d,\"t\":\" word%d\"}\n", i, i)
			if _, err := pw.Write(line); err != nil {
				return // the request failed; result reports why
			}
			st.written.Add(1)
		}
		pw.Close()
	}()
	return st
}

// result waits for the stream's answer and fails unless it is 200.
func (st *tokenStream) result(t *testing.T, within time.Duration) streamSummary {
	t.Helper()
	var a streamAnswer
	select {
	case a = <-st.answer:
	case <-time.After(within):
		t.Fatalf("no answer to the stream within %v (%d lines written)", within, st.written.Load())
	}
	if a.err != nil || a.status != http.StatusOK {
		t.Fatalf("stream answer: %d %s %v", a.status, a.body, a.err)
	}
	var sum streamSummary
	if err := json.Unmarshal(a.body, &sum); err != nil {
		t.Fatalf("stream answer %s: %v", a.body, err)
	}
	return sum
}

// tokenWatcher is a bare WebSocket subscriber that checks a token stream
// as it arrives, keeping only counters: a thousand of them must fit a
// small machine next to three race-checked gateways. Its reader goroutine
// owns every field below the line until done is closed.
type tokenWatcher struct {
	conn     *bench.Conn
	done     chan struct{} // closed when the reader stops: end seen, or an error
	progress atomic.Int64  // tokens received so far

	recovered bool   // the subscribe reply's recovered
	subSeq    uint64 // the subscribe reply's seq
	count     uint64 // tokens received
	firstSeq  uint64
	lastSeq   uint64
	endSeq    uint64
	end       []byte // data of the .end event
	err       error  // the first thing that went wrong
}

// startTokenWatchers connects n watchers to topic, spread round robin over
// nodes, a few at a time, and returns once every one is subscribed.
func startTokenWatchers(t *testing.T, nodes []*testenv.Node, topic string, n int) []*tokenWatcher {
	t.Helper()
	return connectAll(t, n, func(i int) (*tokenWatcher, error) {
		return newTokenWatcher(t, nodes[i%len(nodes)], topic, 0)
	})
}

// dialTokenWatcher connects one watcher, subscribing with rewind.
func dialTokenWatcher(t *testing.T, node *testenv.Node, topic string, rewind int) *tokenWatcher {
	t.Helper()
	w, err := newTokenWatcher(t, node, topic, rewind)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// newTokenWatcher connects anonymously, subscribes to topic and starts
// the reader; it returns once the subscribe reply arrived. Safe to call
// from any goroutine.
func newTokenWatcher(t *testing.T, node *testenv.Node, topic string, rewind int) (*tokenWatcher, error) {
	c, err := dialLite(node, 15*time.Second)
	if err != nil {
		return nil, err
	}
	w := &tokenWatcher{conn: c, done: make(chan struct{})}
	sub := fmt.Sprintf(`{"type":"subscribe","ref":"s","topic":%q`, topic)
	if rewind > 0 {
		sub += `,"rewind":` + strconv.Itoa(rewind)
	}
	// Both requests in one frame, as the protocol allows.
	if err := c.WriteText([]byte(`{"type":"connect","ref":"c"}` + "\n" + sub + "}")); err != nil {
		c.Close()
		return nil, err
	}
	subscribed := make(chan error, 1)
	go w.read(subscribed)
	t.Cleanup(func() {
		c.Close()
		<-w.done
	})
	select {
	case err := <-subscribed:
		if err != nil {
			return nil, err
		}
	case <-time.After(15 * time.Second):
		return nil, errors.New("no subscribe reply within 15s")
	}
	return w, nil
}

var (
	eventPrefix = []byte(`{"type":"event"`)
	eventKey    = []byte(`"event":"`)
	seqKey      = []byte(`"seq":`)
	dataKey     = []byte(`"data":`)
	indexKey    = []byte(`{"i":`)
)

// read consumes the connection until the .end event or an error (closing
// the connection ends it too). It reports the subscribe reply, or the
// error that came first, on subscribed.
func (w *tokenWatcher) read(subscribed chan<- error) {
	defer close(w.done)
	fail := func(format string, args ...any) {
		if w.err == nil {
			w.err = fmt.Errorf(format, args...)
		}
	}
	defer func() {
		select {
		case subscribed <- w.err: // after the reply nobody listens; the buffer takes it
		default:
		}
	}()
	var msg []byte
	for w.end == nil && w.err == nil {
		var err error
		if msg, err = w.conn.ReadMessage(msg[:0]); err != nil {
			fail("after %d tokens: %v", w.count, err)
			return
		}
		protocol.Lines(msg, func(line []byte) {
			if w.err != nil {
				return
			}
			if w.end != nil {
				fail("a message after the end: %s", line)
				return
			}
			if bytes.HasPrefix(line, eventPrefix) {
				w.event(line, fail)
				return
			}
			var m struct {
				protocol.Reply
				Code   int    `json:"code"`
				Reason string `json:"reason"`
			}
			if err := json.Unmarshal(line, &m); err != nil {
				fail("unreadable message %s", line)
				return
			}
			switch {
			case m.Type == protocol.TypeDisconnect:
				fail("disconnected after %d tokens: %d %s", w.count, m.Code, m.Reason)
			case m.Type != protocol.TypeReply || !m.OK:
				fail("unexpected message %s", line)
			case m.Ref == "s":
				var res protocol.SubscribeResult
				json.Unmarshal(m.Data, &res)
				w.recovered, w.subSeq = res.Recovered, res.Seq
				subscribed <- nil
			}
		})
	}
}

// event checks one event line: tokens must come with consecutive seqs
// and indexes from 0, then the .end.
func (w *tokenWatcher) event(line []byte, fail func(string, ...any)) {
	name, seq, data, ok := parseEvent(line)
	if !ok {
		fail("unreadable event %s", line)
		return
	}
	switch name {
	case "token":
		i, ok := tokenIndex(data)
		switch {
		case !ok:
			fail("token without index: %s", line)
		case i != w.count:
			fail("token %d arrived as number %d (seq %d)", i, w.count, seq)
		case w.count > 0 && seq != w.lastSeq+1:
			fail("seq %d after %d", seq, w.lastSeq)
		}
		if w.count == 0 {
			w.firstSeq = seq
		}
		w.lastSeq = seq
		w.count++
		w.progress.Add(1)
	case "token.end":
		w.end = append([]byte(nil), data...)
		w.endSeq = seq
	default:
		fail("unexpected event %s", line)
	}
}

// parseEvent finds an event line's name, seq and data without a full JSON
// decode: a thousand watchers read two million of them.
func parseEvent(line []byte) (name string, seq uint64, data []byte, ok bool) {
	i := bytes.Index(line, eventKey)
	j := bytes.Index(line, seqKey)
	k := bytes.Index(line, dataKey)
	if i < 0 || j < 0 || k < 0 {
		return "", 0, nil, false
	}
	rest := line[i+len(eventKey):]
	end := bytes.IndexByte(rest, '"')
	if end < 0 {
		return "", 0, nil, false
	}
	name = string(rest[:end])
	digits := line[j+len(seqKey):]
	n := 0
	for n < len(digits) && digits[n] >= '0' && digits[n] <= '9' {
		n++
	}
	seq, err := strconv.ParseUint(string(digits[:n]), 10, 64)
	if err != nil {
		return "", 0, nil, false
	}
	// data is the last field the gateway writes: up to the closing brace.
	return name, seq, line[k+len(dataKey) : len(line)-1], true
}

// tokenIndex reads i from a token's data {"i":N,...}.
func tokenIndex(data []byte) (uint64, bool) {
	if !bytes.HasPrefix(data, indexKey) {
		return 0, false
	}
	digits := data[len(indexKey):]
	n := 0
	for n < len(digits) && digits[n] >= '0' && digits[n] <= '9' {
		n++
	}
	i, err := strconv.ParseUint(string(digits[:n]), 10, 64)
	return i, err == nil
}

// finished reports whether the watcher's reader stopped.
func (w *tokenWatcher) finished() bool {
	select {
	case <-w.done:
		return true
	default:
		return false
	}
}

// check fails unless the watcher received the whole stream sum describes:
// tokens tokens, seqs first_seq..last_seq, then the .end with the same
// summary.
func (w *tokenWatcher) check(t *testing.T, who string, sum streamSummary, tokens uint64) {
	t.Helper()
	<-w.done
	if w.err != nil {
		t.Fatalf("%s: %v", who, w.err)
	}
	if w.count != tokens || w.firstSeq != sum.FirstSeq || w.lastSeq != sum.LastSeq {
		t.Fatalf("%s: %d tokens, seqs %d..%d; want %d, %d..%d", who, w.count, w.firstSeq, w.lastSeq, tokens, sum.FirstSeq, sum.LastSeq)
	}
	var end streamSummary
	if err := json.Unmarshal(w.end, &end); err != nil {
		t.Fatalf("%s: end data %s: %v", who, w.end, err)
	}
	sum.Epoch = ""
	if end != sum || w.endSeq != sum.LastSeq+1 {
		t.Fatalf("%s: end %s at seq %d, want %+v at %d", who, w.end, w.endSeq, sum, sum.LastSeq+1)
	}
}

// lazy formats as what f returns when the message is printed, not when
// the call that takes it is made.
type lazy func() string

func (f lazy) String() string { return f() }

// lagging describes the first watcher still reading, for a failure
// message.
func lagging(ws []*tokenWatcher) string {
	for i, w := range ws {
		if !w.finished() {
			return fmt.Sprintf("watcher %d with %d tokens", i, w.progress.Load())
		}
	}
	return "none"
}

// dialLite opens the minimal WebSocket client of package internal/bench to
// node: coder/websocket's per-read context machinery costs more than a
// thousand readers on two race-checked cores can pay. timeout bounds the
// handshake.
func dialLite(node *testenv.Node, timeout time.Duration) (*bench.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return bench.Dial(ctx, node.WSURL(), nil)
}
