package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/updraft/updraft/internal/testenv"
	"github.com/updraft/updraft/protocol"
)

// One subscriber must not be able to exhaust a node: recovery from durable
// history and history replies are bounded by a page and by the outbox, not
// by what is asked for.

// tryMetric reads one series from a node's /metrics, for goroutines other
// than the test's.
func tryMetric(node *testenv.Node, series string) (float64, error) {
	resp, err := http.Get(node.URL() + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(rest), 64)
		}
	}
	return 0, fmt.Errorf("no series %s", series)
}

// peakSampler polls a node's series until stopped and keeps the highest
// value seen.
type peakSampler struct {
	stop chan struct{}
	done chan struct{}
	peak float64
}

func samplePeak(node *testenv.Node, series string) *peakSampler {
	p := &peakSampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			if v, err := tryMetric(node, series); err == nil {
				p.peak = max(p.peak, v)
			}
			select {
			case <-p.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return p
}

// end stops the sampler and returns the peak.
func (p *peakSampler) end() float64 {
	close(p.stop)
	<-p.done
	return p.peak
}

// fillDurable emits total messages of size bytes of data to topic in
// batches, then one durable emit: once that is answered, every message
// before it is in PostgreSQL. It returns the topic's epoch.
func fillDurable(t *testing.T, node *testenv.Node, topic string, total, size int) string {
	t.Helper()
	data := json.RawMessage(`"` + strings.Repeat("x", size) + `"`)
	per := min(1000, 900_000/(size+64))
	var epoch string
	for sent := 0; sent < total; {
		items := make([]emitItem, min(per, total-sent))
		for i := range items {
			items[i] = emitItem{Topic: topic, Event: "m", Data: data}
		}
		res := emitBatch(t, node, items)
		epoch = res[0].Epoch
		sent += len(items)
	}
	status, body := post(t, node, "/api/v1/emit", apiKey, map[string]any{"topic": "durable/flush", "event": "m", "data": 1, "durable": true})
	if status != http.StatusOK {
		t.Fatalf("durable emit: %d %s", status, body)
	}
	return epoch
}

// subscribeSince subscribes c to topic from since and returns the reply.
func (r *rawConn) subscribeSince(ref, topic, epoch string, seq uint64) protocol.SubscribeResult {
	r.t.Helper()
	rep := r.replyTo(ref, fmt.Sprintf(`{"type":"subscribe","ref":%q,"topic":%q,"since":{"epoch":%q,"seq":%d}}`, ref, topic, epoch, seq))
	var res protocol.SubscribeResult
	if !rep.OK || json.Unmarshal(rep.Data, &res) != nil {
		r.t.Fatalf("subscribe %s since %d: %s %+v", topic, seq, rep.Data, rep.Error)
	}
	return res
}

// readSeqs reads the next n events of topic and returns their seqs.
func (r *rawConn) readSeqs(topic string, n int) ([]uint64, error) {
	seqs := make([]uint64, 0, n)
	for len(seqs) < n {
		m, err := r.next(15 * time.Second)
		if err != nil {
			return seqs, err
		}
		var ev protocol.Event
		if json.Unmarshal(m, &ev) == nil && ev.Type == protocol.TypeEvent && ev.Topic == topic {
			seqs = append(seqs, ev.Seq)
		}
	}
	return seqs, nil
}

// TestRecoveryPagesDurableHistory: a persistent topic holds 30,000
// messages of 2 KB, Redis only the last 100. A since recovery under
// UPDRAFT_MAX_RECOVERY replays from PostgreSQL every message in order,
// with no gap and no duplicate against messages published meanwhile; one
// over it answers recovered:false at once; and eight subscribers
// recovering 24,800 messages (50 MB) each at once do not grow the node's
// heap by what they recover: it used to read each gap whole (LIMIT
// 2^30), 215 MB per subscribe of 150,000 messages.
func TestRecoveryPagesDurableHistory(t *testing.T) {
	pg := testenv.StartPostgres(t)
	_, nodes := startCluster(t, 1, map[string]string{
		"UPDRAFT_HISTORY_SIZE":   "100",
		"UPDRAFT_DATABASE_URL":   pg.URL(),
		"UPDRAFT_PERSIST_TOPICS": "chat/**",
		"UPDRAFT_MAX_RECOVERY":   "25000",
		"UPDRAFT_MAX_MESSAGE":    "1048576", // batches of 1000 messages
	})
	node := nodes[0]
	const topic, total, size = "chat/long", 30000, 2000
	epoch := fillDurable(t, node, topic, total, size)

	// Under the limit, with a publisher adding 300 more meanwhile: they
	// are held while the replay runs and follow it.
	c := dialRaw(t, node.WSURL(), nil)
	c.connect("")
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for range 30 {
			items := make([]emitItem, 10)
			for i := range items {
				items[i] = emitItem{Topic: topic, Event: "live", Data: json.RawMessage(`1`)}
			}
			if _, err := tryEmitBatch(node, items); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	res := c.subscribeSince("s1", topic, epoch, 6000)
	if !res.Recovered || res.Epoch != epoch || res.Seq < total {
		t.Fatalf("since 6000 of %d: %+v, want recovered", total, res)
	}
	wg.Wait()
	want := seqRange(6001, total+300)
	got, err := c.readSeqs(topic, len(want))
	if err != nil {
		t.Fatalf("after %d of %d events: %v", len(got), len(want), err)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("event %d has seq %d, want %d", i, got[i], want[i])
		}
	}

	// Eight subscribers at once, each replaying 24,800 messages (50 MB).
	const subscribers, from = 8, total - 24500
	base, err := tryMetric(node, "go_memstats_heap_inuse_bytes")
	if err != nil {
		t.Fatal(err)
	}
	peak := samplePeak(node, "go_memstats_heap_inuse_bytes")
	start := time.Now()
	errs := make(chan error, subscribers)
	for i := range subscribers {
		r := dialRaw(t, node.WSURL(), nil)
		r.send(`{"type":"connect","ref":"c"}` + "\n" +
			fmt.Sprintf(`{"type":"subscribe","ref":"s","topic":%q,"since":{"epoch":%q,"seq":%d}}`, topic, epoch, from))
		go func() {
			seqs, err := r.readSeqs(topic, total+300-from)
			if err == nil && (seqs[0] != from+1 || seqs[len(seqs)-1] != total+300) {
				err = fmt.Errorf("subscriber %d: seqs %d..%d", i, seqs[0], seqs[len(seqs)-1])
			}
			errs <- err
		}()
	}
	for range subscribers {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	elapsed := time.Since(start)
	grew := peak.end() - base
	t.Logf("%d subscribers recovered %d messages of %d bytes each in %v: heap in use grew by %.0f MB at most (from %.0f MB)",
		subscribers, total+300-from, size, elapsed.Round(time.Millisecond), grew/1e6, base/1e6)
	// 8 x 50 MB recovered, which the old code held at once (and more:
	// the rows as read and as encoded); now each subscriber holds a page
	// of about 4 MiB, its encoding and an outbox of 8 MiB: 130-180 MB
	// with the garbage of pages already sent.
	if grew > 400e6 {
		t.Fatalf("the heap grew by %.0f MB while %d subscribers recovered: replay is not paged", grew/1e6, subscribers)
	}

	// Over the limit: recovered:false, nothing replayed, live goes on.
	c2 := dialRaw(t, node.WSURL(), nil)
	c2.connect("")
	res = c2.subscribeSince("s2", topic, epoch, 1)
	if res.Recovered || res.Seq != total+300 {
		t.Fatalf("since 1 with %d messages over a limit of 25000: %+v, want recovered:false", total+300, res)
	}
	emitBatch(t, node, []emitItem{{Topic: topic, Event: "live", Data: json.RawMessage(`2`)}})
	if seqs, err := c2.readSeqs(topic, 1); err != nil || seqs[0] != total+301 {
		t.Fatalf("after recovered:false the next event is %v (%v), want seq %d", seqs, err, total+301)
	}
}

// TestHistoryRepliesBoundedByOutbox: 20 connections that never read each
// ask 10 times for 1,000 messages of 60 KB. A reply holds at most half
// the outbox, counts against it, and a connection over it is closed with
// 4008; the node's queued bytes stay under UPDRAFT_NODE_QUEUE_BYTES. They
// used to grow the node by 2.9 GB: each reply was built whole (60 MB),
// and one item larger than the outbox passed into an empty one.
func TestHistoryRepliesBoundedByOutbox(t *testing.T) {
	const nodeCap = 64 << 20
	// Without the race detector: it would make the 4 MB replies the
	// bottleneck, and its memory the figure.
	_, nodes := startLoadCluster(t, 1, map[string]string{
		"UPDRAFT_MAX_MESSAGE":      "1048576", // batches of 250 large messages
		"UPDRAFT_NODE_QUEUE_BYTES": strconv.Itoa(nodeCap),
		"UPDRAFT_PPROF":            "true",
	})
	node := nodes[0]
	const topic, total, size = "news/big", 1000, 60000
	data := json.RawMessage(`"` + strings.Repeat("x", size) + `"`)
	for sent := 0; sent < total; sent += 200 {
		items := make([]emitItem, 200)
		for i := range items {
			items[i] = emitItem{Topic: topic, Event: "m", Data: data}
		}
		emitBatch(t, node, items)
	}

	// A connection that reads gets the newest messages that fit half the
	// outbox, and pages on.
	c := dialRaw(t, node.WSURL(), nil)
	c.connect("")
	rep := c.replyTo("h", `{"type":"history","ref":"h","topic":"`+topic+`","limit":1000}`)
	var page historyPage
	if err := json.Unmarshal(rep.Data, &page); err != nil || !rep.OK {
		t.Fatalf("history: %v %+v", err, rep.Error)
	}
	if n := len(page.Messages); n == 0 || n >= total || page.Messages[n-1].Seq != total || len(rep.Data) > 4<<20+64<<10 {
		t.Fatalf("history of 1000 x 60 KB: %d messages in %d bytes; want the newest that fit 4 MiB", n, len(rep.Data))
	}
	c.alive()

	rss0, _ := tryMetric(node, "process_resident_memory_bytes")
	heap0, _ := tryMetric(node, "go_memstats_heap_inuse_bytes")
	closes0, _ := tryMetric(node, `updraft_server_closes_total{code="4008"}`)
	queued := samplePeak(node, "updraft_queued_bytes")
	heap := samplePeak(node, "go_memstats_heap_inuse_bytes")
	const conns, asks = 20, 10
	hogs := make([]*websocket.Conn, conns)
	for i := range hogs {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		ws, _, err := websocket.Dial(ctx, node.WSURL(), &websocket.DialOptions{Subprotocols: []string{protocol.Subprotocol}})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ws.CloseNow() })
		hogs[i] = ws
		// One frame holding every request; the connection never reads.
		var b strings.Builder
		b.WriteString(`{"type":"connect","ref":"c"}`)
		for k := range asks {
			fmt.Fprintf(&b, "\n"+`{"type":"history","ref":"h%d","topic":%q,"limit":1000}`, k, topic)
		}
		ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
		err = ws.Write(ctx, websocket.MessageText, []byte(b.String()))
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
	for deadline := time.Now().Add(60 * time.Second); ; {
		n, _ := tryMetric(node, `updraft_server_closes_total{code="4008"}`)
		if n-closes0 >= conns {
			break
		}
		if time.Now().After(deadline) {
			q, _ := tryMetric(node, "updraft_queued_bytes")
			t.Fatalf("after 60s %.0f of %d connections that never read were closed with 4008; %.0f bytes queued", n-closes0, conns, q)
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
	peakQueued, peakHeap := queued.end(), heap.end()
	rssPeak, _ := tryMetric(node, "process_resident_memory_bytes")
	if peakQueued > nodeCap+4<<20 {
		t.Fatalf("the node queued %.0f MB, over its cap of %d MB", peakQueued/1e6, nodeCap>>20)
	}
	for _, ws := range hogs {
		ws.CloseNow()
	}
	for deadline := time.Now().Add(30 * time.Second); ; {
		left, _ := tryMetric(node, "updraft_queued_bytes")
		open, _ := tryMetric(node, "updraft_connections")
		if left == 0 && open == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("30s after the connections were gone: %.0f bytes queued, %.0f connections open", left, open)
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
	c.alive()

	// After they closed: what the heap holds, and what the process keeps
	// from the OS, before and after a forced collection.
	heapAfter, _ := tryMetric(node, "go_memstats_heap_inuse_bytes")
	rssAfter, _ := tryMetric(node, "process_resident_memory_bytes")
	for range 2 { // the second empties what sync.Pools kept through the first
		if resp, err := http.Get(node.URL() + "/debug/pprof/heap?gc=1"); err == nil {
			resp.Body.Close()
		}
	}
	heapGC, _ := tryMetric(node, "go_memstats_heap_inuse_bytes")
	idleGC, _ := tryMetric(node, "go_memstats_heap_idle_bytes")
	releasedGC, _ := tryMetric(node, "go_memstats_heap_released_bytes")
	rssGC, _ := tryMetric(node, "process_resident_memory_bytes")
	t.Logf("%d connections x %d history requests of 1000 x 60 KB: queued at most %.0f MB (cap %d MB); heap in use %.0f -> peak %.0f -> %.0f MB after close -> %.0f MB after GC (idle %.0f MB, released %.0f MB); RSS %.0f -> %.0f -> %.0f -> %.0f MB",
		conns, asks, peakQueued/1e6, nodeCap>>20, heap0/1e6, peakHeap/1e6, heapAfter/1e6, heapGC/1e6, idleGC/1e6, releasedGC/1e6,
		rss0/1e6, rssPeak/1e6, rssAfter/1e6, rssGC/1e6)
	// Not a leak: once collected, the heap is back near where it began.
	// What stays resident is the runtime's (see docs/benchmarks.md).
	if heapGC-heap0 > 100e6 {
		t.Fatalf("%.0f MB more heap in use after the connections closed and a collection", (heapGC-heap0)/1e6)
	}
	if peakHeap-heap0 > 1e9 {
		t.Fatalf("the heap grew by %.0f MB for %d connections that never read", (peakHeap-heap0)/1e6, conns)
	}
}
