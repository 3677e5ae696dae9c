package tracker

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the tracker's Prometheus metrics.
type Metrics struct {
	leader    prometheus.Gauge
	lag       prometheus.Gauge
	batch     prometheus.Histogram
	polls     prometheus.Histogram
	changes   prometheus.Counter
	truncated prometheus.Counter
	errors    *prometheus.CounterVec
}

// NewMetrics makes the tracker's metrics and registers them with reg
// (none when nil).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "updraft_tracker_leader", Help: "1 while this tracker holds the lease and publishes, 0 on standby.",
		}),
		lag: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "updraft_tracker_lag_seconds", Help: "Age of the oldest change in the last batch read when it was read (0 when there was none).",
		}),
		batch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "updraft_tracker_batch_size", Help: "Changes published per poll.",
			Buckets: []float64{0, 1, 10, 100, 500, 1000, 5000},
		}),
		polls: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "updraft_tracker_poll_seconds", Help: "Time to read a batch from PostgreSQL and publish it.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
		changes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "updraft_tracker_changes_total", Help: "Changes published.",
		}),
		truncated: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "updraft_tracker_truncated_total", Help: "Changes whose row was too large and was sent as its primary key.",
		}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "updraft_tracker_errors_total", Help: "Errors by operation (poll, publish, lease, cursor, retention); each is retried.",
		}, []string{"op"}),
	}
	if reg != nil {
		reg.MustRegister(m.leader, m.lag, m.batch, m.polls, m.changes, m.truncated, m.errors)
	}
	return m
}
