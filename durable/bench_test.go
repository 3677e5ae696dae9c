package durable

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/updraft/updraft/broker"
	"github.com/updraft/updraft/internal/testenv"
)

// benchData is a typical small chat message.
var benchData = json.RawMessage(`{"id":1234,"text":"Buy milk on the way home","owner":"user:42","at":"2025-01-01T12:00:00Z"}`)

// BenchmarkPublishDurable measures what durable history costs a publisher:
// one publisher publishing to one topic through durable.Wrap(inner, store,
// ["chat/**"]), for a persistent topic (Persistent: stored in PostgreSQL),
// for a topic the patterns do not match (NotPersistent: the wrapper only
// checks the patterns), and through the inner broker alone (Bare), with the
// in-memory and the Redis broker inside.
//
// Stores are written in batches off the hot path, so a publish returns
// before its message is stored. After the loop the benchmark publishes one
// more message with Durable, which returns once its batch is stored; the
// single writer stores batches in order, so everything before it is stored
// too. That wait is drain-ms; stored-msgs/s is the loop's messages over the
// loop and the drain together. Allocations count the whole process, the
// writer's batches included. Run it with a fixed count, below and above the
// store's 100,000-message backlog:
//
//	go test -run '^$' -bench PublishDurable -benchtime 50000x ./durable
//	go test -run '^$' -bench 'PublishDurable/Memory/^Persistent$' -benchtime 300000x ./durable
func BenchmarkPublishDurable(b *testing.B) {
	pg := testenv.StartPostgres(b)
	rs := testenv.StartRedis(b)
	db := pg.DB(b)
	inners := []struct {
		name string
		new  func(testing.TB) broker.Broker
	}{
		{"Memory", func(tb testing.TB) broker.Broker {
			return broker.NewMemory(broker.MemoryConfig{})
		}},
		{"Redis", func(tb testing.TB) broker.Broker {
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			r, err := broker.NewRedis(ctx, broker.RedisConfig{URL: rs.URL()})
			if err != nil {
				tb.Fatalf("NewRedis: %v", err)
			}
			return r
		}},
	}
	for _, in := range inners {
		for _, c := range []struct {
			name    string
			wrapped bool
			topic   string
		}{
			{"Bare", false, "chat/bare"},
			{"NotPersistent", true, "news/plain"},
			{"Persistent", true, "chat/kept"},
		} {
			b.Run(in.name+"/"+c.name, func(b *testing.B) {
				// Each run starts with a fresh store and an empty table, so
				// that runs do not depend on their order.
				store := openBenchStore(b, pg.URL())
				if _, err := db.Exec(`TRUNCATE updraft.messages`); err != nil {
					b.Fatal(err)
				}
				inner := in.new(b)
				b.Cleanup(func() { inner.Close() })
				var br broker.Broker = inner
				if c.wrapped {
					w, err := Wrap(inner, store, []string{"chat/**"})
					if err != nil {
						b.Fatal(err)
					}
					br = w
				}
				topic := fmt.Sprintf("%s/%d", c.topic, time.Now().UnixNano())
				pub := broker.Publication{Event: "message", From: "user:42", Data: benchData}
				ctx := context.Background()

				b.ReportAllocs()
				for b.Loop() {
					if _, err := br.Publish(ctx, topic, pub); err != nil {
						b.Fatalf("Publish: %v", err)
					}
				}
				n, loop := b.N, b.Elapsed()
				b.ReportMetric(float64(n)/loop.Seconds(), "msgs/s")
				if !c.wrapped {
					return
				}

				dctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
				defer cancel()
				start := time.Now()
				last := pub
				last.Durable = true
				if _, err := br.Publish(dctx, topic, last); err != nil {
					b.Fatalf("the durable publish after the loop: %v", err)
				}
				drain := time.Since(start)

				var stored int
				if err := db.QueryRow(`SELECT count(*) FROM updraft.messages WHERE topic = $1`, topic).Scan(&stored); err != nil {
					b.Fatal(err)
				}
				want := 1 // the durable one
				if c.name == "Persistent" {
					want += n
				}
				if stored != want {
					b.Fatalf("PostgreSQL holds %d messages of %s, want %d", stored, topic, want)
				}
				if c.name == "Persistent" {
					b.ReportMetric(float64(drain)/float64(time.Millisecond), "drain-ms")
					b.ReportMetric(float64(n)/(loop+drain).Seconds(), "stored-msgs/s")
				}
			})
		}
	}
}

// openBenchStore opens a Store with the default configuration, closed when
// the benchmark ends.
func openBenchStore(b *testing.B, url string) *Store {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := Open(ctx, Config{URL: url})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}
