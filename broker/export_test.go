package broker

// Exported for the external tests of this package.
var (
	ChannelName = channelName
	MetaKey     = metaKey
	HistoryKey  = historyKey
)
