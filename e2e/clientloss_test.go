package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/updraft/updraft/client"
	"github.com/updraft/updraft/internal/testenv"
	"github.com/updraft/updraft/protocol"
)

// ackPublisher emits one message at a time to a topic, through its nodes
// in turn, and records the position of every message a node acknowledged.
// Failed emits (a dead node, Redis down) are counted and skipped: only
// acknowledged messages are promised to subscribers.
type ackPublisher struct {
	mu     sync.Mutex
	acked  []protocol.Position // guarded by mu
	failed int                 // guarded by mu
	halted sync.Once
	stop   chan struct{}
	done   chan struct{}
}

// startAckPublisher emits to topic every pace until halted or max emits
// were tried.
func startAckPublisher(nodes []*testenv.Node, topic string, pace time.Duration, max int) *ackPublisher {
	p := &ackPublisher{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		tick := time.NewTicker(pace)
		defer tick.Stop()
		for i := range max {
			select {
			case <-p.stop:
				return
			case <-tick.C:
			}
			status, body, err := tryPost(nodes[i%len(nodes)], "/api/v1/emit", apiKey, emitItem{Topic: topic, Event: "message"})
			var pos protocol.Position
			if err == nil && status == http.StatusOK {
				err = json.Unmarshal(body, &pos)
			} else if err == nil {
				err = fmt.Errorf("status %d", status)
			}
			p.mu.Lock()
			if err != nil {
				p.failed++
			} else {
				p.acked = append(p.acked, pos)
			}
			p.mu.Unlock()
		}
	}()
	return p
}

// counts returns how many emits were acknowledged and how many failed.
func (p *ackPublisher) counts() (acked, failed int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.acked), p.failed
}

// halt stops the publisher and returns the acknowledged positions.
func (p *ackPublisher) halt() []protocol.Position {
	p.halted.Do(func() { close(p.stop) })
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.acked
}

// TestClientSurvivesRedisAndGatewayCrash is issue 11's fault, exactly:
// Redis on appendfsync always, two gateways, a publisher running, a Go
// client subscribed through one gateway. Redis and the client's gateway are
// killed (-9) at the same moment; the client reconnects to the surviving
// gateway while Redis is still down, where its resubscribe is answered
// unavailable. Redis then restarts on the same port and data. Every
// acknowledged message must reach the client exactly once, unless the
// server answered recovered:false, which the client must then have told
// the application.
func TestClientSurvivesRedisAndGatewayCrash(t *testing.T) {
	r := testenv.StartRedisWith(t, testenv.RedisConfig{AppendFsyncAlways: true})
	nodes := make([]*testenv.Node, 2)
	for i := range nodes {
		env := nodeEnv(r.URL(), map[string]string{"UPDRAFT_HISTORY_SIZE": "50000"})
		env["UPDRAFT_NODE_ID"] = fmt.Sprintf("node-%d", i+1)
		nodes[i] = testenv.StartNode(t, env)
	}
	const topic = "chat/crash"
	// No health checks: the client must reach the survivor while Redis, and
	// so the survivor's readiness, is down.
	lb := testenv.StartRoundRobin(t, nodes[0].Addr(), nodes[1].Addr())

	var (
		mu          sync.Mutex
		got         = map[protocol.Position]int{} // guarded by mu
		order       []protocol.Position           // guarded by mu
		unavailable int                           // resubscribes answered unavailable; guarded by mu
		ended       []error                       // subscription ends reported; guarded by mu
		lost        int                           // resubscribes told not recovered; guarded by mu
	)
	onError := func(err error) {
		var perr *protocol.Error
		mu.Lock()
		defer mu.Unlock()
		var rerr *client.RetryError
		switch {
		case errors.As(err, &rerr) && errors.As(err, &perr) && perr.Code == protocol.CodeUnavailable:
			unavailable++
		case errors.Is(err, client.ErrNotRecovered):
			lost++
		case !errors.As(err, &rerr):
			ended = append(ended, err)
		}
	}
	c := dial(t, lb.WSURL(), client.Options{MinBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond, OnError: onError})
	sub, err := c.Subscribe(context.Background(), topic, func(ev protocol.Event) {
		mu.Lock()
		got[ev.Position()]++
		order = append(order, ev.Position())
		mu.Unlock()
	}, client.WithSince(protocol.Position{}))
	if err != nil {
		t.Fatal(err)
	}
	received := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(order)
	}

	// Bounded: at most 20,000 emits, one per 5 ms.
	pub := startAckPublisher(nodes, topic, 5*time.Millisecond, 20000)
	defer pub.halt()
	testenv.Eventually(t, 20*time.Second, func() bool { return received() >= 100 }, "the client received %d messages before the crash", received())

	victim, survivor := nodes[0], "node-2"
	if c.Node() == "node-2" {
		victim, survivor = nodes[1], "node-1"
	}
	var kills sync.WaitGroup
	kills.Add(1)
	go func() { defer kills.Done(); r.Kill() }()
	victim.Kill()
	kills.Wait()
	ackedAtCrash, _ := pub.counts()

	// The client is on the survivor, and its resubscribe was refused with
	// unavailable, while Redis is still down.
	testenv.Eventually(t, 30*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return unavailable >= 1 && c.Status() == client.StatusConnected && c.Node() == survivor
	}, "the client did not reconnect to the survivor and see its resubscribe answered unavailable (status %v, node %q)", c.Status(), c.Node())

	r.Restart(t)

	// Publish on until the survivor acknowledges again, well past the
	// restart, then stop.
	testenv.Eventually(t, 30*time.Second, func() bool {
		acked, _ := pub.counts()
		return acked >= ackedAtCrash+300
	}, "the publisher got no acknowledgements after the Redis restart")
	acked := pub.halt()
	_, failed := pub.counts()
	want := len(acked)

	wasTold := func() bool {
		mu.Lock()
		defer mu.Unlock()
		return lost > 0
	}
	missing := func() []protocol.Position {
		mu.Lock()
		defer mu.Unlock()
		var out []protocol.Position
		for _, pos := range acked {
			if got[pos] == 0 {
				out = append(out, pos)
			}
		}
		return out
	}
	// Polled by hand, so that the failure shows the figures at the end.
	for deadline := time.Now().Add(30 * time.Second); len(missing()) > 0 && !wasTold(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			m := missing()
			t.Fatalf("%d of %d acknowledged messages never reached the client (first %v), and it was not told (subscription ended: %v)",
				len(m), want, m[0], sub.Err())
		}
	}

	mu.Lock()
	defer mu.Unlock()
	t.Logf("%d acknowledged, %d failed emits; the client received %d, %d resubscribes answered unavailable, %d not recovered",
		want, failed, len(order), unavailable, lost)
	for pos, n := range got {
		if n > 1 {
			t.Fatalf("message %v received %d times", pos, n)
		}
	}
	for i := 1; i < len(order); i++ {
		if order[i].Epoch == order[i-1].Epoch && order[i].Seq <= order[i-1].Seq {
			t.Fatalf("seq %d arrived after %d", order[i].Seq, order[i-1].Seq)
		}
	}
	if len(ended) > 0 {
		t.Fatalf("the client reported errors that end something: %v", ended)
	}
	select {
	case <-sub.Done():
		t.Fatalf("the subscription ended: %v", sub.Err())
	default:
	}
}
