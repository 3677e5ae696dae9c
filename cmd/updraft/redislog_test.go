package main

import (
	"context"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// TestRedisLoggerRateLimits: go-redis logs each failed dial while Redis is
// down; one format is logged once per redisLogEvery, as a zap entry.
func TestRedisLoggerRateLimits(t *testing.T) {
	core, logs := observer.New(zap.DebugLevel)
	l := &redisLogger{log: zap.New(core), seen: map[string]*redisLogLine{}}
	ctx := context.Background()
	const dialFailed = "redis: connection pool: failed to dial after %d attempts: %v"
	for range 50 {
		l.Printf(ctx, dialFailed, 5, "connection refused")
	}
	l.Printf(ctx, "Conn has unread data (not push notification), removing it")
	entries := logs.AllUntimed()
	if len(entries) != 2 {
		t.Fatalf("%d entries, want 2 (one per format): %+v", len(entries), entries)
	}
	if got, want := entries[0].Message, "connection pool: failed to dial after 5 attempts: connection refused"; got != want {
		t.Errorf("message %q, want %q (the \"redis: \" prefix is the logger's name)", got, want)
	}
	if entries[0].Level != zap.WarnLevel {
		t.Errorf("level %v, want warn", entries[0].Level)
	}
	l.seen[dialFailed].last = l.seen[dialFailed].last.Add(-redisLogEvery) // the window has passed
	l.Printf(ctx, dialFailed, 5, "connection refused")
	if entries = logs.AllUntimed(); len(entries) != 3 || entries[2].ContextMap()["suppressed"] != int64(49) {
		t.Errorf("after the window: %+v, want a third entry counting 49 suppressed", entries)
	}
}
