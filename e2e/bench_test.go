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
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/updraft/updraft/internal/bench"
	"github.com/updraft/updraft/internal/testenv"
	"github.com/updraft/updraft/protocol"
)

// BenchmarkIdleConnections measures what an idle client costs a gateway:
// it opens 10,000 WebSockets to a real embedded `updraft serve`, each
// connected and subscribed to one of 100 topics, and reports the growth of
// the server's resident memory and Go heap per connection. Run it alone:
//
//	go test -run '^$' -bench IdleConnections -benchtime 1x ./e2e
func BenchmarkIdleConnections(b *testing.B) {
	const conns = 10000
	node := testenv.StartNode(b, map[string]string{"UPDRAFT_ALLOW_ANONYMOUS": "true", "UPDRAFT_LOG_LEVEL": "warn"})
	settle := func() (rss, heap float64) {
		// Let the runtime return what it can, then read both figures.
		time.Sleep(2 * time.Second) // the runtime's scavenger works in the background; no condition to poll
		return rssBytes(b, node.PID()), metric(b, node, "go_memstats_heap_inuse_bytes")
	}
	rss0, heap0 := settle()

	for i := 0; i < b.N; i++ {
		open := make([]*websocket.Conn, 0, conns)
		var mu sync.Mutex
		var wg sync.WaitGroup
		errs := make(chan error, conns)
		sem := make(chan struct{}, 64)
		for c := 0; c < conns; c++ {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				ws, err := idleClient(node.WSURL(), fmt.Sprintf("chat/idle-%d", c%100))
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				open = append(open, ws)
				mu.Unlock()
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			b.Fatal(err)
		}
		if got := metric(b, node, "updraft_connections"); got != conns {
			b.Fatalf("server counts %v connections, want %d", got, conns)
		}
		rss1, heap1 := settle()
		b.ReportMetric((rss1-rss0)/conns, "rss-bytes/conn")
		b.ReportMetric((heap1-heap0)/conns, "heap-bytes/conn")
		b.ReportMetric(metric(b, node, "go_goroutines")/conns, "goroutines/conn")
		for _, ws := range open {
			ws.CloseNow()
		}
	}
}

// idleClient opens a WebSocket, connects anonymously and subscribes to
// topic, then leaves the connection idle (a reader goroutine answers the
// server's pings).
func idleClient(url, topic string) (*websocket.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{Subprotocols: []string{protocol.Subprotocol}})
	if err != nil {
		return nil, err
	}
	frame := `{"type":"connect","ref":"1"}` + "\n" + `{"type":"subscribe","ref":"2","topic":"` + topic + `"}`
	if err := ws.Write(ctx, websocket.MessageText, []byte(frame)); err != nil {
		return nil, err
	}
	for replies := 0; replies < 2; {
		_, msg, err := ws.Read(ctx)
		if err != nil {
			return nil, err
		}
		replies += strings.Count(string(msg), `"type":"reply"`)
		if strings.Contains(string(msg), `"ok":false`) {
			return nil, fmt.Errorf("refused: %s", msg)
		}
	}
	ws.CloseRead(context.Background())
	return ws, nil
}

// rssBytes reads a process's resident set size from /proc.
func rssBytes(b *testing.B, pid int) float64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 64)
			if err != nil {
				b.Fatal(err)
			}
			return kb * 1024
		}
	}
	b.Fatalf("no VmRSS in /proc/%d/status", pid)
	return 0
}

// benchCluster is startLoadCluster for benchmarks: n gateways built
// without -race, each with nodeEnv plus extra, joined by r (by a new
// redis-server when r is nil).
func benchCluster(b *testing.B, r *testenv.Redis, n int, extra map[string]string) []*testenv.Node {
	b.Helper()
	if r == nil {
		r = testenv.StartRedis(b)
	}
	nodes := make([]*testenv.Node, n)
	for i := range nodes {
		env := nodeEnv(r.URL(), extra)
		env["UPDRAFT_NODE_ID"] = fmt.Sprintf("node-%d", i+1)
		nodes[i] = testenv.StartLoadNode(b, env)
	}
	return nodes
}

