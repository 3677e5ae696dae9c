package gateway

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/updraft/updraft/protocol"
)

// TestPresenceRefusedOnTableTopics: no row filter applies to presence, so
// a table topic carries none; every way in is refused with bad_request.
func TestPresenceRefusedOnTableTopics(t *testing.T) {
	_, hs, _ := presenceServer(t, Config{})
	c := dialWS(t, hs, filterToken(t, map[string]string{"orders": "customer_id=eq.7"}))
	c.subscribe(map[string]any{"topic": "orders"}) // track needs a subscription
	for _, req := range []map[string]any{
		{"type": "track", "topic": "orders", "state": map[string]any{"tenant": 7}},
		{"type": "members", "topic": "orders"},
		{"type": "subscribe", "topic": "orders", "presence": true},
		{"type": "subscribe", "topic": "billing.invoices", "presence": true},
	} {
		expectError(t, c.request(req), protocol.CodeBadRequest, "database changes only")
	}
	if rep := c.request(map[string]any{"type": "untrack", "topic": "orders"}); !rep.OK {
		t.Errorf("untrack on a table topic: %+v, want a no-op success", rep.Error)
	}

	req, _ := http.NewRequest("GET", hs.URL+"/api/v1/presence?topic=orders", nil)
	req.Header.Set("Authorization", "Bearer key")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), protocol.CodeBadRequest) || !strings.Contains(string(body), "database changes only") {
		t.Errorf("GET /api/v1/presence?topic=orders: %s %s, want 400 bad_request", resp.Status, body)
	}
}

// TestPresenceEmptyMembers: a subscribe with presence, a members request
// and GET /api/v1/presence always carry the members array, [] when the
// topic is empty; a subscribe without presence carries none.
func TestPresenceEmptyMembers(t *testing.T) {
	_, hs, _ := presenceServer(t, Config{})
	c := dialWS(t, hs, "")
	for _, tc := range []struct {
		req  map[string]any
		want string
	}{
		{map[string]any{"type": "subscribe", "topic": "doc/empty", "presence": true}, `"members":[]`},
		{map[string]any{"type": "members", "topic": "doc/empty"}, `"members":[]`},
		{map[string]any{"type": "subscribe", "topic": "doc/quiet"}, ""},
	} {
		rep := c.request(tc.req)
		if !rep.OK {
			t.Fatalf("%v: %+v", tc.req, rep.Error)
		}
		if got := string(rep.Data); tc.want != "" && !strings.Contains(got, tc.want) || tc.want == "" && strings.Contains(got, "members") {
			t.Errorf("%v: reply data %s, want %q", tc.req, got, tc.want)
		}
	}
	req, _ := http.NewRequest("GET", hs.URL+"/api/v1/presence?topic=doc/empty", nil)
	req.Header.Set("Authorization", "Bearer key")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"members":[]`) {
		t.Errorf("GET /api/v1/presence on an empty topic: %s %s, want members []", resp.Status, body)
	}
}
