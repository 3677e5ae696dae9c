package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/updraft/updraft/broker"
	"github.com/updraft/updraft/internal/testenv"
	"github.com/updraft/updraft/protocol"
)

const (
	streamKey   = "stream-key"
	streamTopic = "chat/ai"
	// streamWait bounds every wait for a condition in these tests.
	streamWait = 5 * time.Second
)

// streamServer runs a gateway with the in-memory broker (or b) behind an
// httptest server. Its API key is streamKey; cfg.APIKey "-" disables the
// HTTP API.
func streamServer(t *testing.T, cfg Config, b broker.Broker) (*Server, *httptest.Server, broker.Broker) {
	t.Helper()
	if b == nil {
		b = newTestBroker(t, nil)
	}
	cfg.Broker = b
	cfg.AllowAnonymous = true
	if cfg.APIKey == "" {
		cfg.APIKey = streamKey
	} else if cfg.APIKey == "-" {
		cfg.APIKey = "" // the HTTP API disabled
	}
	s := testServer(t, cfg)
	hs := httptest.NewServer(s)
	t.Cleanup(hs.Close) // waits for every handler: a stuck stream hangs the test here
	return s, hs, b
}

type streamResponse struct {
	status int
	body   []byte
	err    error
}

// errorCode returns the code and message of an error answer.
func (r streamResponse) error(t *testing.T) protocol.Error {
	t.Helper()
	var env struct{ Error protocol.Error }
	if err := json.Unmarshal(r.body, &env); err != nil || env.Error.Code == "" {
		t.Fatalf("answer %d %s is not an error: %v", r.status, r.body, err)
	}
	return env.Error
}

// postStream starts POST /api/v1/stream with query and body in the
// background; the answer arrives on the returned channel.
func postStream(t *testing.T, hs *httptest.Server, query, key string, body io.Reader) <-chan streamResponse {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, hs.URL+"/api/v1/stream?"+query, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-ndjson")
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	out := make(chan streamResponse, 1)
	go func() {
		resp, err := hs.Client().Do(req)
		if err != nil {
			out <- streamResponse{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		out <- streamResponse{status: resp.StatusCode, body: b, err: err}
	}()
	return out
}

// answer waits for the stream's answer.
func answer(t *testing.T, ch <-chan streamResponse) streamResponse {
	t.Helper()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("POST /api/v1/stream: %v", r.err)
		}
		return r
	case <-time.After(streamWait):
		t.Fatalf("no answer to POST /api/v1/stream within %v", streamWait)
		return streamResponse{}
	}
}

// noAnswerYet fails if the stream already answered.
func noAnswerYet(t *testing.T, ch <-chan streamResponse) {
	t.Helper()
	select {
	case r := <-ch:
		t.Fatalf("stream answered before its body ended: %d %s %v", r.status, r.body, r.err)
	default:
	}
}

// history returns topic's retained messages.
func history(t *testing.T, b broker.Broker, topic string) []broker.Message {
	t.Helper()
	page, err := b.History(context.Background(), topic, broker.HistoryQuery{})
	if err != nil {
		t.Fatal(err)
	}
	return page.Messages
}

// waitMessages waits until topic holds n messages and returns them.
func waitMessages(t *testing.T, b broker.Broker, topic string, n int) []broker.Message {
	t.Helper()
	var got []broker.Message
	testenv.Eventually(t, streamWait, func() bool {
		got = history(t, b, topic)
		return len(got) >= n
	}, "waiting for %d messages on %s", n, topic)
	return got
}

// write writes s to the stream's body, failing the test on error.
func write(t *testing.T, w io.Writer, s string) {
	t.Helper()
	if _, err := io.WriteString(w, s); err != nil {
		t.Fatalf("writing the body: %v", err)
	}
}

// checkMessage fails unless m is event with data.
func checkMessage(t *testing.T, m broker.Message, event, data string) {
	t.Helper()
	if m.Event != event || string(m.Data) != data {
		t.Fatalf("message seq %d: %s %s, want %s %s", m.Seq, m.Event, m.Data, event, data)
	}
}

func streamQuery(event string, extra ...string) string {
	q := "topic=" + url.QueryEscape(streamTopic) + "&event=" + event
	for _, e := range extra {
		q += "&" + e
	}
	return q
}

