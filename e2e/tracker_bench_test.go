package e2e

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/updraft/updraft/client"
	"github.com/updraft/updraft/internal/testenv"
	"github.com/updraft/updraft/protocol"
	"github.com/updraft/updraft/tracker"
)

// trackerBench is a PostgreSQL, a Redis, one gateway and one tracker
// process (both built without -race), and a WebSocket client subscribed to
// the table topic.
type trackerBench struct {
	db      *sql.DB
	arrived func(func(protocol.Event)) // sets the subscriber's handler
}

func startTrackerBench(b *testing.B, table string, notify bool) *trackerBench {
	b.Helper()
	pg := testenv.StartPostgres(b)
	db := pg.DB(b)
	db.SetMaxOpenConns(16)
	if _, err := db.Exec(`CREATE TABLE ` + table + ` (id bigserial PRIMARY KEY, writer int, n int, sent bigint, note text)`); err != nil {
		b.Fatal(err)
	}
	r := testenv.StartRedis(b)
	node := benchCluster(b, r, 1, nil)[0]
	tr := testenv.StartTracker(b, map[string]string{
		"UPDRAFT_DATABASE_URL": pg.URL(), "UPDRAFT_REDIS_URL": r.URL(), "UPDRAFT_TRACK_TABLES": table,
		"UPDRAFT_TRACKER_NOTIFY": fmt.Sprint(notify), "UPDRAFT_LOG_LEVEL": "warn",
	})
	testenv.Eventually(b, 15*time.Second, func() bool { return metric(b, tr, "updraft_tracker_leader") == 1 }, "the tracker does not lead")

	var handler atomic.Pointer[func(protocol.Event)]
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, node.WSURL(), client.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	if _, err := c.Subscribe(ctx, table, func(ev protocol.Event) {
		if h := handler.Load(); h != nil {
			(*h)(ev)
		}
	}); err != nil {
		b.Fatal(err)
	}
	// The tracker publishes only changes committed after its first
	// cursor: insert until one arrives.
	got := make(chan struct{}, 1)
	warm := func(protocol.Event) {
		select {
		case got <- struct{}{}:
		default:
		}
	}
	handler.Store(&warm)
	testenv.Eventually(b, 15*time.Second, func() bool {
		if _, err := db.Exec(`INSERT INTO ` + table + ` (note) VALUES ('warmup')`); err != nil {
			b.Fatal(err)
		}
		select {
		case <-got:
			return true
		case <-time.After(500 * time.Millisecond):
			return false
		}
	}, "the tracker published nothing")
	return &trackerBench{db: db, arrived: func(h func(protocol.Event)) { handler.Store(&h) }}
}

// BenchmarkTrackerLatency measures commit-to-client latency: rows are
// inserted one per statement at 100/s, the clock started just before each
// INSERT and stopped when the WebSocket client receives its event.
// Default: the 200 ms poll; Notify: UPDRAFT_TRACKER_NOTIFY=true. One
// iteration is one row:
//
//	go test -run '^$' -bench TrackerLatency -benchtime 1000x ./e2e
func BenchmarkTrackerLatency(b *testing.B) {
	for _, c := range []struct {
		name   string
		notify bool
	}{{"Poll200ms", false}, {"Notify", true}} {
		b.Run(c.name, func(b *testing.B) {
			tb := startTrackerBench(b, "latency", c.notify)
			var mu sync.Mutex
			sent := map[string]time.Time{}
			var lat []time.Duration
			done := make(chan struct{})
			tb.arrived(func(ev protocol.Event) {
				now := time.Now()
				mu.Lock()
				defer mu.Unlock()
				if t0, ok := sent[rowN(ev)]; ok {
					lat = append(lat, now.Sub(t0))
					if len(lat) == b.N {
						close(done)
					}
				}
			})
			b.ResetTimer()
			tick := time.NewTicker(10 * time.Millisecond)
			defer tick.Stop()
			for i := 0; i < b.N; i++ {
				<-tick.C
				// The clock starts just before the INSERT: the event may
				// arrive before Exec returns (with NOTIFY), and the
				// statement's round trip is well under a millisecond.
				mu.Lock()
				sent[fmt.Sprint(i)] = time.Now()
				mu.Unlock()
				if _, err := tb.db.Exec(`INSERT INTO latency (n) VALUES ($1)`, i); err != nil {
					b.Fatal(err)
				}
			}
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				mu.Lock()
				b.Fatalf("%d of %d events arrived", len(lat), b.N)
			}
			b.StopTimer()
			mu.Lock()
			defer mu.Unlock()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
		})
	}
}

