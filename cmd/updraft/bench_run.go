package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/updraft/updraft/internal/bench"
)

// The phases of a run, as progress shows them.
const (
	phaseConnecting int32 = iota
	phasePublishing
	phaseDraining
	phaseHolding
	phaseDone
)

var phaseNames = [...]string{"connecting", "publishing", "draining", "holding", "done"}

// benchRun is one run of a scenario.
type benchRun struct {
	cfg     *benchConfig
	p       *bench.Params
	res     bench.Result
	id      string   // names the run's topics
	topics  []string // connection i subscribes to topics[topicOf(i)]
	minSent int64    // the run's start: events sent before belong to another

	phase     atomic.Int32
	connected atomic.Int64
	sent      atomic.Int64 // messages (db: rows) the server accepted
	// subs is set before the phase leaves connecting, and not changed
	// after.
	subs []*subscriber
}

func newRun(cfg *benchConfig, run int) *benchRun {
	p := &cfg.p
	var id [4]byte
	rand.Read(id[:])
	r := &benchRun{cfg: cfg, p: p, id: hex.EncodeToString(id[:]), minSent: time.Now().UnixNano()}
	r.res = bench.Result{
		Scenario:        string(p.Scenario),
		Run:             run,
		Runs:            p.Runs,
		Start:           time.Now().UTC(),
		Gateways:        len(p.WS),
		Connections:     p.Conns(),
		DurationSeconds: p.Duration.Seconds(),
		PIDs:            p.PIDs,
	}
	switch p.Scenario {
	case bench.Idle:
		r.topics = make([]string, p.Connections)
		for i := range r.topics {
			r.topics[i] = "bench/" + r.id + "/idle-" + strconv.Itoa(i)
		}
	case bench.Topics:
		r.topics = make([]string, p.Topics)
		for i := range r.topics {
			r.topics[i] = "bench/" + r.id + "/topic-" + strconv.Itoa(i)
		}
	default:
		r.topics = []string{"bench/" + r.id + "/" + string(p.Scenario)} // db: replaced by the table's topic
	}
	if p.Scenario != bench.Idle {
		r.res.Size = bench.Ptr(p.Size)
		if p.Scenario != bench.Saturate {
			r.res.Rate = bench.Ptr(p.Rate)
		}
	}
	r.res.Topics = len(r.topics)
	r.res.SubscribersPerTopic = p.Conns() / len(r.topics)
	return r
}

// topicOf returns the topic index of connection i: a topic's subscribers
// are consecutive, so round-robin over --ws spreads each topic's.
func (r *benchRun) topicOf(i int) int {
	return i / (r.p.Conns() / len(r.topics))
}

// runScenario runs scenario cfg.p.Scenario once and returns its figures.
func runScenario(ctx context.Context, cfg *benchConfig, run int) (bench.Result, error) {
	r := newRun(cfg, run)
	stop := r.startProgress()
	var err error
	if cfg.p.Scenario == bench.Idle {
		err = r.idle(ctx)
	} else {
		err = r.deliver(ctx)
	}
	r.phase.Store(phaseDone)
	stop()
	return r.res, err
}

// deliver runs a scenario that publishes: connect, publish, drain, count.
func (r *benchRun) deliver(ctx context.Context) error {
	pub, closePub, err := r.publisher(ctx)
	if err != nil {
		return err
	}
	defer closePub()
	if d, ok := pub.(*dbPublisher); ok {
		if err := r.awaitTracker(ctx, d); err != nil {
			return err
		}
	}
	if err := r.connect(ctx); err != nil {
		return err
	}
	defer r.closeAll()
	cpu0, err := r.sampleCPU()
	if err != nil {
		return err
	}

	r.phase.Store(phasePublishing)
	pubStart := time.Now()
	if r.p.Scenario == bench.Saturate {
		err = r.saturate(ctx, pub)
	} else {
		err = r.pace(ctx, pub)
	}
	if err != nil {
		return err
	}
	pubEnd := time.Now()
	r.phase.Store(phaseDraining)
	if err := r.drain(ctx); err != nil {
		return err
	}
	drainEnd := time.Now()
	cpu1, err := r.sampleCPU()
	if err != nil {
		return err
	}
	r.closeAll()

	published := r.sent.Load()
	r.res.Published = published
	r.res.PublishSeconds = pubEnd.Sub(pubStart).Seconds()
	r.res.PublishRate = bench.PerSecond(float64(published), pubEnd.Sub(pubStart))
	r.res.DrainSeconds = drainEnd.Sub(pubEnd).Seconds()
	r.setCPU(cpu0, cpu1)
	r.collect(pubStart)
	return nil
}

