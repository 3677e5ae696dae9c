package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/updraft/updraft/broker"
	"github.com/updraft/updraft/presence"
	"github.com/updraft/updraft/protocol"
)

// brokenBroker fails every publish and history read with err.
type brokenBroker struct {
	broker.Broker
	err error
}

func (b *brokenBroker) Publish(context.Context, string, broker.Publication) (broker.Position, error) {
	return broker.Position{}, b.err
}

func (b *brokenBroker) PublishBatch(context.Context, []broker.Item) ([]broker.Position, error) {
	return nil, b.err
}

func (b *brokenBroker) History(context.Context, string, broker.HistoryQuery) (broker.HistoryPage, error) {
	return broker.HistoryPage{}, b.err
}

// brokenPresence fails every members read with err.
type brokenPresence struct {
	presence.Store
	err error
}

func (p *brokenPresence) Members(context.Context, string) ([]presence.Member, error) {
	return nil, p.err
}

// apiCall sends an HTTP API call with the key "key" and returns the status
// and body.
func apiCall(t *testing.T, hs *httptest.Server, method, path, body string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, hs.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer key")
	resp, err := hs.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

// TestStoreErrorsClassified: a failed store call is answered alike on the
// WebSocket path and the HTTP API: unavailable (503) when the store is
// unreachable, internal (500) for anything else, logged with its topic
// and answered without the error's text.
func TestStoreErrorsClassified(t *testing.T) {
	t.Parallel()
	const secret = "dial tcp 10.1.2.3:6379: secret internals"
	for _, tc := range []struct {
		name   string
		err    error
		code   string
		status int
	}{
		{"unavailable", fmt.Errorf("%s: %w", secret, broker.ErrUnavailable), protocol.CodeUnavailable, http.StatusServiceUnavailable},
		{"presence unavailable", fmt.Errorf("%s: %w", secret, presence.ErrUnavailable), protocol.CodeUnavailable, http.StatusServiceUnavailable},
		{"timeout", fmt.Errorf("%s: %w", secret, context.DeadlineExceeded), protocol.CodeUnavailable, http.StatusServiceUnavailable},
		{"internal", errors.New(secret), protocol.CodeInternal, http.StatusInternalServerError},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			core, logs := observer.New(zap.ErrorLevel)
			b := &brokenBroker{Broker: newTestBroker(t, nil), err: tc.err}
			s := testServer(t, Config{
				Broker: b, Presence: &brokenPresence{Store: presence.NewMemory(presence.MemoryConfig{}), err: tc.err},
				AllowAnonymous: true, APIKey: "key", Logger: zap.New(core),
			})
			hs := httptest.NewServer(s)
			t.Cleanup(hs.Close)

			calls := []struct{ method, path, body string }{
				{http.MethodPost, "/api/v1/emit", `{"topic":"chat/1","event":"msg"}`},
				{http.MethodGet, "/api/v1/history?topic=chat/1", ""},
				{http.MethodGet, "/api/v1/presence?topic=chat/1", ""},
				{http.MethodPost, "/api/v1/stream?topic=chat/1&event=tok", "1\n"},
			}
			for _, c := range calls {
				status, body := apiCall(t, hs, c.method, c.path, c.body)
				var env errorBody
				if err := json.Unmarshal(body, &env); err != nil || status != tc.status || env.Error.Code != tc.code {
					t.Errorf("%s %s: %d %s, want %d %s", c.method, c.path, status, body, tc.status, tc.code)
				}
				if strings.Contains(string(body), "secret") {
					t.Errorf("%s %s answered the error's text: %s", c.method, c.path, body)
				}
			}
			status, body := apiCall(t, hs, http.MethodPost, "/api/v1/emit/batch", `{"messages":[{"topic":"chat/1","event":"a"},{"topic":"orders","event":"b"}]}`)
			var batch struct {
				Results []struct{ Error *protocol.Error }
			}
			if err := json.Unmarshal(body, &batch); err != nil || status != http.StatusOK || len(batch.Results) != 2 ||
				batch.Results[0].Error == nil || batch.Results[0].Error.Code != tc.code ||
				batch.Results[1].Error == nil || batch.Results[1].Error.Code != protocol.CodeForbidden {
				t.Errorf("batch: %d %s, want %s for the first message and forbidden for the table topic", status, body, tc.code)
			}

			c := dialWS(t, hs, "")
			for _, req := range []map[string]any{
				{"type": "publish", "topic": "chat/1", "event": "msg"},
				{"type": "history", "topic": "chat/1"},
				{"type": "members", "topic": "chat/1"},
			} {
				if rep := c.request(req); rep.OK || rep.Error.Code != tc.code || strings.Contains(rep.Error.Message, "secret") {
					t.Errorf("%v: %+v, want %s without the error's text", req, rep.Error, tc.code)
				}
			}

			if tc.code != protocol.CodeInternal {
				if n := logs.Len(); n != 0 {
					t.Errorf("%d errors logged for an unavailable store, want none", n)
				}
				return
			}
			// Each internal failure is logged once, with its error and
			// context: 4 HTTP calls, 1 batch, 3 requests.
			entries := logs.All()
			if len(entries) != 8 {
				t.Errorf("%d errors logged, want 8", len(entries))
			}
			for _, e := range entries {
				fields := e.ContextMap()
				if !strings.Contains(fmt.Sprint(fields["error"]), secret) {
					t.Errorf("log %q has no error: %v", e.Message, fields)
				}
			}
			for _, e := range entries[:4] { // the HTTP calls name their topic
				if e.ContextMap()["topic"] != "chat/1" {
					t.Errorf("log %q does not name the topic: %v", e.Message, e.ContextMap())
				}
			}
		})
	}
}

