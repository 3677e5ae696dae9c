package gateway

import (
	"encoding/json"
	"testing"

	"github.com/updraft/updraft/protocol"
)

// TestRequestHandlersCoverRequestTypes keeps the two halves of the request
// table equal: every type DecodeRequest accepts has a handler, and no
// handler waits for a type that cannot decode.
func TestRequestHandlersCoverRequestTypes(t *testing.T) {
	types := protocol.RequestTypes()
	for _, typ := range types {
		if requestHandlers[typ] == nil {
			t.Errorf("request type %q has no handler in requestHandlers", typ)
		}
	}
	if len(requestHandlers) != len(types) {
		t.Errorf("requestHandlers has %d entries for %d request types %v", len(requestHandlers), len(types), types)
	}
}

// TestRequestWithoutHandlerAnsweredInternal: a type that decoded but has no
// handler still gets a reply, internal, rather than none.
func TestRequestWithoutHandlerAnsweredInternal(t *testing.T) {
	s := testServer(t, Config{AllowAnonymous: true})
	sess := fakeSessions(s, "chat/x", 1, 10)[0]
	sess.handle(&protocol.Request{Type: "later", Ref: "r1"})
	items := sess.queue.take(nil).items
	if len(items) != 1 {
		t.Fatalf("got %d items, want one reply", len(items))
	}
	var r protocol.Reply
	if err := json.Unmarshal(items[0], &r); err != nil {
		t.Fatal(err)
	}
	if r.Ref != "r1" || r.OK || r.Error == nil || r.Error.Code != protocol.CodeInternal {
		t.Fatalf("reply %s, want an internal error for r1", items[0])
	}
}