// collect adds up what the subscribers received.
func (r *benchRun) collect(pubStart time.Time) {
	var hist bench.Histogram
	var delivered, last int64
	var firstErr error
	for i, s := range r.subs {
		if h := s.tally.Histogram(); h != nil {
			hist.Merge(h)
		}
		delivered += s.tally.Delivered()
		last = max(last, s.tally.Last())
		r.res.OutOfOrder += s.tally.OutOfOrder()
		r.res.Ignored += s.tally.Ignored()
		switch {
		case s.closeCode == closeSlowConsumer:
			r.res.SlowCloses++
		case s.err != nil:
			r.res.OtherCloses++
			if firstErr == nil {
				firstErr = fmt.Errorf("connection %d: %w", i+1, s.err)
			}
		}
	}
	if firstErr != nil {
		fmt.Fprintf(r.cfg.stderr, "updraft bench: %d connections were lost (not closed as slow consumers); the first: %v\n", r.res.OtherCloses, firstErr)
	}
	r.res.SetDelivery(r.expected(), delivered)
	if missing := r.res.Expected - delivered; missing > 0 && r.res.SlowCloses == 0 && r.res.OtherCloses == 0 {
		fmt.Fprintf(r.cfg.stderr, "updraft bench: %d deliveries did not arrive within --drain %v, and no connection was closed\n", missing, r.p.Drain)
	}
	r.res.SetLatency(&hist)
	if r.p.Scenario != bench.Idle {
		rate := 0.0
		if last > 0 {
			rate = bench.PerSecond(float64(delivered), time.Unix(0, last).Sub(pubStart))
		}
		r.res.DeliveryRate = &rate
	}
}

// publishedTo returns how many messages went to topic t: message k goes
// to topic k mod len(topics).
func (r *benchRun) publishedTo(t int) int64 {
	n, topics := r.sent.Load(), int64(len(r.topics))
	c := n / topics
	if int64(t) < n%topics {
		c++
	}
	return c
}

// expected returns how many deliveries the messages published call for.
func (r *benchRun) expected() int64 {
	var e int64
	for i := range r.subs {
		e += r.publishedTo(r.topicOf(i))
	}
	return e
}

// pace publishes at --rate until --duration or --messages ends it: one
// schedule, served by --publishers senders so that the schedule holds
// while a request takes longer than the interval between messages. The
// sender whose turn it is waits for the next message to fall due (the
// others wait for their turn, not on timers of their own) and takes
// everything due by then, up to a batch.
func (r *benchRun) pace(ctx context.Context, pub publisher) error {
	total := bench.Planned(r.p.Rate, r.p.Duration, r.p.Messages)
	pacer := bench.Pacer{Start: time.Now(), Rate: r.p.Rate}
	turn := make(chan struct{}, 1) // holding it is the turn to wait for the schedule
	turn <- struct{}{}
	next := int64(0) // guarded by turn: the first message no sender took yet
	// take waits for the next messages due and returns them; n is 0 when
	// every message is taken.
	take := func(ctx context.Context, timer *time.Timer) (first int64, n int, err error) {
		select {
		case <-ctx.Done():
			return 0, 0, ctx.Err()
		case <-turn:
		}
		defer func() { turn <- struct{}{} }()
		for next < total {
			due := min(pacer.Due(time.Now()), total)
			if due > next {
				first, n = next, int(min(due-next, int64(pub.maxBatch())))
				next += int64(n)
				return first, n, nil
			}
			timer.Reset(time.Until(pacer.At(next)))
			select {
			case <-ctx.Done():
				return 0, 0, ctx.Err()
			case <-timer.C:
			}
		}
		return 0, 0, nil
	}
	return r.senders(ctx, func(ctx context.Context) error {
		timer := time.NewTimer(time.Hour)
		defer timer.Stop()
		for {
			first, n, err := take(ctx, timer)
			if err != nil || n == 0 {
				return err
			}
			if err := pub.publish(ctx, first, n); err != nil {
				return err
			}
			r.sent.Add(int64(n))
		}
	})
}

