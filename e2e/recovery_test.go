package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/updraft/updraft/client"
	"github.com/updraft/updraft/internal/testenv"
	"github.com/updraft/updraft/protocol"
)

// publisher emits to topic at about rate messages per second until stopped
// or max messages are out: one worker per node, each sending batches of 50
// through its node, recording the highest seq published.
type publisher struct {
	last atomic.Uint64
	sent atomic.Int64
	err  atomic.Value
	stop chan struct{}
	done chan struct{}
}

func startPublisher(nodes []*testenv.Node, topic string, rate, max int) *publisher {
	p := &publisher{stop: make(chan struct{}), done: make(chan struct{})}
	const batch = 50
	interval := time.Second * batch * time.Duration(len(nodes)) / time.Duration(rate)
	var wg sync.WaitGroup
	for _, node := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(interval)
			defer tick.Stop()
			for p.sent.Load() < int64(max) {
				select {
				case <-p.stop:
					return
				case <-tick.C:
				}
				items := make([]emitItem, batch)
				for j := range items {
					items[j] = emitItem{Topic: topic, Event: "message", Data: json.RawMessage(`{"text":"hello"}`)}
				}
				res, err := tryEmitBatch(node, items)
				if err != nil {
					p.err.Store(err)
					return
				}
				for seq := res[len(res)-1].Seq; ; {
					cur := p.last.Load()
					if seq <= cur || p.last.CompareAndSwap(cur, seq) {
						break
					}
				}
				p.sent.Add(batch)
			}
		}()
	}
	go func() { wg.Wait(); close(p.done) }()
	return p
}

func (p *publisher) halt(t *testing.T) uint64 {
	t.Helper()
	close(p.stop)
	<-p.done
	if err, _ := p.err.Load().(error); err != nil {
		t.Fatalf("publisher: %v", err)
	}
	return p.last.Load()
}

