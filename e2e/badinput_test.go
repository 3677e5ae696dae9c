package e2e

import (
	"bytes"
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/updraft/updraft/client"
	"github.com/updraft/updraft/internal/testenv"
	"github.com/updraft/updraft/protocol"
)

// TestBadInput sends every kind of bad input to one gateway. Each gets a
// clear error (a reply with a code and message, or the documented close),
// and a well-behaved client on the same node keeps receiving throughout.
func TestBadInput(t *testing.T) {
	r := testenv.StartRedis(t)
	node := testenv.StartNode(t, nodeEnv(r.URL(), map[string]string{
		"UPDRAFT_ALLOW_ANONYMOUS":   "false",
		"UPDRAFT_MAX_MESSAGE":       "4096",
		"UPDRAFT_CLIENT_RATE":       "20",
		"UPDRAFT_MAX_SUBSCRIPTIONS": "5",
		"UPDRAFT_ALLOWED_ORIGINS":   "https://app.example.com",
	}))
	good := token(t, "user-7", time.Hour, []string{"chat/*", "orders"}, []string{"chat/*"})

	// The bystander: subscribed before, checked after every case.
	watch := newCollector()
	bystander := dial(t, node.WSURL(), client.Options{Token: good})
	if _, err := bystander.Subscribe(context.Background(), "chat/watch", watch.handle); err != nil {
		t.Fatal(err)
	}
	emitted := 0
	stillServing := func(t *testing.T) {
		t.Helper()
		emitted++
		if status, body := post(t, node, "/api/v1/emit", apiKey, emitItem{Topic: "chat/watch", Event: "tick"}); status != 200 {
			t.Fatalf("emit: %d %s", status, body)
		}
		testenv.Eventually(t, 10*time.Second, func() bool { return watch.count("chat/watch") == emitted }, "bystander stopped receiving")
	}

	connected := func(t *testing.T) *rawConn {
		c := dialRaw(t, node.WSURL(), nil)
		c.connect(good)
		return c
	}

	cases := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"malformed JSON", func(t *testing.T) {
			c := connected(t)
			c.send(`{"type":"ping","ref":`)
			m, err := c.next(5 * time.Second)
			if err != nil || !bytes.Contains(m, []byte(`"bad_request"`)) || !bytes.Contains(m, []byte(`invalid JSON`)) {
				t.Fatalf("reply %s %v, want bad_request naming invalid JSON", m, err)
			}
			c.alive()
		}},
		{"unknown type", func(t *testing.T) {
			c := connected(t)
			c.expectError(c.replyTo("u1", `{"type":"explode","ref":"u1"}`), protocol.CodeBadRequest)
			c.alive()
		}},
		{"missing ref", func(t *testing.T) {
			c := connected(t)
			c.send(`{"type":"ping"}`)
			m, err := c.next(5 * time.Second)
			if err != nil || !bytes.Contains(m, []byte(`"bad_request"`)) || !bytes.Contains(m, []byte(`ref`)) {
				t.Fatalf("reply %s %v, want bad_request about the ref", m, err)
			}
			c.alive()
		}},
		{"multi-message frame", func(t *testing.T) {
			c := connected(t)
			c.send(`{"type":"ping","ref":"m1"}` + "\n" + `{"type":"ping","ref":"m2"}` + "\n\n" + `{"type":"ping","ref":"m3"}`)
			for _, ref := range []string{"m1", "m2", "m3"} {
				if rep := c.reply(ref); !rep.OK {
					t.Fatalf("%s: %+v", ref, rep.Error)
				}
			}
		}},
		{"oversized frame", func(t *testing.T) {
			c := connected(t)
			c.send(`{"type":"publish","ref":"big","topic":"chat/x","event":"m","data":"` + strings.Repeat("x", 5000) + `"}`)
			c.expectClose(protocol.CloseTooBig)
		}},
		{"binary frame", func(t *testing.T) {
			c := connected(t)
			c.sendType(websocket.MessageBinary, []byte{1, 2, 3})
			c.expectClose(protocol.CloseUnsupportedData)
		}},
		{"invalid topic", func(t *testing.T) {
			c := connected(t)
			c.expectError(c.replyTo("t1", `{"type":"subscribe","ref":"t1","topic":"chat//x"}`), protocol.CodeBadRequest)
			c.expectError(c.replyTo("t2", `{"type":"publish","ref":"t2","topic":"chat/x","event":"bad name"}`), protocol.CodeBadRequest)
			c.expectError(c.replyTo("t3", `{"type":"publish","ref":"t3","topic":"chat/x","event":"INSERT"}`), protocol.CodeBadRequest)
			c.alive()
		}},
		{"forbidden topic", func(t *testing.T) {
			c := connected(t)
			c.expectError(c.replyTo("f1", `{"type":"subscribe","ref":"f1","topic":"secret/x"}`), protocol.CodeForbidden)
			c.expectError(c.replyTo("f2", `{"type":"publish","ref":"f2","topic":"news/x","event":"m"}`), protocol.CodeForbidden)
			c.expectError(c.replyTo("f3", `{"type":"subscribe","ref":"f3","topic":"chat/x/y"}`), protocol.CodeForbidden)
			c.alive()
		}},
		{"persist without a database", func(t *testing.T) {
			c := connected(t)
			c.expectError(c.replyTo("p1", `{"type":"publish","ref":"p1","topic":"chat/x","event":"m","persist":true}`), protocol.CodeUnavailable)
			status, body := post(t, node, "/api/v1/emit", apiKey, map[string]any{"topic": "chat/x", "event": "m", "durable": true})
			if status != http.StatusServiceUnavailable || !bytes.Contains(body, []byte("UPDRAFT_DATABASE_URL")) {
				t.Fatalf("durable emit without a database: %d %s", status, body)
			}
			c.alive()
		}},
		{"publish to a table topic", func(t *testing.T) {
			c := connected(t)
			c.expectError(c.replyTo("p1", `{"type":"publish","ref":"p1","topic":"orders","event":"m"}`), protocol.CodeForbidden)
			c.alive()
		}},
		{"expired token", func(t *testing.T) {
			c := dialRaw(t, node.WSURL(), nil)
			c.expectError(c.replyTo("c1", `{"type":"connect","ref":"c1","token":"`+token(t, "u", -time.Minute, []string{"**"}, nil)+`"}`), protocol.CodeUnauthorized)
			c.expectClose(protocol.CloseUnauthorized)
		}},
		{"garbage token", func(t *testing.T) {
			c := dialRaw(t, node.WSURL(), nil)
			c.expectError(c.replyTo("c1", `{"type":"connect","ref":"c1","token":"garbage.garbage.garbage"}`), protocol.CodeUnauthorized)
			c.expectClose(protocol.CloseUnauthorized)
		}},
		{"no token on a server without anonymous access", func(t *testing.T) {
			c := dialRaw(t, node.WSURL(), nil)
			c.expectError(c.replyTo("c1", `{"type":"connect","ref":"c1"}`), protocol.CodeUnauthorized)
			c.expectClose(protocol.CloseUnauthorized)
		}},
		{"token expires on an open connection", func(t *testing.T) {
			c := dialRaw(t, node.WSURL(), nil)
			c.connect(token(t, "u", 2*time.Second, []string{"**"}, nil))
			c.alive()
			c.expectClose(protocol.CloseUnauthorized)
		}},
		{"message before connect", func(t *testing.T) {
			c := dialRaw(t, node.WSURL(), nil)
			c.expectError(c.replyTo("s1", `{"type":"subscribe","ref":"s1","topic":"chat/x"}`), protocol.CodeUnauthorized)
			c.expectClose(protocol.CloseUnauthorized)
		}},
		{"garbage stream", func(t *testing.T) {
			c := connected(t)
			c.send(strings.Repeat("nonsense\n", 12))
			c.expectClose(protocol.CloseProtocol)
		}},
		{"flood past the rate limit", func(t *testing.T) {
			c := connected(t)
			var frame strings.Builder
			for i := 0; i < 100; i++ {
				frame.WriteString(`{"type":"ping","ref":"r` + strconv.Itoa(i) + `"}` + "\n")
			}
			c.send(frame.String())
			limited := 0
			for i := 0; i < 100; i++ {
				m, err := c.next(5 * time.Second)
				if err != nil {
					t.Fatal(err)
				}
				if bytes.Contains(m, []byte(`"rate_limited"`)) {
					limited++
				}
			}
			if limited < 50 {
				t.Fatalf("%d of 100 requests were rate limited at 20/s with a burst of 40, want at least 50", limited)
			}
			// Staying over the limit for 10 s closes with 4029. Bounded:
			// one frame of 10 pings per 100 ms, for at most 20 s.
			deadline := time.Now().Add(20 * time.Second)
			for time.Now().Before(deadline) {
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				err := c.c.Write(ctx, websocket.MessageText, []byte(strings.Repeat(`{"type":"ping","ref":"f"}`+"\n", 10)))
				cancel()
				if err != nil {
					break
				}
				time.Sleep(100 * time.Millisecond) // pacing the flood
			}
			c.expectClose(protocol.CloseRateLimited)
		}},
		{"subscription limit", func(t *testing.T) {
			c := connected(t)
			for i := 0; i < 5; i++ {
				if rep := c.replyTo("s"+strconv.Itoa(i), `{"type":"subscribe","ref":"s`+strconv.Itoa(i)+`","topic":"chat/t`+strconv.Itoa(i)+`"}`); !rep.OK {
					t.Fatalf("subscription %d refused: %+v", i, rep.Error)
				}
			}
			c.expectError(c.replyTo("over", `{"type":"subscribe","ref":"over","topic":"chat/one-more"}`), protocol.CodeTooLarge)
			// Subscribing again to a subscribed topic replaces it and succeeds.
			if rep := c.replyTo("again", `{"type":"subscribe","ref":"again","topic":"chat/t0"}`); !rep.OK {
				t.Fatalf("resubscribe at the limit: %+v", rep.Error)
			}
		}},
		{"HTTP emit without or with a wrong API key", func(t *testing.T) {
			for _, key := range []string{"", "wrong-key"} {
				status, body := post(t, node, "/api/v1/emit", key, emitItem{Topic: "chat/x", Event: "m"})
				if status != http.StatusUnauthorized || !bytes.Contains(body, []byte(`"unauthorized"`)) {
					t.Fatalf("key %q: %d %s, want 401 unauthorized", key, status, body)
				}
			}
			status, body := post(t, node, "/api/v1/emit", apiKey, emitItem{Topic: "orders", Event: "m"})
			if status != http.StatusForbidden {
				t.Fatalf("emit to a table topic: %d %s, want 403", status, body)
			}
			status, body = post(t, node, "/api/v1/emit", apiKey, map[string]any{"topic": "chat/x", "event": "m", "data": 1, "extra": true})
			if status != http.StatusBadRequest {
				t.Fatalf("emit with an unknown field: %d %s, want 400", status, body)
			}
		}},
		{"wrong Origin", func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, resp, err := websocket.Dial(ctx, node.WSURL(), &websocket.DialOptions{HTTPHeader: http.Header{"Origin": {"https://evil.example.com"}}})
			if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
				t.Fatalf("dial with a wrong Origin: %v %v, want 403", resp, err)
			}
			c := dialRaw(t, node.WSURL(), http.Header{"Origin": {"https://app.example.com"}})
			c.connect(good)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.run(t)
			stillServing(t)
		})
	}
}