// senders runs send in --publishers goroutines until each returns, and
// returns the first error, which cancels the others.
func (r *benchRun) senders(ctx context.Context, send func(ctx context.Context) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	for range r.p.Publishers {
		wg.Go(func() {
			if err := send(ctx); err != nil {
				cancel(err)
			}
		})
	}
	wg.Wait()
	return context.Cause(ctx)
}

// saturate publishes from --publishers goroutines, batches of --batch, as
// fast as the gateways answer, for --duration or --messages, holding back
// while the slowest subscriber is more than --window messages behind.
func (r *benchRun) saturate(ctx context.Context, pub publisher) error {
	deadline := time.Now().Add(r.p.Duration)
	limit := r.p.Messages
	if limit == 0 {
		limit = 1<<63 - 1
	}
	batch := int64(min(r.p.Batch, pub.maxBatch()))
	var reserved atomic.Int64 // messages handed to a sender
	return r.senders(ctx, func(ctx context.Context) error {
		for ctx.Err() == nil && time.Now().Before(deadline) {
			k := reserved.Add(batch) - batch
			if k >= limit {
				return nil
			}
			n := min(batch, limit-k)
			if !r.waitWindow(ctx, k+n, deadline) {
				break
			}
			if err := pub.publish(ctx, k, int(n)); err != nil {
				return err
			}
			r.sent.Add(n)
		}
		return ctx.Err()
	})
}

// waitWindow waits until the slowest live subscriber is within --window
// messages of upTo, and reports false when ctx or the deadline ended the
// wait.
func (r *benchRun) waitWindow(ctx context.Context, upTo int64, deadline time.Time) bool {
	if r.p.Window == 0 {
		return true
	}
	for upTo-r.slowest() > int64(r.p.Window) {
		if ctx.Err() != nil || !time.Now().Before(deadline) {
			return false
		}
		time.Sleep(time.Millisecond) // polling counters the receivers bump; nothing to wait on
	}
	return true
}

// slowest returns the deliveries of the live subscriber that has the
// fewest (all in saturate are on one topic).
func (r *benchRun) slowest() int64 {
	least := int64(1<<63 - 1)
	for _, s := range r.subs {
		if !s.finished() {
			least = min(least, s.tally.Delivered())
		}
	}
	return least
}

// drain waits, at most --drain, until every live subscriber has every
// message published to its topic.
func (r *benchRun) drain(ctx context.Context) error {
	deadline := time.Now().Add(r.p.Drain)
	for !r.allDelivered() && time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond): // polling counters; nothing to wait on
		}
	}
	return nil
}

func (r *benchRun) allDelivered() bool {
	for i, s := range r.subs {
		if !s.finished() && s.tally.Delivered() < r.publishedTo(r.topicOf(i)) {
			return false
		}
	}
	return true
}

// delivered returns the deliveries so far, once connecting is over.
func (r *benchRun) delivered() int64 {
	if r.phase.Load() == phaseConnecting {
		return 0
	}
	var n int64
	for _, s := range r.subs {
		n += s.tally.Delivered()
	}
	return n
}

// startProgress prints a progress line on stderr every second until the
// returned function is called.
func (r *benchRun) startProgress() (stop func()) {
	done, stopped := make(chan struct{}), make(chan struct{})
	start := time.Now()
	go func() {
		defer close(stopped)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		last, lastAt := int64(0), start
		for {
			select {
			case <-done:
				return
			case now := <-tick.C:
				d := r.delivered()
				fmt.Fprintln(r.cfg.stderr, bench.FormatProgress(bench.Progress{
					Scenario:  r.p.Scenario,
					Elapsed:   now.Sub(start),
					Phase:     phaseNames[r.phase.Load()],
					Connected: int(r.connected.Load()),
					Conns:     r.p.Conns(),
					Sent:      r.sent.Load(),
					Delivered: d,
					Rate:      bench.PerSecond(float64(d-last), now.Sub(lastAt)),
				}))
				last, lastAt = d, now
			}
		}
	}()
	return func() {
		close(done)
		<-stopped
	}
}

// parallel calls fn(ctx, i) for i from 0 to n-1, k at a time, and
// returns the first error, after which it starts no more.
func parallel(ctx context.Context, n, k int, fn func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(k, n) {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := fn(ctx, i); err != nil {
					cancel(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return ctx.Err()
}
