package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/updraft/updraft/client"
	"github.com/updraft/updraft/internal/testenv"
	"github.com/updraft/updraft/protocol"
)

// subscribers connects n anonymous clients spread round robin over nodes,
// each subscribed to every topic, and returns their collectors.
func subscribers(t *testing.T, nodes []*testenv.Node, n int, topics []string) []*collector {
	t.Helper()
	cols := make([]*collector, n)
	for i := range cols {
		cols[i] = newCollector()
		c := dial(t, nodes[i%len(nodes)].WSURL(), client.Options{})
		for _, topic := range topics {
			if _, err := c.Subscribe(context.Background(), topic, cols[i].handle); err != nil {
				t.Fatalf("client %d subscribe %s: %v", i, topic, err)
			}
		}
	}
	return cols
}

// waitAll waits until every collector holds want[topic] messages on each
// topic, then checks each received exactly seqs 1..want in order.
func waitAll(t *testing.T, cols []*collector, want map[string]uint64) {
	t.Helper()
	testenv.Eventually(t, 90*time.Second, func() bool {
		for _, c := range cols {
			for topic, n := range want {
				if c.count(topic) < int(n) {
					return false
				}
			}
		}
		return true
	}, "not every subscriber received every message")
	for i, c := range cols {
		for topic, n := range want {
			c.checkExactly(t, fmt.Sprintf("subscriber %d", i), topic, seqRange(1, n))
		}
	}
}

// TestClusterDelivery: three gateways joined by Redis, subscribers spread
// over them, 10,000 messages published through different nodes: every
// subscriber receives every message of each topic once, in seq order.
func TestClusterDelivery(t *testing.T) {
	_, nodes := startCluster(t, 3, map[string]string{"UPDRAFT_CLIENT_RATE": "100000"})
	const total, clients = 10000, 30

	t.Run("http emit", func(t *testing.T) {
		topics := []string{"chat/a", "chat/b", "chat/c", "chat/d", "chat/e"}
		cols := subscribers(t, nodes, clients, topics)

		const batch = 100
		want := map[string]uint64{}
		var mu sync.Mutex
		var wg sync.WaitGroup
		for b := 0; b < total/batch; b++ {
			items := make([]emitItem, batch)
			for i := range items {
				n := b*batch + i
				items[i] = emitItem{Topic: topics[n%len(topics)], Event: "message", Data: []byte(fmt.Sprintf(`{"n":%d}`, n))}
			}
			wg.Add(1)
			go func(node *testenv.Node) {
				defer wg.Done()
				res, err := tryEmitBatch(node, items)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				defer mu.Unlock()
				for i, r := range res {
					want[items[i].Topic] = max(want[items[i].Topic], r.Seq)
				}
			}(nodes[b%len(nodes)])
			if b%len(nodes) == len(nodes)-1 {
				wg.Wait() // three batches in flight at a time, one per node
			}
		}
		wg.Wait()
		if t.Failed() {
			return
		}
		for _, topic := range topics {
			if want[topic] != total/uint64(len(topics)) {
				t.Fatalf("topic %s: highest seq %d, want %d: positions must count 1..n", topic, want[topic], total/len(topics))
			}
		}
		waitAll(t, cols, want)
	})

	t.Run("client publish", func(t *testing.T) {
		topics := []string{"room/1", "room/2", "room/3", "room/4"}
		cols := subscribers(t, nodes, clients, topics)
		const publishers = 10
		var wg sync.WaitGroup
		errs := make(chan error, publishers)
		for p := 0; p < publishers; p++ {
			pub := dial(t, nodes[p%len(nodes)].WSURL(), client.Options{})
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < total/publishers; i++ {
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					_, err := pub.Publish(ctx, topics[i%len(topics)], "message", map[string]int{"p": p, "i": i})
					cancel()
					if err != nil {
						errs <- fmt.Errorf("publisher %d message %d: %w", p, i, err)
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		want := map[string]uint64{}
		for _, topic := range topics {
			want[topic] = total / uint64(len(topics))
		}
		waitAll(t, cols, want)
		for i, c := range cols {
			c.mu.Lock()
			from := 0
			for _, n := range c.froms {
				from += n
			}
			c.mu.Unlock()
			if from != total {
				t.Fatalf("subscriber %d: %d of %d client-published events carry from", i, from, total)
			}
		}
	})
}

// TestRedisRestart: Redis goes away and comes back empty; the gateways
// reconnect and resubscribe by themselves and delivery resumes on the
// clients' existing connections, in a new epoch.
func TestRedisRestart(t *testing.T) {
	r, nodes := startCluster(t, 2, nil)
	const topic = "chat/restart"
	cols := subscribers(t, nodes, 4, []string{topic})

	items := make([]emitItem, 10)
	for i := range items {
		items[i] = emitItem{Topic: topic, Event: "message"}
	}
	res := emitBatch(t, nodes[0], items)
	oldEpoch := res[0].Epoch
	waitAll(t, cols, map[string]uint64{topic: 10})

	r.Restart(t)

	// Publish through the other node until the broker is back and every
	// subscriber has seen an event of the new epoch. Bounded: one emit per
	// 100 ms for at most 30 s.
	deadline := time.Now().Add(30 * time.Second)
	var newEpoch string
	for {
		if time.Now().After(deadline) {
			t.Fatalf("delivery did not resume within 30s of the Redis restart (new epoch %q)", newEpoch)
		}
		status, body := post(t, nodes[1], "/api/v1/emit", apiKey, emitItem{Topic: topic, Event: "message"})
		if status == 200 && newEpoch == "" {
			var pos protocol.Position
			if err := json.Unmarshal(body, &pos); err != nil {
				t.Fatal(err)
			}
			newEpoch = pos.Epoch
		}
		if newEpoch != "" && allSawEpoch(cols, topic, newEpoch) {
			break
		}
		time.Sleep(100 * time.Millisecond) // pacing the publisher, not waiting for a condition
	}
	if newEpoch == oldEpoch {
		t.Fatalf("epoch %q survived a Redis restart that lost the topic's history", newEpoch)
	}
	for i, n := range nodes {
		if exited, _ := n.Wait(0); exited {
			t.Fatalf("node %d exited during the Redis restart", i+1)
		}
	}
}

func allSawEpoch(cols []*collector, topic, epoch string) bool {
	for _, c := range cols {
		c.mu.Lock()
		ok := c.epochs[topic][epoch]
		c.mu.Unlock()
		if !ok {
			return false
		}
	}
	return true
}
