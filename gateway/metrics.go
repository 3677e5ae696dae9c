package gateway

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the gateway's Prometheus series. Hot-path counters are added
// to once per fan-out, never once per delivery.
type metrics struct {
	connections      prometheus.Gauge
	subscriptions    prometheus.Gauge
	messagesIn       *prometheus.CounterVec // by source: client, http
	messagesOut      prometheus.Counter
	fanout           prometheus.Histogram
	slowConsumers    prometheus.Counter
	writesWaited     prometheus.Counter
	closes           *prometheus.CounterVec // by close code
	rejected         *prometheus.CounterVec // by error code
	messagesInClient prometheus.Counter
	messagesInHTTP   prometheus.Counter
	presenceEvents   *prometheus.CounterVec // by event: join, update, leave
}

func newMetrics(reg prometheus.Registerer, queued *nodeBytes) *metrics {
	m := &metrics{
		connections: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "updraft_connections", Help: "Open WebSocket connections on this node.",
		}),
		subscriptions: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "updraft_subscriptions", Help: "Client subscriptions on this node.",
		}),
		messagesIn: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "updraft_messages_in_total", Help: "Messages published through this node, by source (client, http).",
		}, []string{"source"}),
		messagesOut: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "updraft_messages_out_total", Help: "Events queued to local subscribers.",
		}),
		fanout: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "updraft_fanout_seconds",
			Help:    "From a message's publish time to its being queued for every local subscriber.",
			Buckets: []float64{.0005, .001, .002, .005, .01, .02, .05, .1, .2, .5, 1, 2},
		}),
		slowConsumers: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "updraft_slow_consumer_closes_total", Help: "Connections closed with 4008 because their send queue overflowed.",
		}),
		writesWaited: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "updraft_writes_waited_total", Help: "Writes a client's socket did not take at once, finished by a goroutine that waits for it (clients reading slowly).",
		}),
		closes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "updraft_server_closes_total", Help: "Connections the server closed, by close code.",
		}, []string{"code"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "updraft_requests_rejected_total", Help: "Client requests answered with an error, by error code.",
		}, []string{"code"}),
		presenceEvents: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "updraft_presence_events_total", Help: "Presence events this node signalled to the cluster, by event (join, update, leave).",
		}, []string{"event"}),
	}
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "updraft_queued_bytes", Help: "Bytes queued for this node's connections, being written included (capped by UPDRAFT_NODE_QUEUE_BYTES).",
	}, func() float64 { return float64(queued.n.Load()) }))
	m.messagesInClient = m.messagesIn.WithLabelValues("client")
	m.messagesInHTTP = m.messagesIn.WithLabelValues("http")
	reg.MustRegister(m.connections, m.subscriptions, m.messagesIn, m.messagesOut, m.fanout,
		m.slowConsumers, m.writesWaited, m.closes, m.rejected, m.presenceEvents,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}
