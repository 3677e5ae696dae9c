package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/lib/pq"

	"github.com/updraft/updraft/internal/bench"
	"github.com/updraft/updraft/protocol"
	"github.com/updraft/updraft/tracker"
)

// publisher sends a run's messages: message k (counting from 0) goes to
// topic k mod len(topics), its data stamped with the time it is sent.
type publisher interface {
	// publish sends messages first to first+n-1 and returns once the
	// server accepted them all; any refusal is an error.
	publish(ctx context.Context, first int64, n int) error
	// maxBatch is the most messages one publish takes.
	maxBatch() int
}

// publisher returns the run's publisher and what closes it: the HTTP emit
// API, or for db the database.
func (r *benchRun) publisher(ctx context.Context) (publisher, func(), error) {
	if r.p.Scenario == bench.DB {
		return r.dbPublisher(ctx)
	}
	return newAPIPublisher(r.cfg, r.topics), func() {}, nil
}

// maxBatchBody bounds the body of one emit/batch request, well below the
// server's default limit of 16 × UPDRAFT_MAX_MESSAGE (1 MiB).
const maxBatchBody = 512 << 10

// apiPublisher publishes through POST /api/v1/emit (one message) and
// /api/v1/emit/batch (more), going round --api.
type apiPublisher struct {
	http        *http.Client
	key         string
	emit, batch []string // the endpoints of each --api URL
	topics      []string
	size        int
	most        int           // messages per request
	next        atomic.Uint64 // requests sent, for round-robin
}

func newAPIPublisher(cfg *benchConfig, topics []string) *apiPublisher {
	a := &apiPublisher{http: cfg.http, key: cfg.apiKey, topics: topics, size: cfg.p.Size}
	for _, base := range cfg.p.API {
		emit, _ := apiURL(base, "/api/v1/emit", nil) // checked by normalizeBenchURLs
		batch, _ := apiURL(base, "/api/v1/emit/batch", nil)
		a.emit, a.batch = append(a.emit, emit), append(a.batch, batch)
	}
	longest := 0
	for _, t := range topics {
		longest = max(longest, len(t))
	}
	a.most = max(1, min(bench.MaxBatch, maxBatchBody/(a.size+longest+64)))
	return a
}

func (a *apiPublisher) maxBatch() int { return a.most }

func (a *apiPublisher) publish(ctx context.Context, first int64, n int) error {
	i := (a.next.Add(1) - 1) % uint64(len(a.emit))
	body := make([]byte, 0, n*(a.size+100)+16)
	if n == 1 {
		_, err := a.post(ctx, a.emit[i], a.appendMessage(body, first))
		return err
	}
	body = append(body, `{"messages":[`...)
	for k := first; k < first+int64(n); k++ {
		if k > first {
			body = append(body, ',')
		}
		body = a.appendMessage(body, k)
	}
	answer, err := a.post(ctx, a.batch[i], append(body, "]}"...))
	if err != nil {
		return err
	}
	return checkBatch(a.batch[i], answer, n)
}

// appendMessage appends message k as emit takes it.
func (a *apiPublisher) appendMessage(b []byte, k int64) []byte {
	b = append(b, `{"topic":"`...)
	b = append(b, a.topics[k%int64(len(a.topics))]...)
	b = append(b, `","event":"bench","data":`...)
	b = bench.AppendPayload(b, time.Now().UnixNano(), a.size)
	return append(b, '}')
}

// post sends body to endpoint and returns the answer of a 2xx, else an
// error carrying the server's. It is apiDo with the publishers' own
// client, which keeps a connection per publisher alive.
func (a *apiPublisher) post(ctx context.Context, endpoint string, body []byte) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if a.key != "" {
		req.Header.Set("Authorization", "Bearer "+a.key)
	}
	resp, err := a.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, maxEmitAnswer))
	if err != nil {
		return nil, fmt.Errorf("reading the answer of %s: %w", endpoint, err)
	}
	if resp.StatusCode/100 != 2 {
		return nil, apiFailure(resp, bytes.TrimSpace(answer), a.key == "")
	}
	return answer, nil
}