// TestTopicValidatedEverywhere: members validates its topic as every
// other request does, on both paths; and the table-topic rule (forbidden
// to publish to, bad_request otherwise) answers alike on both.
func TestTopicValidatedEverywhere(t *testing.T) {
	t.Parallel()
	_, hs, _ := presenceServer(t, Config{})
	c := dialWS(t, hs, "")
	for _, topic := range []string{"", "chat//1", "chat/1 "} {
		for _, typ := range []string{"subscribe", "unsubscribe", "history", "track", "members"} {
			expectError(t, c.request(map[string]any{"type": typ, "topic": topic}), protocol.CodeBadRequest, "invalid topic")
		}
		for _, path := range []string{"/api/v1/history?topic=", "/api/v1/presence?topic="} {
			status, body := apiCall(t, hs, http.MethodGet, path+url.QueryEscape(topic), "")
			if status != http.StatusBadRequest || !strings.Contains(string(body), "invalid topic") {
				t.Errorf("GET %s%q: %d %s, want 400 invalid topic", path, topic, status, body)
			}
		}
	}
	expectError(t, c.request(map[string]any{"type": "publish", "topic": "orders", "event": "x"}), protocol.CodeForbidden, "tracker")
	expectError(t, c.request(map[string]any{"type": "publish", "topic": "chat/1", "event": ""}), protocol.CodeBadRequest, "event")
	for _, call := range []struct {
		path, body string
		status     int
	}{
		{"/api/v1/emit", `{"topic":"orders","event":"x"}`, http.StatusForbidden},
		{"/api/v1/emit", `{"topic":"chat/1","event":""}`, http.StatusBadRequest},
		{"/api/v1/stream?topic=orders&event=x", "", http.StatusForbidden},
		{"/api/v1/stream?topic=chat/1&event=", "", http.StatusBadRequest},
	} {
		if status, body := apiCall(t, hs, http.MethodPost, call.path, call.body); status != call.status {
			t.Errorf("POST %s %s: %d %s, want %d", call.path, call.body, status, body, call.status)
		}
	}
}

// TestHTTPStatusOfEveryCode: every error code has its HTTP status.
func TestHTTPStatusOfEveryCode(t *testing.T) {
	t.Parallel()
	for _, code := range []string{protocol.CodeBadRequest, protocol.CodeUnauthorized, protocol.CodeForbidden, protocol.CodeNotFound,
		protocol.CodeTooLarge, protocol.CodeRateLimited, protocol.CodeUnavailable, protocol.CodeInternal} {
		if httpStatus[code] == 0 {
			t.Errorf("no HTTP status for %s", code)
		}
	}
}
