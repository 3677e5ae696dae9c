package tracker

import dto "github.com/prometheus/client_model/go"

// leaderValue reads the leader gauge.
func (m *Metrics) leaderValue() float64 {
	var out dto.Metric
	_ = m.leader.Write(&out)
	return out.GetGauge().GetValue()
}
