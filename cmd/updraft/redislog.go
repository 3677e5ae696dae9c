package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/updraft/updraft/broker"
)

// redisLogger carries go-redis's own log lines ("connection pool: failed
// to dial", ...), which it would print to stderr as plain text, into the
// process's zap logger, so that stderr holds JSON lines only. While Redis
// is down go-redis logs each failed dial, several a second: a line of one
// format is logged at most once per redisLogEvery, with the count of
// those left out since.
type redisLogger struct {
	log *zap.Logger

	mu   sync.Mutex
	seen map[string]*redisLogLine // guarded by mu; by format
}

// redisLogLine is what redisLogger remembers of one format.
type redisLogLine struct {
	last    time.Time // when it was last logged
	dropped int       // lines of it left out since
}

// redisLogEvery is how often a go-redis line of one format is logged.
const redisLogEvery = 10 * time.Second

func (l *redisLogger) Printf(_ context.Context, format string, v ...any) {
	now := time.Now()
	l.mu.Lock()
	line := l.seen[format]
	if line == nil {
		if len(l.seen) >= 1000 { // formats are constants; bound it anyway
			clear(l.seen)
		}
		line = &redisLogLine{}
		l.seen[format] = line
	}
	if !line.last.IsZero() && now.Sub(line.last) < redisLogEvery {
		line.dropped++
		l.mu.Unlock()
		return
	}
	dropped := line.dropped
	line.last, line.dropped = now, 0
	l.mu.Unlock()
	msg := strings.TrimPrefix(fmt.Sprintf(format, v...), "redis: ")
	if dropped > 0 {
		l.log.Warn(msg, zap.Int("suppressed", dropped))
		return
	}
	l.log.Warn(msg)
}

// logRedisThroughZap sends go-redis's log lines to log. go-redis has one
// logger for the process: call it once, before the first client exists.
func logRedisThroughZap(log *zap.Logger) {
	redis.SetLogger(&redisLogger{log: log.Named("redis"), seen: map[string]*redisLogLine{}})
}

// How a gateway waits for a Redis that is down when it starts.
const (
	redisFirstPing    = 2 * time.Second  // bounds the check at start-up
	redisWaitInterval = time.Second      // between pings while waiting
	redisWaitLogEvery = 30 * time.Second // between "still waiting" lines
)

// checkRedis pings Redis once at start-up. A Redis that is down or not
// ready is waited for in the background: the node serves meanwhile, and
// /readyz answers 503 until Redis answers. Any other error (a wrong
// password, a wrong database number) is a configuration mistake and
// returned, so the process exits naming it.
func checkRedis(ctx context.Context, rb *broker.Redis, log *zap.Logger) error {
	pctx, cancel := context.WithTimeout(ctx, redisFirstPing)
	err := rb.Ping(pctx)
	cancel()
	switch {
	case err == nil:
		return nil
	case !errors.Is(err, broker.ErrUnavailable) && ctx.Err() == nil && !errors.Is(err, context.DeadlineExceeded):
		return err
	}
	log.Warn("Redis is not reachable: serving, and not ready (/readyz 503) until it is; waiting for it", zap.Error(err))
	go waitForRedis(ctx, rb, log, time.Now())
	return nil
}

// waitForRedis pings Redis until it answers or ctx ends, logging that it
// waits at most every redisWaitLogEvery, and once when Redis is up.
func waitForRedis(ctx context.Context, rb *broker.Redis, log *zap.Logger, since time.Time) {
	ticker := time.NewTicker(redisWaitInterval)
	defer ticker.Stop()
	lastLog := since
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		pctx, cancel := context.WithTimeout(ctx, redisWaitInterval)
		err := rb.Ping(pctx)
		cancel()
		if err == nil {
			log.Info("Redis is up: ready", zap.Duration("waited", time.Since(since).Round(time.Millisecond)))
			return
		}
		if ctx.Err() != nil {
			return
		}
		if time.Since(lastLog) >= redisWaitLogEvery {
			lastLog = time.Now()
			log.Warn("still waiting for Redis: not ready", zap.Duration("waited", time.Since(since).Round(time.Second)), zap.Error(err))
		}
	}
}
