package broker

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the Redis broker's Prometheus series: its errors and the
// gaps in its live stream. The broker owns them, so the gateway it
// delivers to knows nothing of Redis.
type Metrics struct {
	errors         prometheus.Counter
	gapsFilled     prometheus.Counter
	gapsUnfillable prometheus.Counter
}

// NewMetrics makes the broker's series and registers them with reg. A node
// without Redis may register them too, so that every node exports the same
// series (at zero).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "updraft_redis_errors_total", Help: "Errors talking to Redis.",
		}),
		gapsFilled: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "updraft_gap_messages_filled_total", Help: "Messages the broker's live stream lost and history supplied.",
		}),
		gapsUnfillable: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "updraft_gap_messages_lost_total", Help: "Messages the broker's live stream lost that history no longer held.",
		}),
	}
	reg.MustRegister(m.errors, m.gapsFilled, m.gapsUnfillable)
	return m
}

// The methods count nothing on a nil *Metrics: a broker built without
// metrics.

func (m *Metrics) error() {
	if m != nil {
		m.errors.Inc()
	}
}

func (m *Metrics) gapFilled(n int) {
	if m != nil {
		m.gapsFilled.Add(float64(n))
	}
}

func (m *Metrics) gapUnfillable(n int) {
	if m != nil {
		m.gapsUnfillable.Add(float64(n))
	}
}
