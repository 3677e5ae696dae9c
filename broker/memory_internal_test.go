package broker

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/updraft/updraft/internal/testenv"
)

// topicCount is the number of topics a Memory holds state for.
func (m *Memory) topicCount() int {
	n := 0
	for i := range m.shards {
		s := &m.shards[i]
		s.mu.RLock()
		n += len(s.topics)
		s.mu.RUnlock()
	}
	return n
}

// TestMemorySweepForgetsIdleTopics: topics idle past their TTL are
// forgotten, unless subscribed; a subscribed one is forgotten once
// unsubscribed.
func TestMemorySweepForgetsIdleTopics(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	m := NewMemory(MemoryConfig{Retention: Retention{TTL: 50 * time.Millisecond}})
	defer m.Close()
	for i := range 100 {
		if _, err := m.Publish(ctx, fmt.Sprintf("idle/%d", i), Publication{Data: json.RawMessage(`{}`)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.Subscribe(ctx, "kept"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Publish(ctx, "kept", Publication{Data: json.RawMessage(`{}`)}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, func() bool { return m.topicCount() == 1 },
		"%d topics held, want only the subscribed one", m.topicCount())
	if err := m.Unsubscribe(ctx, "kept"); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, func() bool { return m.topicCount() == 0 },
		"%d topics held after the last unsubscribe", m.topicCount())
}

// TestMemoryRingWraps checks the ring's order across many wraps.
func TestMemoryRingWraps(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	m := NewMemory(MemoryConfig{Retention: Retention{Size: 7}})
	defer m.Close()
	for i := 1; i <= 100; i++ {
		if _, err := m.Publish(ctx, "ring", Publication{Data: json.RawMessage(fmt.Sprint(i))}); err != nil {
			t.Fatal(err)
		}
		page, err := m.History(ctx, "ring", HistoryQuery{})
		if err != nil {
			t.Fatal(err)
		}
		n := min(i, 7)
		if len(page.Messages) != n {
			t.Fatalf("after %d: %d messages", i, len(page.Messages))
		}
		for j, msg := range page.Messages {
			want := uint64(i - n + j + 1)
			if msg.Seq != want || string(msg.Data) != fmt.Sprint(want) {
				t.Fatalf("after %d: message %d is seq %d data %s, want %d", i, j, msg.Seq, msg.Data, want)
			}
		}
	}
}
