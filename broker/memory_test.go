package broker_test

import (
	"testing"

	"github.com/updraft/updraft/broker"
	"github.com/updraft/updraft/broker/brokertest"
)

// memoryFactory makes independent Memory brokers: one node each.
var memoryFactory = brokertest.Factory{
	New: func(tb testing.TB, cfg brokertest.Config) broker.Broker {
		return broker.NewMemory(broker.MemoryConfig{Retention: cfg.Retention})
	},
	Coordinator: true,
}

func TestMemory(t *testing.T) {
	t.Parallel()
	brokertest.Run(t, memoryFactory)
}

func BenchmarkPublish(b *testing.B) {
	b.Run("Memory", func(b *testing.B) { brokertest.BenchmarkPublish(b, memoryFactory) })
	b.Run("Redis", func(b *testing.B) { brokertest.BenchmarkPublish(b, redisFactory(b, startRedis(b))) })
}
