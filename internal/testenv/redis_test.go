package testenv_test

import (
	"context"
	"testing"

	"github.com/updraft/updraft/internal/testenv"
)

// TestRedisAppendFsyncAlwaysSurvivesKill: with AppendFsyncAlways, a write
// acknowledged before a kill -9 is there after Restart, on the same port;
// without it, nothing is.
func TestRedisAppendFsyncAlwaysSurvivesKill(t *testing.T) {
	t.Parallel()
	for _, persist := range []bool{true, false} {
		r := testenv.StartRedisWith(t, testenv.RedisConfig{AppendFsyncAlways: persist})
		c := r.Client(t)
		ctx := context.Background()
		if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
			t.Fatal(err)
		}
		addr := r.Addr()
		r.Kill()
		if r.PID() != 0 {
			t.Fatal("PID after Kill")
		}
		r.Restart(t)
		if r.Addr() != addr {
			t.Fatalf("restarted on %s, was %s", r.Addr(), addr)
		}
		n, err := c.Exists(ctx, "k").Result()
		if err != nil {
			t.Fatal(err)
		}
		if want := map[bool]int64{true: 1, false: 0}[persist]; n != want {
			t.Errorf("persist %v: key count %d after kill and restart, want %d", persist, n, want)
		}
	}
}
