package brokertest

import (
	"context"
	"encoding/json"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/updraft/updraft/broker"
	"github.com/updraft/updraft/internal/testenv"
)

// benchData is a typical small change event.
var benchData = json.RawMessage(`{"id":1234,"title":"Buy milk","done":false,"owner":"user:42","updated_at":"2025-01-01T12:00:00Z"}`)

// BenchmarkPublish measures Publish through f's broker: to a topic nobody
// subscribes to, to a subscribed topic (the time includes delivery to the
// Handler), and from parallel publishers on distinct subscribed topics.
func BenchmarkPublish(b *testing.B, f Factory) {
	b.Run("Unsubscribed", func(b *testing.B) {
		benchPublish(b, f, false)
	})
	b.Run("Subscribed", func(b *testing.B) {
		benchPublish(b, f, true)
	})
	b.Run("Parallel", func(b *testing.B) {
		var delivered atomic.Int64
		br := f.New(b, Config{})
		br.RegisterEventHandler(func(broker.Message) { delivered.Add(1) }, nil)
		b.Cleanup(func() { _ = br.Close() })
		var next atomic.Int64
		pub := broker.Publication{Event: "UPDATE", Data: benchData}
		b.ReportAllocs()
		b.ResetTimer()
		start := time.Now()
		b.RunParallel(func(pb *testing.PB) {
			topic := fmt.Sprintf("bench/parallel/%d-%d", time.Now().UnixNano(), next.Add(1))
			if err := br.Subscribe(context.Background(), topic); err != nil {
				b.Errorf("Subscribe: %v", err)
				return
			}
			for pb.Next() {
				if _, err := br.Publish(context.Background(), topic, pub); err != nil {
					b.Errorf("Publish: %v", err)
					return
				}
			}
		})
		waitDelivered(b, &delivered, int64(b.N))
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
	})
}

func benchPublish(b *testing.B, f Factory, subscribed bool) {
	var delivered atomic.Int64
	br := f.New(b, Config{})
	br.RegisterEventHandler(func(broker.Message) { delivered.Add(1) }, nil)
	b.Cleanup(func() { _ = br.Close() })
	topic := fmt.Sprintf("bench/%s/%d", b.Name(), time.Now().UnixNano())
	if subscribed {
		if err := br.Subscribe(context.Background(), topic); err != nil {
			b.Fatalf("Subscribe: %v", err)
		}
	}
	pub := broker.Publication{Event: "UPDATE", Data: benchData}
	b.ReportAllocs()
	start := time.Now()
	n := 0
	for b.Loop() {
		if _, err := br.Publish(context.Background(), topic, pub); err != nil {
			b.Fatalf("Publish: %v", err)
		}
		n++
	}
	if subscribed {
		waitDelivered(b, &delivered, int64(n))
	}
	b.ReportMetric(float64(n)/time.Since(start).Seconds(), "msgs/s")
}

// waitDelivered waits until the Handler has seen n messages.
func waitDelivered(b *testing.B, delivered *atomic.Int64, n int64) {
	b.Helper()
	testenv.Eventually(b, waitFor, func() bool { return delivered.Load() >= n },
		"%d of %d messages delivered", delivered.Load(), n)
}
