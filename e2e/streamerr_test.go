package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/updraft/updraft/internal/testenv"
)

// TestStreamBadInput: against a real node and Redis, a malformed line ends
// a stream with a clear 400 and E.error while the lines before it stay
// published, and a body that stalls past UPDRAFT_STREAM_IDLE ends with 408
// and E.error.
func TestStreamBadInput(t *testing.T) {
	r := testenv.StartRedis(t)
	node := testenv.StartNode(t, nodeEnv(r.URL(), map[string]string{"UPDRAFT_STREAM_IDLE": "1s"}))
	stream := func(topic string, body io.Reader) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, node.URL()+"/api/v1/stream?topic="+topic+"&event=tok", body)
		req.Header.Set("Authorization", "Bearer "+apiKey)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	events := func(topic string) []string {
		t.Helper()
		c := dialRaw(t, node.WSURL(), nil)
		c.connect("")
		rep := c.replyTo("h", `{"type":"history","ref":"h","topic":"`+topic+`"}`)
		var raw struct {
			Messages []struct {
				Event string
				Data  json.RawMessage
			}
		}
		if err := json.Unmarshal(rep.Data, &raw); err != nil {
			t.Fatal(err)
		}
		out := make([]string, len(raw.Messages))
		for i, m := range raw.Messages {
			out[i] = m.Event + " " + string(m.Data)
		}
		return out
	}

	status, body := stream("ai/bad", strings.NewReader("1\n2\n{bad\n3\n"))
	if status != http.StatusBadRequest || !strings.Contains(body, "line 3") {
		t.Fatalf("malformed line: %d %s", status, body)
	}
	got := events("ai/bad")
	if len(got) != 3 || got[0] != "tok 1" || got[1] != "tok 2" || !strings.HasPrefix(got[2], `tok.error {"message":"line 3`) {
		t.Fatalf("after a malformed line the topic holds %q", got)
	}

	pr, pw := io.Pipe()
	defer pw.Close()
	go pw.Write([]byte("1\n")) // then nothing: the body stalls
	status, body = stream("ai/stall", pr)
	if status != http.StatusRequestTimeout || !strings.Contains(body, "sent no complete line for 1s") {
		t.Fatalf("stalled body: %d %s", status, body)
	}
	got = events("ai/stall")
	if len(got) != 2 || got[0] != "tok 1" || !strings.Contains(got[1], "timed out") {
		t.Fatalf("after a stall the topic holds %q", got)
	}
}