func TestStreamPublishesLinesAsTheyArrive(t *testing.T) {
	t.Parallel()
	s, hs, b := streamServer(t, Config{}, nil)
	pr, pw := io.Pipe()
	defer pw.Close()
	res := postStream(t, hs, streamQuery("answer"), streamKey, pr)

	lines := []struct{ raw, data string }{
		{"{ \"t\": \"Hel\" }\n", `{"t":"Hel"}`},
		{"\n  \t\n", ""}, // blank lines are skipped
		{"{\"t\":\"lo\"}\r\n", `{"t":"lo"}`},
		{"[1, 2,\t3]\n", `[1,2,3]`},
		{`"no newline at the end"`, `"no newline at the end"`},
	}
	published := 0
	for _, l := range lines[:len(lines)-1] {
		write(t, pw, l.raw)
		if l.data == "" {
			continue
		}
		published++
		// Each line is out before the next one is even written.
		msgs := waitMessages(t, b, streamTopic, published)
		if len(msgs) != published {
			t.Fatalf("%d messages after %d lines", len(msgs), published)
		}
		checkMessage(t, msgs[published-1], "answer", l.data)
		noAnswerYet(t, res)
	}
	// A last line without "\n" is complete only when the body ends.
	last := lines[len(lines)-1]
	write(t, pw, last.raw)
	pw.Close()
	published++

	r := answer(t, res)
	if r.status != http.StatusOK {
		t.Fatalf("answer %d %s", r.status, r.body)
	}
	var got streamAnswer
	if err := json.Unmarshal(r.body, &got); err != nil {
		t.Fatal(err)
	}
	msgs := history(t, b, streamTopic)
	if len(msgs) != published+1 {
		t.Fatalf("%d messages, want %d tokens and the end", len(msgs), published)
	}
	want := streamAnswer{streamSummary{FirstSeq: 1, LastSeq: 4, Count: 4}, msgs[0].Epoch}
	if got != want {
		t.Fatalf("answer %+v, want %+v", got, want)
	}
	checkMessage(t, msgs[3], "answer", last.data)
	checkMessage(t, msgs[4], "answer.end", `{"first_seq":1,"last_seq":4,"count":4}`)
	if n := httpMessagesIn(t, s); n != 5 {
		t.Fatalf("messages_in_total{source=http} = %v, want 5 (4 tokens and the end)", n)
	}
}

func TestStreamEmptyBody(t *testing.T) {
	t.Parallel()
	_, hs, b := streamServer(t, Config{}, nil)
	r := answer(t, postStream(t, hs, streamQuery("answer"), streamKey, strings.NewReader("\n\n")))
	if r.status != http.StatusOK || !strings.Contains(string(r.body), `"first_seq":0,"last_seq":0,"count":0`) {
		t.Fatalf("answer %d %s", r.status, r.body)
	}
	msgs := history(t, b, streamTopic)
	if len(msgs) != 1 {
		t.Fatalf("%d messages, want only the end", len(msgs))
	}
	checkMessage(t, msgs[0], "answer.end", `{"first_seq":0,"last_seq":0,"count":0}`)
}

func TestStreamRollup(t *testing.T) {
	t.Parallel()
	_, hs, b := streamServer(t, Config{}, nil)
	pr, pw := io.Pipe()
	defer pw.Close()
	// The longest window, so that three writes surely fall into it.
	res := postStream(t, hs, streamQuery("answer", "rollup=1s"), streamKey, pr)

	write(t, pw, "{\"i\": 1}\n")
	write(t, pw, "{\"i\": 2}\n\n")
	write(t, pw, "\"three\"\n")
	msgs := waitMessages(t, b, streamTopic, 1)
	checkMessage(t, msgs[0], "answer", `[{"i":1},{"i":2},"three"]`)

	// A line after the window opens a new one.
	write(t, pw, "4\n")
	msgs = waitMessages(t, b, streamTopic, 2)
	checkMessage(t, msgs[1], "answer", `[4]`)
	noAnswerYet(t, res)

	// The end of the body flushes the open window before the end.
	write(t, pw, "5\n")
	pw.Close()
	if r := answer(t, res); r.status != http.StatusOK || !strings.Contains(string(r.body), `"first_seq":1,"last_seq":3,"count":3`) {
		t.Fatalf("answer %d %s", r.status, r.body)
	}
	msgs = history(t, b, streamTopic)
	if len(msgs) != 4 {
		t.Fatalf("%d messages, want 3 windows and the end", len(msgs))
	}
	checkMessage(t, msgs[2], "answer", `[5]`)
	checkMessage(t, msgs[3], "answer.end", `{"first_seq":1,"last_seq":3,"count":3}`)
}