// TestGapFreeRecovery: a publisher at 2,000 messages/s on one topic while
// 50 clients, each behind its own balancer over three nodes, lose their
// connection 20 times each at random moments and come back with since:
// every client ends with every seq exactly once, in order.
func TestGapFreeRecovery(t *testing.T) {
	_, nodes := startLoadCluster(t, 3, map[string]string{"UPDRAFT_HISTORY_SIZE": "50000"})
	const topic, clients, cuts = "chat/fire", 50, 20
	addrs := make([]string, len(nodes))
	for i, n := range nodes {
		addrs[i] = n.Addr()
	}

	type watcher struct {
		col     *collector
		lb      *testenv.Proxy
		c       *client.Client
		resub   atomic.Int64 // resubscriptions
		lost    atomic.Int64 // resubscriptions answered recovered:false
		cuts    atomic.Int64 // cuts that found a connection to cut
		lastCut atomic.Int64 // unix nanos of the last effective cut
		lastSub atomic.Int64 // unix nanos of the last resubscription
	}
	ws := make([]*watcher, clients)
	for i := range ws {
		w := &watcher{col: newCollector(), lb: testenv.StartProxy(t, addrs...)}
		w.c = dial(t, w.lb.WSURL(), client.Options{MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
		if _, err := w.c.Subscribe(context.Background(), topic, w.col.handle, client.WithSince(protocol.Position{}),
			client.WithOnResubscribe(func(res protocol.SubscribeResult, err error) {
				if err == nil {
					w.lastSub.Store(time.Now().UnixNano())
					w.resub.Add(1)
					if !res.Recovered {
						w.lost.Add(1)
					}
				}
			})); err != nil {
			t.Fatal(err)
		}
		ws[i] = w
	}

	started := time.Now()
	pub := startPublisher(nodes, topic, 2000, 60000)
	// Every client loses its connection 20 times, each at a random moment
	// 100-400 ms after it had resubscribed from the previous cut. Bounded:
	// 20 cuts per client, each wait at most 20 s.
	var wg sync.WaitGroup
	for i, w := range ws {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(i), 7))
			for range cuts {
				deadline := time.Now().Add(20 * time.Second)
				for w.lastSub.Load() < w.lastCut.Load() && time.Now().Before(deadline) {
					time.Sleep(10 * time.Millisecond) // polling the resubscription, bounded above
				}
				time.Sleep(time.Duration(100+r.IntN(300)) * time.Millisecond) // a random moment, by design
				if w.lb.Cut() > 0 {
					w.lastCut.Store(time.Now().UnixNano())
					w.cuts.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	testenv.Eventually(t, 30*time.Second, func() bool {
		for _, w := range ws {
			if w.lastSub.Load() < w.lastCut.Load() || w.c.Status() != client.StatusConnected {
				return false
			}
		}
		return true
	}, "clients did not all resubscribe after their cuts")
	// Keep publishing a moment after the last resubscription, then stop.
	target := pub.last.Load() + 200
	testenv.Eventually(t, 10*time.Second, func() bool { return pub.last.Load() >= target }, "publisher stalled")
	final := pub.halt(t)
	var totalCuts, totalResubs int64
	for _, w := range ws {
		totalCuts += w.cuts.Load()
		totalResubs += w.resub.Load()
	}
	t.Logf("%d messages (%.0f/s); %d cuts and %d recovered resubscriptions over %d clients", final, float64(final)/time.Since(started).Seconds(), totalCuts, totalResubs, clients)

	for i, w := range ws {
		if w.cuts.Load() != cuts || w.resub.Load() < cuts {
			t.Fatalf("client %d: only %d effective cuts and %d resubscriptions", i, w.cuts.Load(), w.resub.Load())
		}
		if n := w.lost.Load(); n != 0 {
			t.Fatalf("client %d: %d of its resubscriptions were not recovered", i, n)
		}
		testenv.Eventually(t, 30*time.Second, func() bool { return w.col.count(topic) >= int(final) },
			"client %d received %d of %d messages", i, w.col.count(topic), final)
		w.col.checkExactly(t, fmt.Sprintf("client %d", i), topic, seqRange(1, final))
	}
}

// TestRecoveryEdges covers rewind, since at the edges of history, a new
// epoch after a Redis flush, and bad history requests.
func TestRecoveryEdges(t *testing.T) {
	r, nodes := startCluster(t, 2, map[string]string{"UPDRAFT_HISTORY_SIZE": "100"})
	const topic = "chat/edges"
	emitN := func(n int) []emitResult {
		items := make([]emitItem, n)
		for i := range items {
			items[i] = emitItem{Topic: topic, Event: "message"}
		}
		return emitBatch(t, nodes[0], items)
	}
	subscribe := func(c *rawConn, ref, extra string) protocol.SubscribeResult {
		t.Helper()
		rep := c.replyTo(ref, `{"type":"subscribe","ref":"`+ref+`","topic":"`+topic+`"`+extra+`}`)
		if !rep.OK {
			t.Fatalf("subscribe %s: %+v", extra, rep.Error)
		}
		var res protocol.SubscribeResult
		json.Unmarshal(rep.Data, &res)
		return res
	}
	// events reads exactly n events, then checks nothing more arrives for
	// a moment by sending a ping and seeing its reply first.
	events := func(c *rawConn, n int) []uint64 {
		t.Helper()
		var seqs []uint64
		for len(seqs) < n {
			m, err := c.next(5 * time.Second)
			if err != nil {
				t.Fatalf("after %d of %d events: %v", len(seqs), n, err)
			}
			var ev protocol.Event
			if json.Unmarshal(m, &ev) == nil && ev.Type == protocol.TypeEvent {
				seqs = append(seqs, ev.Seq)
			}
		}
		if rep := c.replyTo("quiet", `{"type":"ping","ref":"quiet"}`); !rep.OK {
			t.Fatal(rep.Error)
		}
		return seqs
	}
	connected := func(node *testenv.Node) *rawConn {
		c := dialRaw(t, node.WSURL(), nil)
		c.connect("")
		return c
	}

	t.Run("since on a topic never published", func(t *testing.T) {
		c := connected(nodes[1])
		if res := subscribe(c, "s1", `,"since":{"epoch":"nope","seq":5}`); res.Recovered || res.Seq != 0 {
			t.Fatalf("since on an empty topic: %+v, want recovered:false at seq 0", res)
		}
		c2 := connected(nodes[1])
		if res := subscribe(c2, "s2", `,"since":{"epoch":"","seq":0}`); !res.Recovered {
			t.Fatalf("since from the start of an empty topic: %+v, want recovered", res)
		}
	})

	res := emitN(50)
	epoch := res[0].Epoch
	t.Run("rewind", func(t *testing.T) {
		c := connected(nodes[1])
		got := subscribe(c, "r", `,"rewind":10`)
		if !got.Recovered || got.Seq != 50 || got.Epoch != epoch {
			t.Fatalf("rewind reply %+v", got)
		}
		if seqs := events(c, 10); seqs[0] != 41 || seqs[9] != 50 {
			t.Fatalf("rewind 10 delivered %v, want 41..50", seqs)
		}
		// The Go client asks for it with WithRewind.
		col := newCollector()
		gc := dial(t, nodes[0].WSURL(), client.Options{})
		if _, err := gc.Subscribe(context.Background(), topic, col.handle, client.WithRewind(5)); err != nil {
			t.Fatal(err)
		}
		emitN(1)
		if seqs := events(c, 1); seqs[0] != 51 {
			t.Fatalf("live after rewind: %v, want 51", seqs)
		}
		testenv.Eventually(t, 5*time.Second, func() bool { return col.count(topic) == 6 }, "Go client with WithRewind(5)")
		col.checkExactly(t, "Go client", topic, seqRange(46, 51))
	})
	t.Run("since within history", func(t *testing.T) {
		c := connected(nodes[0])
		got := subscribe(c, "s", `,"since":{"epoch":"`+epoch+`","seq":45}`)
		if !got.Recovered {
			t.Fatalf("since 45: %+v", got)
		}
		if seqs := events(c, 6); seqs[0] != 46 || seqs[5] != 51 {
			t.Fatalf("since 45 delivered %v, want 46..51", seqs)
		}
	})
	t.Run("since beyond history", func(t *testing.T) {
		emitN(100) // history keeps 100: seqs 52..151 remain
		c := connected(nodes[0])
		if got := subscribe(c, "s", `,"since":{"epoch":"`+epoch+`","seq":20}`); got.Recovered || got.Seq != 151 {
			t.Fatalf("since 20 with history from 52: %+v, want recovered:false at 151", got)
		}
		if rep := c.replyTo("p", `{"type":"ping","ref":"p"}`); !rep.OK {
			t.Fatal(rep.Error)
		}
		// Nothing was replayed: the ping's reply came first.
		c2 := connected(nodes[0])
		if got := subscribe(c2, "s", `,"since":{"epoch":"`+epoch+`","seq":51}`); !got.Recovered {
			t.Fatalf("since 51 with history from 52: %+v, want recovered", got)
		}
		if seqs := events(c2, 100); seqs[0] != 52 || seqs[99] != 151 {
			t.Fatalf("since 51 delivered %v..%v, want 52..151", seqs[0], seqs[99])
		}
	})
	t.Run("history paging and bad ranges", func(t *testing.T) {
		c := connected(nodes[1])
		rep := c.replyTo("h", `{"type":"history","ref":"h","topic":"`+topic+`","before":100,"limit":30}`)
		var h struct {
			Epoch    string
			Messages []struct{ Seq uint64 }
		}
		if err := json.Unmarshal(rep.Data, &h); err != nil || !rep.OK || len(h.Messages) != 30 || h.Messages[0].Seq != 70 || h.Messages[29].Seq != 99 {
			t.Fatalf("history before 100 limit 30: %s %+v", rep.Data, rep.Error)
		}
		c.expectError(c.replyTo("h2", `{"type":"history","ref":"h2","topic":"`+topic+`","limit":-1}`), protocol.CodeBadRequest)
		c.expectError(c.replyTo("h3", `{"type":"history","ref":"h3","topic":"`+topic+`","before":-5}`), protocol.CodeBadRequest)
		c.expectError(c.replyTo("h4", `{"type":"subscribe","ref":"h4","topic":"`+topic+`","rewind":-1}`), protocol.CodeBadRequest)
		c.expectError(c.replyTo("h5", `{"type":"subscribe","ref":"h5","topic":"`+topic+`","rewind":3,"since":{"epoch":"x","seq":1}}`), protocol.CodeBadRequest)
		rep = c.replyTo("h6", `{"type":"history","ref":"h6","topic":"`+topic+`","limit":5000}`)
		if err := json.Unmarshal(rep.Data, &h); err != nil || len(h.Messages) != 100 {
			t.Fatalf("history limit 5000 (clamped, 100 retained): %d messages %v", len(h.Messages), rep.Error)
		}
	})
	t.Run("epoch change after a Redis flush", func(t *testing.T) {
		col := newCollector()
		var mu sync.Mutex
		var results []protocol.SubscribeResult
		lb := testenv.StartProxy(t, nodes[0].Addr())
		c := dial(t, lb.WSURL(), client.Options{})
		if _, err := c.Subscribe(context.Background(), topic, col.handle, client.WithOnResubscribe(func(res protocol.SubscribeResult, err error) {
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				results = append(results, res)
			}
		})); err != nil {
			t.Fatal(err)
		}
		emitN(1)
		testenv.Eventually(t, 5*time.Second, func() bool { return col.count(topic) == 1 }, "no event before the flush")
		if err := r.Client(t).FlushAll(context.Background()).Err(); err != nil {
			t.Fatal(err)
		}
		lb.Cut()
		testenv.Eventually(t, 10*time.Second, func() bool {
			mu.Lock()
			defer mu.Unlock()
			return len(results) > 0
		}, "client did not resubscribe")
		mu.Lock()
		first := results[0]
		mu.Unlock()
		if first.Recovered {
			t.Fatalf("resubscribe after a flush: %+v, want recovered:false", first)
		}
		fresh := emitN(1)
		if fresh[0].Epoch == epoch || fresh[0].Seq != 1 {
			t.Fatalf("after a flush the topic must start a new epoch at seq 1: %+v (old epoch %s)", fresh[0], epoch)
		}
		testenv.Eventually(t, 5*time.Second, func() bool {
			col.mu.Lock()
			defer col.mu.Unlock()
			return col.epochs[topic][fresh[0].Epoch]
		}, "the client did not receive the new epoch's event")
	})
}

// TestSilentLoss: a node's Redis pub/sub connection is killed again and
// again while a topic is published to: Redis drops what it was sending, yet
// every client on that node receives every seq once, in order, because the
// node fills the jumps from history.
func TestSilentLoss(t *testing.T) {
	r, nodes := startLoadCluster(t, 2, map[string]string{"UPDRAFT_HISTORY_SIZE": "100000"})
	const topic = "chat/lossy"
	cols := subscribers(t, nodes[1:], 10, []string{topic})
	rc := r.Client(t)

	pub := startPublisher(nodes[:1], topic, 2000, 40000)
	for range 8 { // bounded: 8 kills, 300 ms apart
		time.Sleep(300 * time.Millisecond) // spacing the kills while the publisher runs
		if err := rc.Do(context.Background(), "CLIENT", "KILL", "TYPE", "pubsub").Err(); err != nil {
			t.Fatal(err)
		}
	}
	final := pub.halt(t)
	for i, c := range cols {
		testenv.Eventually(t, 30*time.Second, func() bool { return c.count(topic) >= int(final) },
			"client %d received %d of %d", i, c.count(topic), final)
		c.checkExactly(t, fmt.Sprintf("client %d", i), topic, seqRange(1, final))
	}
	t.Logf("%d messages; node-2 filled %v from history, lost %v", final,
		metric(t, nodes[1], "updraft_gap_messages_filled_total"), metric(t, nodes[1], "updraft_gap_messages_lost_total"))
	if lost := metric(t, nodes[1], "updraft_gap_messages_lost_total"); lost != 0 {
		t.Fatalf("node-2 reports %v messages lost for good", lost)
	}
}