// rowN returns the "n" column of a bench row's event, as JSON text.
func rowN(ev protocol.Event) string {
	var row struct {
		N json.RawMessage `json:"n"`
	}
	_ = json.Unmarshal(ev.Data, &row)
	return string(row.N)
}

// BenchmarkTrackerThroughput measures sustained changes per second through
// one tracker: 8 writers insert 10 rows per statement as fast as they can,
// 20,000 changes per iteration; the time runs from the first INSERT to the
// last event at the WebSocket client, and every change must arrive exactly
// once:
//
//	go test -run '^$' -bench TrackerThroughput -benchtime 3x ./e2e
func BenchmarkTrackerThroughput(b *testing.B) {
	const writers, perStatement, total = 8, 10, 20000
	tb := startTrackerBench(b, "throughput", false)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		var seen atomic.Int64
		var dup atomic.Int64
		var mu sync.Mutex
		ids := make(map[string]bool, total)
		all := make(chan struct{})
		tb.arrived(func(ev protocol.Event) {
			k := rowN(ev)
			if k == "null" {
				return // a late warm-up row
			}
			mu.Lock()
			defer mu.Unlock()
			if ids[k] {
				dup.Add(1)
			}
			ids[k] = true
			if seen.Add(1) == total {
				close(all)
			}
		})
		start := time.Now()
		var next atomic.Int64
		var wg sync.WaitGroup
		for w := 0; w < writers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					from := next.Add(perStatement) - perStatement
					if from >= total {
						return
					}
					base := int64(i)*total + from
					if _, err := tb.db.Exec(`INSERT INTO throughput (writer, n) SELECT $1, g FROM generate_series($2::bigint, $3::bigint) g`,
						w, base, base+perStatement-1); err != nil {
						b.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		written := time.Since(start)
		select {
		case <-all:
		case <-time.After(60 * time.Second):
			b.Fatalf("%d of %d changes arrived", seen.Load(), total)
		}
		elapsed := time.Since(start)
		if dup.Load() > 0 {
			b.Fatalf("%d changes arrived twice", dup.Load())
		}
		b.ReportMetric(total/elapsed.Seconds(), "changes/s")
		b.ReportMetric(total/written.Seconds(), "writes/s")
	}
}

// BenchmarkTrackedWrites compares the write throughput of a tracked and an
// untracked table: 8 writers, one row per INSERT, 5,000 rows per
// iteration. The difference is the capture trigger's cost:
//
//	go test -run '^$' -bench TrackedWrites -benchtime 5x ./e2e
func BenchmarkTrackedWrites(b *testing.B) {
	pg := testenv.StartPostgres(b)
	db := pg.DB(b)
	db.SetMaxOpenConns(16)
	for _, table := range []string{"untracked", "tracked"} {
		if _, err := db.Exec(`CREATE TABLE ` + table + ` (id bigserial PRIMARY KEY, writer int, n int, note text)`); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := tracker.Track(context.Background(), db, "tracked", tracker.TriggerOptions{}); err != nil {
		b.Fatal(err)
	}
	for _, table := range []string{"untracked", "tracked"} {
		b.Run(table, func(b *testing.B) {
			const writers, rows = 8, 5000
			for i := 0; i < b.N; i++ {
				var next atomic.Int64
				var wg sync.WaitGroup
				for w := 0; w < writers; w++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for next.Add(1) <= rows {
							if _, err := db.Exec(`INSERT INTO `+table+` (writer, n, note) VALUES ($1, $2, 'a note of some length')`, w, i); err != nil {
								b.Error(err)
								return
							}
						}
					}()
				}
				wg.Wait()
			}
			b.ReportMetric(float64(b.N*rows)/b.Elapsed().Seconds(), "rows/s")
		})
	}
}