func TestStreamRollupFlushesAtMaxMessage(t *testing.T) {
	t.Parallel()
	const max = 64
	_, hs, b := streamServer(t, Config{MaxMessage: max}, nil)
	pr, pw := io.Pipe()
	defer pw.Close()
	res := postStream(t, hs, streamQuery("answer", "rollup=1s"), streamKey, pr)

	word := `"` + strings.Repeat("w", 18) + `"` // 20 bytes
	// [w,w,w] is exactly 64 bytes; a fourth word does not fit, so the
	// window goes out at once, long before its second is up.
	for range 4 {
		write(t, pw, word+"\n")
	}
	msgs := waitMessages(t, b, streamTopic, 1)
	checkMessage(t, msgs[0], "answer", "["+word+","+word+","+word+"]")
	// A line of exactly max bytes has a window of its own.
	long := `"` + strings.Repeat("x", max-2) + `"`
	write(t, pw, long+"\n")
	pw.Close()
	if r := answer(t, res); r.status != http.StatusOK {
		t.Fatalf("answer %d %s", r.status, r.body)
	}
	msgs = history(t, b, streamTopic)
	if len(msgs) != 4 {
		t.Fatalf("%d messages: %v", len(msgs), msgs)
	}
	checkMessage(t, msgs[1], "answer", "["+word+"]")
	checkMessage(t, msgs[2], "answer", "["+long+"]")
	for _, m := range msgs[:2] {
		if len(m.Data) > max {
			t.Errorf("seq %d: window of %d bytes, more than %d", m.Seq, len(m.Data), max)
		}
	}
}

func TestStreamMalformedLine(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, rollup, bad, want string
		kept                    []string
	}{
		{"truncated object", "", `{"oops":`, "line 3: invalid JSON: unexpected end of JSON input", []string{`{"i":1}`, `{"i":2}`}},
		{"two values", "", `1 2`, "line 3: invalid JSON: invalid character '2' after top-level value", []string{`{"i":1}`, `{"i":2}`}},
		{"bare word", "", `hello`, "line 3: invalid JSON: invalid character 'h'", []string{`{"i":1}`, `{"i":2}`}},
		{"pending window is flushed first", "rollup=1s", `{"oops":`, "line 3: invalid JSON", []string{`[{"i":1},{"i":2}]`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, hs, b := streamServer(t, Config{}, nil)
			pr, pw := io.Pipe()
			defer pw.Close()
			var extra []string
			if tt.rollup != "" {
				extra = append(extra, tt.rollup)
			}
			res := postStream(t, hs, streamQuery("answer", extra...), streamKey, pr)
			write(t, pw, "{\"i\":1}\n{\"i\":2}\n")
			if tt.rollup == "" {
				waitMessages(t, b, streamTopic, 2)
			}
			// The bad line goes out while the body stays open: the server
			// answers without waiting for the rest.
			write(t, pw, tt.bad+"\n")
			r := answer(t, res)
			if e := r.error(t); r.status != http.StatusBadRequest || e.Code != protocol.CodeBadRequest || !strings.HasPrefix(e.Message, tt.want) {
				t.Fatalf("answer %d %s, want 400 bad_request %q", r.status, r.body, tt.want)
			}
			msgs := history(t, b, streamTopic)
			if len(msgs) != len(tt.kept)+1 {
				t.Fatalf("%d messages, want the %d before the bad line and the error", len(msgs), len(tt.kept))
			}
			for i, data := range tt.kept {
				checkMessage(t, msgs[i], "answer", data)
			}
			checkErrorEvent(t, msgs[len(tt.kept)], "answer.error", tt.want)
		})
	}
}

