package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/updraft/updraft/client"
	"github.com/updraft/updraft/internal/testenv"
	"github.com/updraft/updraft/protocol"
)

// TestSlowConsumer: a client that never reads is closed with 4008 once its
// outbox overflows, while a fast client on the same topic receives every
// message.
func TestSlowConsumer(t *testing.T) {
	r := testenv.StartRedis(t)
	node := testenv.StartNode(t, nodeEnv(r.URL(), map[string]string{"UPDRAFT_SEND_QUEUE": "64"}))
	const topic = "chat/firehose"

	slow := dialRaw(t, node.WSURL(), nil)
	slow.connect("")
	if rep := slow.replyTo("s", `{"type":"subscribe","ref":"s","topic":"`+topic+`"}`); !rep.OK {
		t.Fatal(rep.Error)
	}
	fast := newCollector()
	fc := dial(t, node.WSURL(), client.Options{})
	if _, err := fc.Subscribe(context.Background(), topic, fast.handle); err != nil {
		t.Fatal(err)
	}

	// 8 KiB messages in batches of 32 until the slow client is cut off:
	// kernel buffers on loopback absorb a few MiB, then the 64-message
	// outbox overflows. A batch reaches the node in one burst (one Redis
	// script), so it must fit the fast client's outbox of 64. Bounded at
	// 400 batches (100 MiB).
	data, _ := json.Marshal(map[string]string{"pad": strings.Repeat("x", 8<<10)})
	sent := uint64(0)
	for b := 0; b < 400 && metric(t, node, "updraft_slow_consumer_closes_total") == 0; b++ {
		items := make([]emitItem, 32)
		for i := range items {
			items[i] = emitItem{Topic: topic, Event: "message", Data: data}
		}
		res := emitBatch(t, node, items)
		sent = res[len(res)-1].Seq
		// Let the fast client keep up: its outbox is 64 messages too.
		testenv.Eventually(t, 30*time.Second, func() bool { return fast.count(topic) == int(sent) }, "fast client fell behind at seq %d", sent)
	}
	if n := metric(t, node, "updraft_slow_consumer_closes_total"); n != 1 {
		t.Fatalf("%v slow-consumer closes after %d messages, want 1 (the slow client's)", n, sent)
	}
	fast.checkExactly(t, "fast client", topic, seqRange(1, sent))

	// Now the slow client reads: what the kernel buffered, then the
	// disconnect and the 4008 close.
	slow.expectClose(protocol.CloseSlowConsumer)
}

