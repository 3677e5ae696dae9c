package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/updraft/updraft/internal/testenv"
)

type historyPage struct {
	Epoch    string
	Messages []struct {
		Seq  uint64
		Data json.RawMessage
	}
}

// historyHTTP reads one page through GET /api/v1/history.
func historyHTTP(t *testing.T, node *testenv.Node, topic string, before uint64, limit int) historyPage {
	t.Helper()
	url := fmt.Sprintf("%s/api/v1/history?topic=%s&limit=%d", node.URL(), topic, limit)
	if before > 0 {
		url += "&before=" + strconv.FormatUint(before, 10)
	}
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Authorization", "Bearer "+apiKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET history: %d %s", resp.StatusCode, body)
	}
	var p historyPage
	if err := json.Unmarshal(body, &p); err != nil {
		t.Fatalf("history answer %s: %v", body, err)
	}
	return p
}

// pageBack pages a topic's history from the newest message back to the
// oldest, pages of 1000, and returns the seqs newest first with the epoch.
func pageBack(t *testing.T, node *testenv.Node, topic string) ([]uint64, string) {
	t.Helper()
	var seqs []uint64
	var epoch string
	before := uint64(0)
	for range 100 { // bounded
		p := historyHTTP(t, node, topic, before, 1000)
		epoch = p.Epoch
		if len(p.Messages) == 0 {
			break
		}
		for i := len(p.Messages) - 1; i >= 0; i-- {
			seqs = append(seqs, p.Messages[i].Seq)
		}
		before = p.Messages[0].Seq
	}
	return seqs, epoch
}

// TestDurableHistory: 5,000 chat messages on a persistent topic with Redis
// keeping only 100: history pages back through all 5,000 in order, and
// after a Redis flush they are all still there.
func TestDurableHistory(t *testing.T) {
	pg := testenv.StartPostgres(t)
	r, nodes := startCluster(t, 2, map[string]string{
		"UPDRAFT_HISTORY_SIZE":   "100",
		"UPDRAFT_DATABASE_URL":   pg.URL(),
		"UPDRAFT_PERSIST_TOPICS": "chat/**",
	})
	const topic, total = "chat/durable", 5000
	for b := 0; b < total/100; b++ {
		items := make([]emitItem, 100)
		for i := range items {
			items[i] = emitItem{Topic: topic, Event: "message", Data: json.RawMessage(fmt.Sprintf(`{"n":%d}`, b*100+i+1))}
		}
		emitBatch(t, nodes[b%2], items)
	}
	// Not persistent: only Redis keeps it.
	emitBatch(t, nodes[0], []emitItem{{Topic: "news/x", Event: "m"}})

	check := func(name string, node *testenv.Node, wantEpoch string) string {
		t.Helper()
		var seqs []uint64
		var epoch string
		testenv.Eventually(t, 20*time.Second, func() bool {
			seqs, epoch = pageBack(t, node, topic)
			return len(seqs) >= total
		}, "%s: history holds %d of %d messages", name, len(seqs), total)
		if len(seqs) != total {
			t.Fatalf("%s: %d messages, want %d", name, len(seqs), total)
		}
		for i, s := range seqs {
			if s != uint64(total-i) {
				t.Fatalf("%s: message %d has seq %d, want %d", name, i, s, total-i)
			}
		}
		if wantEpoch != "" && epoch != wantEpoch {
			t.Fatalf("%s: epoch %q, want %q", name, epoch, wantEpoch)
		}
		return epoch
	}
	epoch := check("before the flush", nodes[1], "")

	if err := r.Client(t).FlushAll(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	check("after a Redis flush", nodes[0], epoch)

	// Over the WebSocket too, with the data intact.
	c := dialRaw(t, nodes[1].WSURL(), nil)
	c.connect("")
	rep := c.replyTo("h", `{"type":"history","ref":"h","topic":"`+topic+`","before":3,"limit":5}`)
	var p historyPage
	if err := json.Unmarshal(rep.Data, &p); err != nil || !rep.OK || len(p.Messages) != 2 || string(p.Messages[0].Data) != `{"n":1}` {
		t.Fatalf("history before 3 after the flush: %s %+v", rep.Data, rep.Error)
	}
	if seqs, _ := pageBack(t, nodes[0], "news/x"); len(seqs) != 0 {
		t.Fatalf("a non-persistent topic kept %d messages through the flush", len(seqs))
	}

	// persist on a client publish of a non-persistent topic, and a durable
	// emit that answers only once stored.
	rep = c.replyTo("p", `{"type":"publish","ref":"p","topic":"news/kept","event":"m","data":{"x":1},"persist":true}`)
	if !rep.OK {
		t.Fatalf("publish with persist: %+v", rep.Error)
	}
	status, body := post(t, nodes[0], "/api/v1/emit", apiKey, map[string]any{"topic": "news/durable", "event": "m", "data": 1, "durable": true})
	if status != http.StatusOK {
		t.Fatalf("durable emit: %d %s", status, body)
	}
	if err := r.Client(t).FlushAll(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	if seqs, _ := pageBack(t, nodes[1], "news/durable"); len(seqs) != 1 {
		t.Fatalf("a durable emit was not in PostgreSQL when it was answered (%d stored)", len(seqs))
	}
	testenv.Eventually(t, 10*time.Second, func() bool {
		seqs, _ := pageBack(t, nodes[1], "news/kept")
		return len(seqs) == 1
	}, "a publish with persist was not stored")
}