// checkBatch checks that an emit/batch answer accepted all n messages.
func checkBatch(endpoint string, answer []byte, n int) error {
	var a struct {
		Results []struct {
			Error *protocol.Error `json:"error"`
		} `json:"results"`
	}
	if err := json.Unmarshal(answer, &a); err != nil || len(a.Results) != n {
		return fmt.Errorf("unexpected answer from %s: %s", endpoint, snippet(answer))
	}
	for i, res := range a.Results {
		if res.Error != nil {
			return fmt.Errorf("%s refused message %d of %d: %w", endpoint, i+1, n, res.Error)
		}
	}
	return nil
}

// dbPublisher inserts a run's messages as rows (sent, pad) of the bench
// table, one statement per publish.
type dbPublisher struct {
	db     *sql.DB
	insert string
	pad    string
}

// dbPublisher opens --database, creates --table when missing and installs
// its capture trigger; the run's topic becomes the table's.
func (r *benchRun) dbPublisher(ctx context.Context) (publisher, func(), error) {
	db, err := openDB(r.p.Database)
	if err != nil {
		return nil, nil, fmt.Errorf("--database: %w", err)
	}
	topic, err := prepareBenchTable(ctx, db, r.p.Table)
	if err != nil {
		db.Close()
		return nil, nil, err
	}
	r.topics = []string{topic}
	return &dbPublisher{
		db: db,
		// Validated as plain identifiers, so the name needs no quoting
		// and folds to lower case as tracker.Track's lookup does.
		insert: `INSERT INTO ` + r.p.Table + ` (sent, pad) SELECT s, $2 FROM unnest($1::bigint[]) AS s`,
		pad:    strings.Repeat("x", bench.PadLen(r.p.Size)),
	}, func() { db.Close() }, nil
}

// prepareBenchTable creates table when missing and installs its capture
// trigger as `updraft track` does, and returns the table's topic.
func prepareBenchTable(ctx context.Context, db *sql.DB, table string) (string, error) {
	create := `CREATE TABLE IF NOT EXISTS ` + table + ` (id bigserial PRIMARY KEY, sent bigint NOT NULL, pad text NOT NULL DEFAULT '')`
	if _, err := db.ExecContext(ctx, create); err != nil {
		return "", fmt.Errorf("creating --table %s: %w", table, err)
	}
	tc, err := loadTrackerConfig()
	if err != nil {
		return "", err
	}
	tr, err := tracker.Track(ctx, db, table, tc.trigger())
	if err != nil {
		return "", fmt.Errorf("tracking --table %s: %w", table, err)
	}
	return tr.Topic, nil
}

func (d *dbPublisher) maxBatch() int { return bench.MaxBatch }

func (d *dbPublisher) publish(ctx context.Context, _ int64, n int) error {
	return d.insertRows(ctx, time.Now().UnixNano(), n)
}

// insertRows inserts n rows sent at sent (Unix nanoseconds) in one
// statement.
func (d *dbPublisher) insertRows(ctx context.Context, sent int64, n int) error {
	times := make([]int64, n)
	for i := range times {
		times[i] = sent
	}
	if _, err := d.db.ExecContext(ctx, d.insert, pq.Array(times), d.pad); err != nil {
		return fmt.Errorf("inserting into the bench table (it needs columns sent bigint and pad text): %w", err)
	}
	return nil
}

// trackerWait bounds how long db waits for a tracker to publish a marker.
const trackerWait = 10 * time.Second

// awaitTracker inserts marker rows, sent at the Unix epoch so that no
// receiver counts them, until one reaches a connection of its own on the
// table's topic: a tracker is running on the database and past its first
// poll (it publishes only what commits after that).
func (r *benchRun) awaitTracker(ctx context.Context, d *dbPublisher) error {
	s, err := r.dialSubscriber(ctx, r.p.WS[0], r.topics[0])
	if err != nil {
		return fmt.Errorf("watching for the tracker: %w", err)
	}
	defer s.close()
	deadline := time.Now().Add(trackerWait)
	for s.tally.Ignored() == 0 {
		if !time.Now().Before(deadline) {
			return fmt.Errorf("no change of --table %s reached topic %s within %v: is a tracker running on this database ('updraft tracker', or 'updraft serve' with UPDRAFT_DATABASE_URL)?",
				r.p.Table, r.topics[0], trackerWait)
		}
		if err := d.insertRows(ctx, 1, 1); err != nil {
			return err
		}
		for wait := time.Now().Add(500 * time.Millisecond); s.tally.Ignored() == 0 && time.Now().Before(wait); {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(10 * time.Millisecond): // polling the receiver's counter
			}
		}
	}
	return nil
}