// BenchmarkRecovery measures how long a client that missed 1,000 messages
// takes to get them back: per iteration, 1,001 messages are published to
// a fresh topic through one gateway (the HTTP batch API); a bare WebSocket
// client connected to another gateway then subscribes with since = the
// first message's position. The time (ns/op, one recovery) runs from
// writing the subscribe to reading the 1,000th replayed event; ns/msg
// divides it by 1,000. Two gateways built without -race, one Redis:
//
//   - Redis: the default history (1,000 messages), so all 1,000 come from
//     Redis.
//   - Durable: a persistent topic with a Redis history of 100, so 900 of
//     the 1,000 come from PostgreSQL. The last message is emitted with
//     durable, which answers once everything before it is stored.
//
// Run it alone:
//
//	go test -run '^$' -bench Recovery -benchtime 50x ./e2e
func BenchmarkRecovery(b *testing.B) {
	const missed = 1000
	pg := testenv.StartPostgres(b)
	r := testenv.StartRedis(b)
	cases := []struct {
		name    string
		durable bool
		nodes   []*testenv.Node
	}{
		{"Redis", false, benchCluster(b, r, 2, nil)},
		{"Durable", true, benchCluster(b, r, 2, map[string]string{
			"UPDRAFT_HISTORY_SIZE":   "100",
			"UPDRAFT_DATABASE_URL":   pg.URL(),
			"UPDRAFT_PERSIST_TOPICS": "chat/**",
		})},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			b.StopTimer()
			for i := 0; i < b.N; i++ {
				topic := fmt.Sprintf("chat/recover-%d", time.Now().UnixNano())
				since := publishMissed(b, c.nodes[0], topic, missed, c.durable)
				conn := connectLite(b, c.nodes[1])
				b.StartTimer()
				err := recoverSince(conn, topic, since, missed)
				b.StopTimer()
				conn.Close()
				if err != nil {
					b.Fatalf("%s recovery %d: %v", c.name, i, err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*missed), "ns/msg")
		})
	}
}

// publishMissed publishes 1+missed chat messages to topic through node and
// returns the first one's position: the last the client saw. With durable
// the last message is emitted with durable, so that all are stored in
// PostgreSQL when it returns.
func publishMissed(b *testing.B, node *testenv.Node, topic string, missed int, durable bool) protocol.Position {
	b.Helper()
	item := func(n int) emitItem {
		return emitItem{Topic: topic, Event: "message", Data: json.RawMessage(fmt.Sprintf(`{"text":"message %d of a busy chat room, as long as a short sentence","user":"user-%d"}`, n, n%50))}
	}
	first, err := tryEmitBatch(node, []emitItem{item(1)})
	if err != nil {
		b.Fatal(err)
	}
	items := make([]emitItem, missed-1)
	for i := range items {
		items[i] = item(i + 2)
	}
	if _, err := tryEmitBatch(node, items); err != nil {
		b.Fatal(err)
	}
	last := item(missed + 1)
	status, body, err := tryPost(node, "/api/v1/emit", apiKey, map[string]any{"topic": topic, "event": last.Event, "data": last.Data, "durable": durable})
	if err != nil || status != http.StatusOK {
		b.Fatalf("emit: %d %s %v", status, body, err)
	}
	var pos protocol.Position
	if err := json.Unmarshal(body, &pos); err != nil || pos.Seq != uint64(missed)+1 || pos.Epoch != first[0].Epoch {
		b.Fatalf("the last message is at %s (%v), want seq %d of epoch %s", body, err, missed+1, first[0].Epoch)
	}
	return protocol.Position{Epoch: first[0].Epoch, Seq: first[0].Seq}
}

