package broker

import "github.com/prometheus/client_golang/prometheus"

// Exported for the external tests of this package.
var (
	ChannelName = channelName
	MetaKey     = metaKey
	HistoryKey  = historyKey
)

// MetricValue returns the value of the counter named name in reg, 0 when
// reg has none.
func MetricValue(reg *prometheus.Registry, name string) float64 {
	mfs, err := reg.Gather()
	if err != nil {
		panic(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	return 0
}