// httpMessagesIn reads updraft_messages_in_total{source="http"}.
func httpMessagesIn(t *testing.T, s *Server) float64 {
	t.Helper()
	families, err := s.cfg.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != "updraft_messages_in_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "source" && l.GetValue() == "http" {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// checkErrorEvent fails unless m is event with data {"message":...}
// starting with want.
func checkErrorEvent(t *testing.T, m broker.Message, event, want string) {
	t.Helper()
	var data map[string]string
	if err := json.Unmarshal(m.Data, &data); err != nil || m.Event != event || len(data) != 1 || !strings.Contains(data["message"], want) {
		t.Fatalf("message seq %d: %s %s, want %s with a message containing %q", m.Seq, m.Event, m.Data, event, want)
	}
}

func TestStreamOversizedLine(t *testing.T) {
	t.Parallel()
	const max = 64
	_, hs, b := streamServer(t, Config{MaxMessage: max}, nil)
	pr, pw := io.Pipe()
	defer pw.Close()
	res := postStream(t, hs, streamQuery("answer"), streamKey, pr)
	fits := `"` + strings.Repeat("x", max-2) + `"`
	write(t, pw, fits+"\r\n")
	waitMessages(t, b, streamTopic, 1)
	// A line one byte too long is refused as soon as it is known to be;
	// the writer does not wait for the server to read all of it.
	go io.WriteString(pw, `"`+strings.Repeat("y", 1<<20)) //nolint:errcheck // fails once the server hangs up
	r := answer(t, res)
	if e := r.error(t); r.status != http.StatusRequestEntityTooLarge || e.Code != protocol.CodeTooLarge || e.Message != "line 2: longer than 64 bytes" {
		t.Fatalf("answer %d %s", r.status, r.body)
	}
	msgs := history(t, b, streamTopic)
	if len(msgs) != 2 {
		t.Fatalf("%d messages", len(msgs))
	}
	checkMessage(t, msgs[0], "answer", fits)
	checkErrorEvent(t, msgs[1], "answer.error", "line 2: longer than 64 bytes")
}

func TestStreamIdleTimeout(t *testing.T) {
	t.Parallel()
	_, hs, b := streamServer(t, Config{StreamIdleTimeout: 500 * time.Millisecond}, nil)
	pr, pw := io.Pipe()
	defer pw.Close()
	res := postStream(t, hs, streamQuery("answer", "rollup=1s"), streamKey, pr)
	write(t, pw, "\"tok\"\n")
	// The body goes quiet, the client stays: after 500ms the pending window
	// goes out, then the error, and the client gets 408.
	r := answer(t, res)
	if e := r.error(t); r.status != http.StatusRequestTimeout || !strings.Contains(e.Message, "sent no complete line for 500ms") {
		t.Fatalf("answer %d %s", r.status, r.body)
	}
	msgs := history(t, b, streamTopic)
	if len(msgs) != 2 {
		t.Fatalf("%d messages", len(msgs))
	}
	checkMessage(t, msgs[0], "answer", `["tok"]`)
	checkErrorEvent(t, msgs[1], "answer.error", "timed out")

	// The gateway goes on serving.
	if r := answer(t, postStream(t, hs, streamQuery("again"), streamKey, strings.NewReader("1\n"))); r.status != http.StatusOK {
		t.Fatalf("next stream: %d %s", r.status, r.body)
	}
}

func TestStreamIdleClockRestartsOnData(t *testing.T) {
	t.Parallel()
	_, hs, b := streamServer(t, Config{StreamIdleTimeout: time.Second}, nil)
	pr, pw := io.Pipe()
	defer pw.Close()
	res := postStream(t, hs, streamQuery("answer"), streamKey, pr)
	// Six lines 300ms apart: longer than the idle timeout in all, but no
	// gap is.
	for i := range 6 {
		write(t, pw, fmt.Sprintf("%d\n", i))
		waitMessages(t, b, streamTopic, i+1)
		time.Sleep(300 * time.Millisecond) // pacing the writer, not waiting for a condition
	}
	pw.Close()
	if r := answer(t, res); r.status != http.StatusOK || !strings.Contains(string(r.body), `"count":6`) {
		t.Fatalf("answer %d %s", r.status, r.body)
	}
}

// TestStreamIdleCountsLines: the idle timeout runs between lines, not
// between bytes, so a line trickled a byte at a time cannot hold the
// stream (and its connection) open for good.
func TestStreamIdleCountsLines(t *testing.T) {
	t.Parallel()
	_, hs, b := streamServer(t, Config{StreamIdleTimeout: time.Second}, nil)
	pr, pw := io.Pipe()
	defer pw.Close()
	start := time.Now()
	res := postStream(t, hs, streamQuery("answer"), streamKey, pr)
	write(t, pw, "1\n")
	waitMessages(t, b, streamTopic, 1)
	done := make(chan struct{})
	defer close(done)
	go func() {
		// One byte every 300ms, never a newline: at most 30 of them, 9s.
		for range 30 {
			if _, err := io.WriteString(pw, "7"); err != nil {
				return
			}
			select {
			case <-done:
				return
			case <-time.After(300 * time.Millisecond): // the trickle's pace, not a wait for a condition
			}
		}
	}()
	r := answer(t, res)
	if e := r.error(t); r.status != http.StatusRequestTimeout || !strings.Contains(e.Message, "no complete line for 1s") {
		t.Fatalf("answer %d %s after %v", r.status, r.body, time.Since(start))
	}
	msgs := history(t, b, streamTopic)
	if len(msgs) != 2 {
		t.Fatalf("%d messages", len(msgs))
	}
	checkMessage(t, msgs[0], "answer", "1")
	checkErrorEvent(t, msgs[1], "answer.error", "timed out")
}

func TestStreamDroppedBody(t *testing.T) {
	t.Parallel()
	t.Run("client gives up", func(t *testing.T) {
		t.Parallel()
		_, hs, b := streamServer(t, Config{}, nil)
		pr, pw := io.Pipe()
		res := postStream(t, hs, streamQuery("answer"), streamKey, pr)
		write(t, pw, "1\n2\n")
		waitMessages(t, b, streamTopic, 2)
		// The client's body fails: its transport drops the connection in
		// the middle of the chunked body.
		pw.CloseWithError(errors.New("model crashed"))
		if r := <-res; r.err == nil {
			t.Fatalf("client got an answer %d %s, want its own error", r.status, r.body)
		}
		msgs := waitMessages(t, b, streamTopic, 3)
		checkErrorEvent(t, msgs[2], "answer.error", "ended early")
	})
	t.Run("connection cut mid-chunk", func(t *testing.T) {
		t.Parallel()
		_, hs, b := streamServer(t, Config{}, nil)
		conn, err := net.Dial("tcp", hs.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprintf(conn, "POST /api/v1/stream?%s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nTransfer-Encoding: chunked\r\n\r\n", streamQuery("answer"), streamKey)
		fmt.Fprintf(conn, "a\r\n{\"t\":\"a\"}\n\r\n")
		waitMessages(t, b, streamTopic, 1)
		// Half a line in a chunk that never completes: it must not be
		// published.
		fmt.Fprintf(conn, "20\r\n{\"t\":\"b")
		conn.Close()
		msgs := waitMessages(t, b, streamTopic, 2)
		checkMessage(t, msgs[0], "answer", `{"t":"a"}`)
		checkErrorEvent(t, msgs[1], "answer.error", "ended early")
	})
}

// TestStreamAnswersOnTheWire checks what a raw HTTP/1.1 client sees: the
// answer arrives while the body is still open, and the connection closes.
func TestStreamAnswersOnTheWire(t *testing.T) {
	t.Parallel()
	_, hs, _ := streamServer(t, Config{}, nil)
	conn, err := net.Dial("tcp", hs.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(streamWait))
	fmt.Fprintf(conn, "POST /api/v1/stream?%s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nTransfer-Encoding: chunked\r\n\r\n", streamQuery("answer"), streamKey)
	fmt.Fprintf(conn, "4\r\nbad\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !resp.Close {
		t.Fatalf("answer %s, close %v: want 400 and the connection closed", resp.Status, resp.Close)
	}
}

// failingBroker fails every publish after the first ok ones.
type failingBroker struct {
	broker.Broker
	ok    int64
	calls atomic.Int64
}

func (f *failingBroker) Publish(ctx context.Context, topic string, pub broker.Publication) (broker.Position, error) {
	if f.calls.Add(1) > f.ok {
		return broker.Position{}, fmt.Errorf("publish: %w", broker.ErrUnavailable)
	}
	return f.Broker.Publish(ctx, topic, pub)
}

func TestStreamBrokerFailure(t *testing.T) {
	t.Parallel()
	fb := &failingBroker{Broker: newTestBroker(t, nil), ok: 2}
	_, hs, b := streamServer(t, Config{}, fb)
	pr, pw := io.Pipe()
	defer pw.Close()
	res := postStream(t, hs, streamQuery("answer"), streamKey, pr)
	write(t, pw, "1\n2\n3\n")
	r := answer(t, res)
	if e := r.error(t); r.status != http.StatusServiceUnavailable || e.Code != protocol.CodeUnavailable {
		t.Fatalf("answer %d %s", r.status, r.body)
	}
	if got := fb.calls.Load(); got != 4 {
		t.Fatalf("%d publish calls, want 3 tokens and a try at the error", got)
	}
	if msgs := history(t, b, streamTopic); len(msgs) != 2 {
		t.Fatalf("%d messages kept, want 2", len(msgs))
	}
}

func TestStreamRefusesBadCalls(t *testing.T) {
	t.Parallel()
	_, hs, b := streamServer(t, Config{}, nil)
	_, noKey, _ := streamServer(t, Config{APIKey: "-"}, nil)
	longEvent := strings.Repeat("e", MaxStreamEventLen+1)
	tests := []struct {
		name   string
		srv    *httptest.Server
		query  string
		key    string
		status int
		code   string
		want   string
	}{
		{"missing topic", hs, "event=answer", streamKey, 400, "bad_request", "invalid topic"},
		{"bad topic", hs, "topic=chat//x&event=answer", streamKey, 400, "bad_request", "invalid topic"},
		{"missing event", hs, "topic=chat/ai", streamKey, 400, "bad_request", "invalid event"},
		{"bad event", hs, "topic=chat/ai&event=a/b", streamKey, 400, "bad_request", "invalid event"},
		{"reserved event", hs, "topic=chat/ai&event=INSERT", streamKey, 400, "bad_request", "reserved"},
		{"event without room for suffixes", hs, "topic=chat/ai&event=" + longEvent, streamKey, 400, "bad_request", fmt.Sprintf("at most %d bytes", MaxStreamEventLen)},
		{"table topic", hs, "topic=orders&event=answer", streamKey, 403, "forbidden", "tracker"},
		{"rollup not a duration", hs, streamQuery("answer", "rollup=fast"), streamKey, 400, "bad_request", "rollup"},
		{"negative rollup", hs, streamQuery("answer", "rollup=-1ms"), streamKey, 400, "bad_request", "rollup"},
		{"rollup too long", hs, streamQuery("answer", "rollup=2s"), streamKey, 400, "bad_request", "rollup"},
		{"unknown parameter", hs, streamQuery("answer", "rolup=40ms"), streamKey, 400, "bad_request", "rolup"},
		{"repeated parameter", hs, streamQuery("answer", "event=other"), streamKey, 400, "bad_request", "2 times"},
		{"missing key", hs, streamQuery("answer"), "", 401, "unauthorized", "missing API key"},
		{"wrong key", hs, streamQuery("answer"), "nope", 401, "unauthorized", "wrong API key"},
		{"API disabled", noKey, streamQuery("answer"), "anything", 401, "unauthorized", "disabled"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := answer(t, postStream(t, tt.srv, tt.query, tt.key, strings.NewReader("1\n")))
			e := r.error(t)
			if r.status != tt.status || e.Code != tt.code || !strings.Contains(e.Message, tt.want) {
				t.Fatalf("answer %d %s, want %d %s mentioning %q", r.status, r.body, tt.status, tt.code, tt.want)
			}
		})
	}
	for _, topic := range []string{streamTopic, "orders"} {
		if msgs := history(t, b, topic); len(msgs) != 0 {
			t.Fatalf("refused calls published %d messages on %s", len(msgs), topic)
		}
	}
	// Rollup 0 is off and 1s the longest window; 60 bytes the longest event.
	for _, q := range []string{streamQuery("answer", "rollup=0"), streamQuery("answer", "rollup=1s"), streamQuery(longEvent[1:])} {
		if r := answer(t, postStream(t, hs, q, streamKey, strings.NewReader("1\n"))); r.status != http.StatusOK {
			t.Fatalf("%s: %d %s", q, r.status, r.body)
		}
	}
}

// TestStreamCutLateInDrain: a stream still running when its node drains
// goes on for three quarters of the drain, then ends with E.error and a
// 503, and the drain completes within its timeout.
func TestStreamCutLateInDrain(t *testing.T) {
	t.Parallel()
	s, hs, b := streamServer(t, Config{DrainTimeout: 800 * time.Millisecond}, nil)
	pr, pw := io.Pipe()
	defer pw.Close()
	res := postStream(t, hs, streamQuery("answer"), streamKey, pr)
	write(t, pw, "\"tok\"\n")
	waitMessages(t, b, streamTopic, 1)

	start := time.Now()
	if err := s.Shutdown(hs.Config); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("drain took %v with a drain timeout of 800ms", took)
	}
	r := answer(t, res)
	if e := r.error(t); r.status != http.StatusServiceUnavailable || !strings.Contains(e.Message, "shutting down") {
		t.Fatalf("answer %d %s", r.status, r.body)
	}
	msgs := history(t, b, streamTopic)
	if len(msgs) != 2 {
		t.Fatalf("%d messages, want the token and the error", len(msgs))
	}
	checkErrorEvent(t, msgs[1], "answer.error", "shutting down")
}