// TestDrain: SIGTERM a node behind a load balancer. Its clients get 1012,
// reconnect through the balancer to the other node and resubscribe with
// since; the node flushes what it had queued before closing, so every
// client receives every message exactly once, and the node exits within
// its drain timeout.
func TestDrain(t *testing.T) {
	_, nodes := startCluster(t, 2, map[string]string{"UPDRAFT_DRAIN_TIMEOUT": "4s"})
	lb := testenv.StartProxy(t, nodes[0].Addr(), nodes[1].Addr())
	const topic = "chat/drain"

	type watcher struct {
		col   *collector
		c     *client.Client
		mu    sync.Mutex
		codes []int
		resub uint64 // the latest seq when the subscription was renewed
	}
	watchers := make([]*watcher, 10)
	for i := range watchers {
		w := &watcher{col: newCollector()}
		w.c = dial(t, lb.WSURL(), client.Options{OnDisconnect: func(code int, _ string) {
			w.mu.Lock()
			w.codes = append(w.codes, code)
			w.mu.Unlock()
		}})
		_, err := w.c.Subscribe(context.Background(), topic, w.col.handle, client.WithOnResubscribe(func(res protocol.SubscribeResult, err error) {
			if err == nil {
				w.mu.Lock()
				w.resub = res.Seq
				w.mu.Unlock()
			}
		}))
		if err != nil {
			t.Fatal(err)
		}
		watchers[i] = w
	}
	onFirst := 0
	for _, w := range watchers {
		if w.c.Node() == "node-1" {
			onFirst++
		}
	}
	if onFirst == 0 || onFirst == len(watchers) {
		t.Fatalf("the balancer put %d of %d clients on node-1; want a spread", onFirst, len(watchers))
	}

	// A steady publisher through node-2, every 5 ms, until told to stop.
	stop := make(chan struct{})
	var lastSeq uint64
	var pubMu sync.Mutex
	var pubErr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 4000; i++ { // bounded: at most 20 s
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			status, body, err := tryPost(nodes[1], "/api/v1/emit", apiKey, emitItem{Topic: topic, Event: "message"})
			pubMu.Lock()
			if err != nil || status != 200 {
				pubErr = fmt.Errorf("emit during drain: %d %s %v", status, body, err)
				pubMu.Unlock()
				return
			}
			var pos protocol.Position
			json.Unmarshal(body, &pos)
			lastSeq = pos.Seq
			pubMu.Unlock()
		}
	}()
	// Let some messages flow, then drain node-1.
	testenv.Eventually(t, 10*time.Second, func() bool {
		pubMu.Lock()
		defer pubMu.Unlock()
		return lastSeq >= 100
	}, "publisher did not get going")
	start := time.Now()
	nodes[0].Terminate()
	if exited, _ := nodes[0].Wait(10 * time.Second); !exited {
		t.Fatal("node-1 did not exit within 10 s of SIGTERM (drain timeout 4 s)")
	}
	t.Logf("node-1 drained and exited in %v", time.Since(start))

	// Everyone ends up on node-2, subscribed.
	testenv.Eventually(t, 15*time.Second, func() bool {
		for _, w := range watchers {
			if w.c.Node() != "node-2" || w.c.Status() != client.StatusConnected {
				return false
			}
		}
		return true
	}, "clients did not all reconnect to node-2")
	testenv.Eventually(t, 10*time.Second, func() bool {
		pubMu.Lock()
		defer pubMu.Unlock()
		for _, w := range watchers {
			w.mu.Lock()
			r := w.resub
			w.mu.Unlock()
			if w.codes != nil && r == 0 {
				return false
			}
		}
		return true
	}, "moved clients did not resubscribe")
	// Publish a while longer after everyone resubscribed, then stop.
	pubMu.Lock()
	target := lastSeq + 100
	pubMu.Unlock()
	testenv.Eventually(t, 15*time.Second, func() bool {
		pubMu.Lock()
		defer pubMu.Unlock()
		return lastSeq >= target || pubErr != nil
	}, "publisher stalled")
	close(stop)
	<-done
	if pubErr != nil {
		t.Fatal(pubErr)
	}
	final := lastSeq

	for i, w := range watchers {
		testenv.Eventually(t, 10*time.Second, func() bool {
			s := w.col.snapshot(topic)
			return len(s) > 0 && s[len(s)-1] == final
		}, "watcher %d did not receive up to seq %d", i, final)
		// Nothing lost, nothing twice: the draining node flushed what it had
		// queued before the 1012, and the client resubscribed elsewhere with
		// since = the last position it saw.
		w.col.checkExactly(t, fmt.Sprintf("watcher %d", i), topic, seqRange(1, final))
		w.mu.Lock()
		codes := w.codes
		w.mu.Unlock()
		if len(codes) > 0 {
			if codes[0] != protocol.CloseDraining {
				t.Fatalf("watcher %d was disconnected with %v, want 1012 first", i, codes)
			}
		}
	}
	moved := 0
	for _, w := range watchers {
		if len(w.codes) > 0 {
			moved++
		}
	}
	if moved != onFirst {
		t.Fatalf("%d clients saw a disconnect, but %d were on the drained node", moved, onFirst)
	}
}

// TestHeartbeat: the server pings every heartbeat; a client that answers
// stays connected, one that stays silent for two heartbeats is closed with
// 1001.
func TestHeartbeat(t *testing.T) {
	node := testenv.StartNode(t, map[string]string{"UPDRAFT_ALLOW_ANONYMOUS": "true", "UPDRAFT_HEARTBEAT": "1s", "UPDRAFT_LOG_LEVEL": "warn"})

	var drops atomic.Int32
	alive := dial(t, node.WSURL(), client.Options{OnDisconnect: func(int, string) { drops.Add(1) }})

	silent := dialRaw(t, node.WSURL(), nil)
	silent.connect("") // and then read nothing: its pongs never go out
	testenv.Eventually(t, 10*time.Second, func() bool {
		return metric(t, node, `updraft_server_closes_total{code="1001"}`) == 1
	}, "the silent client was not closed")
	silent.expectClose(protocol.CloseGoingAway)

	// The answering client lived through the same three-plus heartbeats.
	if err := alive.Ping(context.Background()); err != nil || drops.Load() != 0 {
		t.Fatalf("the answering client: ping %v, %d disconnects", err, drops.Load())
	}
}