// connectLite opens a bare WebSocket to node and connects anonymously.
func connectLite(b *testing.B, node *testenv.Node) *bench.Conn {
	b.Helper()
	c, err := dialLite(node, 10*time.Second)
	if err != nil {
		b.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if err := c.WriteText([]byte(`{"type":"connect","ref":"c"}`)); err != nil {
		c.Close()
		b.Fatal(err)
	}
	msg, err := c.ReadMessage(nil)
	if err != nil || !bytes.Contains(msg, []byte(`"ok":true`)) {
		c.Close()
		b.Fatalf("connect: %s %v", msg, err)
	}
	return c
}

// recoverSince subscribes to topic with since and reads until n events
// arrived, which must be the reply (recovered) and then seqs since.Seq+1
// to since.Seq+n.
func recoverSince(c *bench.Conn, topic string, since protocol.Position, n int) error {
	sub := fmt.Sprintf(`{"type":"subscribe","ref":"s","topic":%q,"since":{"epoch":%q,"seq":%d}}`, topic, since.Epoch, since.Seq)
	if err := c.WriteText([]byte(sub)); err != nil {
		return err
	}
	var err error
	replied, got, next := false, 0, since.Seq+1
	var msg []byte
	for got < n && err == nil { // bounded by the connection's deadline
		if msg, err = c.ReadMessage(msg[:0]); err != nil {
			return fmt.Errorf("after %d events: %w", got, err)
		}
		protocol.Lines(msg, func(line []byte) {
			switch {
			case err != nil:
			case bytes.HasPrefix(line, eventPrefix):
				_, seq, _, ok := parseEvent(line)
				switch {
				case !replied:
					err = fmt.Errorf("an event before the subscribe reply: %s", line)
				case !ok || seq != next:
					err = fmt.Errorf("event %d: want seq %d, got %s", got, next, line)
				}
				next++
				got++
			default:
				var rep protocol.Reply
				var res protocol.SubscribeResult
				if e := json.Unmarshal(line, &rep); e != nil || rep.Ref != "s" || !rep.OK {
					err = fmt.Errorf("unexpected message %s", line)
				} else if e := json.Unmarshal(rep.Data, &res); e != nil || !res.Recovered {
					err = fmt.Errorf("subscribe reply %s: not recovered", rep.Data)
				}
				replied = true
			}
		})
	}
	return err
}

// BenchmarkStreamLatency measures how long a token takes from the
// application server to a thousand watchers: 1,000 bare WebSocket
// watchers spread over three gateways (built without -race) subscribe to
// one topic; a POST /api/v1/stream to the first gateway then carries 2,000
// tokens written at a steady pace, each token's data holding the time it
// was written to the request body. Every watcher notes, for every token,
// the time it read the frame holding it minus that send time; p50, p90,
// p99 and max are over all 2,000,000 deliveries of a stream. tokens/s is
// the pace the stream body was actually written at: a gateway that reads
// the body slower holds the writer back. ns/op is one whole stream, to the
// last watcher's .end. The cases:
//
//   - rate=50: one message per token at 50 tokens a second, a fast
//     language model's pace;
//   - rate=500: one message per token at 500 a second, half a million
//     deliveries a second, more than two cores running the gateways and
//     the watchers can carry;
//   - rate=500,rollup=40ms: the same with rollup, so each message carries
//     the tokens of 40 ms.
//
// Run it alone:
//
//	go test -run '^$' -bench StreamLatency -benchtime 1x ./e2e
func BenchmarkStreamLatency(b *testing.B) {
	const watchers, tokens, topic = 1000, 2000, "ai/latency"
	nodes := benchCluster(b, nil, 3, streamEnv)
	ws := startLatencyWatchers(b, nodes, topic, watchers)
	streams := int64(0) // streams started on topic
	for _, c := range []struct {
		name   string
		rate   int           // tokens a second
		rollup time.Duration // 0: one message per token
	}{
		{"rate=50", 50, 0},
		{"rate=500", 500, 0},
		{"rate=500,rollup=40ms", 500, 40 * time.Millisecond},
	} {
		b.Run(c.name, func(b *testing.B) {
			for _, w := range ws {
				w.take() // what an earlier run left
			}
			var wrote time.Duration
			for i := 0; i < b.N; i++ {
				streams++
				d, err := streamTimedTokens(nodes[0], topic, tokens, time.Second/time.Duration(c.rate), c.rollup)
				if err != nil {
					b.Fatal(err)
				}
				wrote += d
				// Bounded: every watcher has a minute after the answer.
				testenv.Eventually(b, time.Minute, func() bool {
					for _, w := range ws {
						if w.ends.Load() < streams && !w.finished() {
							return false
						}
					}
					return true
				}, "not every watcher saw the end of stream %d", streams)
			}
			b.StopTimer()
			all := make([]int64, 0, watchers*tokens*b.N)
			for n, w := range ws {
				if w.finished() {
					b.Fatalf("watcher %d stopped: %v", n, w.err)
				}
				lat := w.take()
				if len(lat) != tokens*b.N {
					b.Fatalf("watcher %d received %d tokens, want %d", n, len(lat), tokens*b.N)
				}
				all = append(all, lat...)
			}
			slices.Sort(all)
			ms := func(q float64) float64 {
				return float64(all[min(len(all)-1, int(q*float64(len(all))))]) / float64(time.Millisecond)
			}
			b.ReportMetric(ms(0.50), "p50-ms")
			b.ReportMetric(ms(0.90), "p90-ms")
			b.ReportMetric(ms(0.99), "p99-ms")
			b.ReportMetric(ms(1), "max-ms")
			b.ReportMetric(float64(tokens*b.N)/wrote.Seconds(), "tokens/s")
		})
	}
}

// latencyWatcher is a bare WebSocket subscriber that records, for each
// token, the time its frame was read minus the send time in its data.
type latencyWatcher struct {
	conn    *bench.Conn
	done    chan struct{} // closed when the reader stops
	ends    atomic.Int64  // .end events seen
	closing atomic.Bool   // stop was called: the read error that follows is expected

	mu  sync.Mutex
	lat []int64 // guarded by mu: nanoseconds from send to receipt, one per token received

	// The reader goroutine's own until done is closed.
	next uint64 // the index the next token must have
	err  error  // the first thing that went wrong
}

var tsKey = []byte(`"ts":`)

// startLatencyWatchers connects n watchers to topic, spread round robin
// over nodes, 16 at a time, and returns once every one is subscribed. The
// benchmark's end closes them.
func startLatencyWatchers(b *testing.B, nodes []*testenv.Node, topic string, n int) []*latencyWatcher {
	b.Helper()
	var mu sync.Mutex
	var started []*latencyWatcher
	b.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, w := range started {
			w.stop()
		}
	})
	return connectAll(b, n, func(i int) (*latencyWatcher, error) {
		w, err := newLatencyWatcher(nodes[i%len(nodes)], topic)
		if err == nil {
			mu.Lock()
			started = append(started, w)
			mu.Unlock()
		}
		return w, err
	})
}

