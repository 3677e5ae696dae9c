package client

import (
	"log/slog"
	"testing"
)

// BenchmarkConnHandleEvent measures decoding one event from the server (to
// a topic with no subscription, so no handler runs): the client's per-event
// cost before its handlers.
func BenchmarkConnHandleEvent(b *testing.B) {
	c := &Client{log: slog.New(slog.DiscardHandler), subs: map[string]*Subscription{}}
	cn := &conn{c: c}
	line := []byte(`{"type":"event","topic":"chat/room-1","event":"message","epoch":"e1","seq":42,"ts":1700000000000,"from":"user-7","data":{"text":"hello there","n":3}}`)
	b.ReportAllocs()
	for b.Loop() {
		cn.handle(line)
	}
}
