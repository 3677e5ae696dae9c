package e2e

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"

	"github.com/updraft/updraft/internal/testenv"
	"github.com/updraft/updraft/protocol"
)

// invalidUTF8 is a JSON string holding the bytes 0xFF 0xFE: valid JSON
// syntax, but not UTF-8, so a browser closes a text frame carrying it
// with 1007.
const invalidUTF8 = "\"\xff\xfe\""

// TestInvalidUTF8Refused sends invalid UTF-8 through every entrance that
// ends up in a frame: HTTP emit, batch, stream, client publish, presence
// state and the token's sub. Each is refused with bad_request, and a
// subscriber of the topic receives only valid UTF-8, nothing of the
// refused messages, and history holds none of them.
func TestInvalidUTF8Refused(t *testing.T) {
	r := testenv.StartRedis(t)
	node := testenv.StartNode(t, nodeEnv(r.URL(), map[string]string{"UPDRAFT_ALLOW_ANONYMOUS": "false"}))
	const topic = "chat/utf8"
	good := token(t, "user-7", time.Hour, []string{"chat/*"}, []string{"chat/*"})

	watcher := dialRaw(t, node.WSURL(), nil)
	watcher.connect(good)
	if rep := watcher.replyTo("s1", `{"type":"subscribe","ref":"s1","topic":"`+topic+`","presence":true}`); !rep.OK {
		t.Fatalf("subscribe: %+v", rep.Error)
	}

	refused := func(t *testing.T, status int, body []byte) {
		t.Helper()
		var env struct{ Error protocol.Error }
		if status != http.StatusBadRequest || json.Unmarshal(body, &env) != nil ||
			env.Error.Code != protocol.CodeBadRequest || !strings.Contains(env.Error.Message, "invalid UTF-8") {
			t.Fatalf("answer %d %s, want 400 bad_request naming invalid UTF-8", status, body)
		}
	}

	t.Run("emit", func(t *testing.T) {
		status, body := postRaw(t, node, "/api/v1/emit", `{"topic":"`+topic+`","event":"bad","data":`+invalidUTF8+`}`)
		refused(t, status, body)
		// Bytes that are not UTF-8 anywhere in the body, even outside data.
		status, body = postRaw(t, node, "/api/v1/emit", `{"topic":"`+topic+`","event":"bad","data":{"k":1}}`+" \xff")
		if status != http.StatusBadRequest {
			t.Fatalf("trailing invalid byte: %d %s, want 400", status, body)
		}
	})
	t.Run("batch", func(t *testing.T) {
		status, body := postRaw(t, node, "/api/v1/emit/batch",
			`{"messages":[{"topic":"`+topic+`","event":"batch-ok","data":{"s":"\u00ff ok"}},{"topic":"`+topic+`","event":"bad","data":[`+invalidUTF8+`]}]}`)
		var res struct{ Results []emitResult }
		if status != http.StatusOK || json.Unmarshal(body, &res) != nil || len(res.Results) != 2 {
			t.Fatalf("batch answer %d %s, want 200 with 2 results", status, body)
		}
		if res.Results[0].Error != nil || res.Results[0].Seq == 0 {
			t.Errorf("the valid item failed: %+v", res.Results[0])
		}
		if e := res.Results[1].Error; e == nil || e.Code != protocol.CodeBadRequest || !strings.Contains(e.Message, "invalid UTF-8") {
			t.Errorf("the invalid item: %+v, want bad_request naming invalid UTF-8", res.Results[1])
		}
	})
	t.Run("stream", func(t *testing.T) {
		q := url.Values{"topic": {topic}, "event": {"tok"}}
		status, body := postRaw(t, node, "/api/v1/stream?"+q.Encode(), "{\"i\":0}\n{\"t\":"+invalidUTF8+"}\n{\"i\":2}\n")
		refused(t, status, body)
		if !strings.Contains(string(body), "line 2") {
			t.Errorf("stream answer %s does not name line 2", body)
		}
	})

	client := dialRaw(t, node.WSURL(), nil)
	client.connect(good)
	if rep := client.replyTo("s1", `{"type":"subscribe","ref":"s1","topic":"`+topic+`"}`); !rep.OK {
		t.Fatalf("subscribe: %+v", rep.Error)
	}
	wsRefused := func(t *testing.T, ref, frame string) {
		t.Helper()
		rep := client.replyTo(ref, frame)
		client.expectError(rep, protocol.CodeBadRequest)
		if !strings.Contains(rep.Error.Message, "invalid UTF-8") {
			t.Errorf("reply %+v does not name invalid UTF-8", rep.Error)
		}
		client.alive()
	}
	t.Run("publish", func(t *testing.T) {
		wsRefused(t, "p1", `{"type":"publish","ref":"p1","topic":"`+topic+`","event":"bad","data":`+invalidUTF8+`}`)
	})
	t.Run("track", func(t *testing.T) {
		wsRefused(t, "t1", `{"type":"track","ref":"t1","topic":"`+topic+`","state":{"name":`+invalidUTF8+`}}`)
	})
	t.Run("token sub", func(t *testing.T) {
		c := dialRaw(t, node.WSURL(), nil)
		rep := c.replyTo("c1", `{"type":"connect","ref":"c1","token":"`+rawToken(t, `{"sub":`+invalidUTF8+`,"exp":`+jsonInt(time.Now().Add(time.Hour).Unix())+`,"subscribe":["chat/*"],"publish":["chat/*"]}`)+`"}`)
		c.expectError(rep, protocol.CodeUnauthorized)
		if !strings.Contains(rep.Error.Message, "UTF-8") {
			t.Errorf("connect refused with %+v, want it to name UTF-8", rep.Error)
		}
	})

	// The end marker: once it arrived, everything published before it has.
	if status, body := postRaw(t, node, "/api/v1/emit", `{"topic":"`+topic+`","event":"done"}`); status != http.StatusOK {
		t.Fatalf("emit done: %d %s", status, body)
	}
	var got []string
	for done := false; !done; {
		m, err := watcher.next(10 * time.Second)
		if err != nil {
			t.Fatalf("watcher, after events %v: %v", got, err)
		}
		if !utf8.Valid(m) {
			t.Fatalf("watcher received invalid UTF-8: %q", m)
		}
		var ev protocol.Event
		if json.Unmarshal(m, &ev) == nil && ev.Type == protocol.TypeEvent {
			got = append(got, ev.Event)
			done = ev.Event == "done"
		}
	}
	if want := []string{"batch-ok", "tok", "tok.error", "done"}; strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("watcher received events %v, want %v", got, want)
	}

	req, _ := http.NewRequest(http.MethodGet, node.URL()+"/api/v1/history?topic="+url.QueryEscape(topic), nil)
	req.Header.Set("Authorization", "Bearer "+apiKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	hist, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !utf8.Valid(hist) || bytes.Contains(hist, []byte(`"bad"`)) {
		t.Errorf("history %d %q: want 200, valid UTF-8, no refused message", resp.StatusCode, hist)
	}
}

// postRaw POSTs body byte for byte (json.Marshal would replace invalid
// UTF-8) to node's HTTP API.
func postRaw(t *testing.T, node *testenv.Node, path, body string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, node.URL()+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+apiKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

// rawToken signs claims, a JSON object byte for byte, with the test
// secret: jwt's own encoder would replace invalid UTF-8.
func rawToken(t *testing.T, claims string) string {
	t.Helper()
	enc := base64.RawURLEncoding
	signing := enc.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." + enc.EncodeToString([]byte(claims))
	sig, err := jwt.SigningMethodHS256.Sign(signing, []byte(jwtSecret))
	if err != nil {
		t.Fatal(err)
	}
	return signing + "." + enc.EncodeToString(sig)
}

func jsonInt(n int64) string { b, _ := json.Marshal(n); return string(b) }
