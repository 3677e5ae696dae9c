package presence_test

import (
	"testing"

	"github.com/updraft/updraft/presence"
	"github.com/updraft/updraft/presence/presencetest"
)

func TestMemory(t *testing.T) {
	t.Parallel()
	presencetest.Run(t, presencetest.Factory{
		New: func(tb testing.TB, cfg presencetest.Config) presence.Store {
			return presence.NewMemory(presence.MemoryConfig{Now: cfg.Now})
		},
	})
}
