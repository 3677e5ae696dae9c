package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/updraft/updraft/internal/testenv"
)

// TestEmbeddedLogsSayNothingOfRedis runs the embedded mode (no
// UPDRAFT_REDIS_URL) with the tracker in process, from start-up to a clean
// shutdown at debug level: no log line talks about Redis, which this mode
// does not use.
func TestEmbeddedLogsSayNothingOfRedis(t *testing.T) {
	pg := testenv.StartPostgres(t)
	if _, err := pg.DB(t).Exec(`CREATE TABLE orders (id serial PRIMARY KEY, status text)`); err != nil {
		t.Fatal(err)
	}
	node := testenv.StartNode(t, nodeEnv("", map[string]string{
		"UPDRAFT_DATABASE_URL": pg.URL(), "UPDRAFT_TRACK_TABLES": "orders", "UPDRAFT_POLL_INTERVAL": "50ms",
		"UPDRAFT_LOG_LEVEL": "debug",
	}))
	// The tracker has taken its lease and found where to start.
	testenv.Eventually(t, 20*time.Second, func() bool { return strings.Contains(node.Logs(), "starting from the") },
		"the tracker never said where it starts")
	node.Terminate()
	if exited, err := node.Wait(30 * time.Second); !exited || err != nil {
		t.Fatalf("the node did not exit cleanly after SIGTERM: exited %v, %v", exited, err)
	}
	for i, line := range strings.Split(strings.TrimRight(node.Logs(), "\n"), "\n") {
		if strings.Contains(strings.ToLower(line), "redis") {
			t.Errorf("embedded mode, log line %d talks about Redis: %s", i+1, line)
		}
	}
}