// newLatencyWatcher connects anonymously, subscribes to topic and starts
// the reader; it returns once the subscribe reply arrived.
func newLatencyWatcher(node *testenv.Node, topic string) (*latencyWatcher, error) {
	c, err := dialLite(node, 15*time.Second)
	if err != nil {
		return nil, err
	}
	w := &latencyWatcher{conn: c, done: make(chan struct{})}
	sub := fmt.Sprintf(`{"type":"subscribe","ref":"s","topic":%q}`, topic)
	if err := c.WriteText([]byte(`{"type":"connect","ref":"c"}` + "\n" + sub)); err != nil {
		c.Close()
		return nil, err
	}
	subscribed := make(chan error, 1)
	go w.read(subscribed)
	select {
	case err = <-subscribed:
	case <-time.After(15 * time.Second):
		err = errors.New("no subscribe reply within 15s")
	}
	if err != nil {
		w.stop()
		return nil, err
	}
	return w, nil
}

// take returns the latencies recorded since the last take.
func (w *latencyWatcher) take() []int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	lat := w.lat
	w.lat = nil
	return lat
}

// stop closes the connection and waits for the reader.
func (w *latencyWatcher) stop() {
	w.closing.Store(true)
	w.conn.Close()
	<-w.done
}

func (w *latencyWatcher) finished() bool {
	select {
	case <-w.done:
		return true
	default:
		return false
	}
}

// read consumes the connection until it is closed or something goes
// wrong, and reports the subscribe reply (or the error before it) on
// subscribed.
func (w *latencyWatcher) read(subscribed chan<- error) {
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
	for w.err == nil {
		var err error
		if msg, err = w.conn.ReadMessage(msg[:0]); err != nil {
			if !w.closing.Load() {
				fail("after token %d: %v", w.next, err)
			}
			return
		}
		now := time.Now().UnixNano()
		w.mu.Lock()
		protocol.Lines(msg, func(line []byte) {
			if w.err != nil {
				return
			}
			if bytes.HasPrefix(line, eventPrefix) {
				w.event(line, now, fail)
				return
			}
			var m struct {
				protocol.Reply
				Code   int    `json:"code"`
				Reason string `json:"reason"`
			}
			switch err := json.Unmarshal(line, &m); {
			case err != nil:
				fail("unreadable message %s", line)
			case m.Type == protocol.TypeDisconnect:
				fail("disconnected at token %d: %d %s", w.next, m.Code, m.Reason)
			case m.Type != protocol.TypeReply || !m.OK:
				fail("unexpected message %s", line)
			case m.Ref == "s":
				subscribed <- nil
			}
		})
		w.mu.Unlock()
	}
}

