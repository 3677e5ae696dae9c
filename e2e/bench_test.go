package e2e

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

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