// event records the latency of each token in one event, whose data is a
// token {"i":I,"ts":T,...} or, with rollup, an array of them. Tokens must
// come in order, from 0 in each stream. The caller holds mu.
func (w *latencyWatcher) event(line []byte, now int64, fail func(string, ...any)) {
	name, _, data, ok := parseEvent(line)
	if !ok {
		fail("unreadable event %s", line)
		return
	}
	switch name {
	case "token":
		for n := 0; ; n++ {
			k := bytes.Index(data, indexKey)
			if k < 0 {
				if n == 0 {
					fail("token without index: %s", line)
				}
				return
			}
			data = data[k+len(indexKey):]
			i, ok1 := leadingInt(data)
			t := bytes.Index(data, tsKey)
			if t < 0 {
				fail("token without time: %s", line)
				return
			}
			data = data[t+len(tsKey):]
			sent, ok2 := leadingInt(data)
			switch {
			case !ok1 || !ok2:
				fail("unreadable token in %s", line)
				return
			case uint64(i) != w.next:
				fail("token %d arrived when %d was due", i, w.next)
				return
			}
			w.lat = append(w.lat, now-sent)
			w.next++
		}
	case "token.end":
		w.next = 0
		w.ends.Add(1)
	default:
		fail("unexpected event %s", line)
	}
}

// leadingInt reads the decimal digits b starts with.
func leadingInt(b []byte) (int64, bool) {
	n := 0
	for n < len(b) && b[n] >= '0' && b[n] <= '9' {
		n++
	}
	v, err := strconv.ParseInt(string(b[:n]), 10, 64)
	return v, err == nil
}

// streamTimedTokens POSTs n tokens to node's stream endpoint (with rollup
// unless 0), one due every pace, each {"i":I,"ts":T,"t":" wordI"} with T the
// Unix nanoseconds when it is written to the request body. It returns how
// long writing the body took, once the gateway answered 200 (bounded: a
// minute past the stream's planned length).
func streamTimedTokens(node *testenv.Node, topic string, n int, pace, rollup time.Duration) (time.Duration, error) {
	pr, pw := io.Pipe()
	defer pw.CloseWithError(errors.New("benchmark over")) // unblocks the writer
	q := url.Values{"topic": {topic}, "event": {"token"}}
	if rollup > 0 {
		q.Set("rollup", rollup.String())
	}
	req, err := http.NewRequest(http.MethodPost, node.URL()+"/api/v1/stream?"+q.Encode(), pr)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+apiKey)
	req.Header.Set("Content-Type", "application/x-ndjson")
	answer := make(chan streamAnswer, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			answer <- streamAnswer{err: err}
			return
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		answer <- streamAnswer{status: resp.StatusCode, body: body, err: err}
	}()
	wrote := make(chan time.Duration, 1)
	go func() {
		// Token i is due at start + i*pace; one written late (this
		// goroutine waited for a core, or the gateway read the body
		// slowly) does not delay the ones after it, so the average pace
		// holds when the machine allows it.
		line := make([]byte, 0, 64)
		start := time.Now()
		for i := range n {
			time.Sleep(time.Until(start.Add(time.Duration(i) * pace))) // pacing the model, not waiting for a condition
			line = fmt.Appendf(line[:0], "{\"i\":%d,\"ts\":%d,\"t\":\" word%d\"}\n", i, time.Now().UnixNano(), i)
			if _, err := pw.Write(line); err != nil {
				return // the request failed; its answer says why
			}
		}
		wrote <- time.Since(start)
		pw.Close()
	}()
	var a streamAnswer
	select {
	case a = <-answer:
	case <-time.After(time.Duration(n)*pace + time.Minute):
		return 0, errors.New("no answer to the stream")
	}
	if a.err != nil || a.status != http.StatusOK {
		return 0, fmt.Errorf("stream answer: %d %s %v", a.status, a.body, a.err)
	}
	var sum streamSummary
	if err := json.Unmarshal(a.body, &sum); err != nil || sum.Count == 0 || rollup == 0 && sum.Count != uint64(n) {
		return 0, fmt.Errorf("stream answer %s (%v), want %d tokens", a.body, err, n)
	}
	return <-wrote, nil // the body ended, so the writer sent it
}
