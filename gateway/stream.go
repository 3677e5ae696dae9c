package gateway

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"go.uber.org/zap"

	"github.com/updraft/updraft/broker"
	"github.com/updraft/updraft/protocol"
)

// Token streaming: POST /api/v1/stream?topic=T&event=E[&rollup=D] turns an
// NDJSON request body into events on T, each line published the moment it
// arrives, and ends the stream with E.end (clean end of body) or E.error
// (anything else), so that watchers never wait forever. docs/protocol.md,
// "Token streaming", is the contract.

// Limits of POST /api/v1/stream.
const (
	// MaxStreamEventLen is the longest event name a stream may use: the
	// server appends ".end" or ".error" for the stream's last message.
	MaxStreamEventLen = protocol.MaxEventLen - len(streamErrorSuffix)
	// MaxStreamRollup is the longest rollup window.
	MaxStreamRollup = time.Second
)

const (
	streamEndSuffix   = ".end"
	streamErrorSuffix = ".error"

	// streamReadAhead is how many parsed lines the body reader may hold
	// ready while the handler publishes.
	streamReadAhead = 16
	// streamReadBuffer sizes the body's bufio.Reader; longer lines are
	// assembled from several reads.
	streamReadBuffer = 16 << 10
)

// streamSummary is the data of E.end and, with the epoch, the answer to a
// stream that ended cleanly.
type streamSummary struct {
	FirstSeq uint64 `json:"first_seq"`
	LastSeq  uint64 `json:"last_seq"`
	Count    int    `json:"count"`
}

// errStreamDraining ends a stream still running late in a drain.
var errStreamDraining = newAPIError(protocol.CodeUnavailable, "the node is shutting down: stream cut; send the rest to another node")

// streamAnswer is the 200 answer of POST /api/v1/stream.
type streamAnswer struct {
	streamSummary
	Epoch string `json:"epoch"`
}

// streamItem is what the body reader hands the handler: one line's
// compacted JSON value, or the error that ended reading (io.EOF at the
// clean end of the body).
type streamItem struct {
	data []byte
	err  error
}

// errStreamStopped ends the body reader after the handler stopped the
// stream.
var errStreamStopped = errors.New("gateway: stream stopped")

func (s *Server) serveStream(w http.ResponseWriter, r *http.Request) {
	if !s.authorizeAPI(w, r) {
		return
	}
	topic, event, rollup, aerr := parseStreamQuery(r)
	if aerr != nil {
		aerr.write(w)
		return
	}
	rc := http.NewResponseController(w)
	// The handler may answer (an error) while the client is still sending:
	// without full duplex net/http would first try to drain the body.
	rc.EnableFullDuplex() //nolint:errcheck // HTTP/2 is full duplex already
	body := &streamBody{body: r.Body, rc: rc, idle: s.cfg.StreamIdleTimeout}
	// The idle timeout is the connection's read deadline, armed before every
	// read; a handler behind a ResponseWriter without deadlines could
	// neither time out nor stop a stalled body, so it refuses to start.
	if err := rc.SetReadDeadline(time.Now().Add(s.cfg.StreamIdleTimeout)); err != nil {
		s.log.Error("stream: the connection does not support read deadlines", zap.Error(err))
		writeError(w, protocol.CodeInternal, "token streaming is not available on this connection")
		return
	}
	st := &stream{
		srv:    s,
		topic:  topic,
		event:  event,
		rollup: rollup,
		// Messages of a stream are published even when the caller went
		// away: the watchers still get the lines sent and the .error.
		ctx: context.WithoutCancel(r.Context()),
	}
	items := make(chan streamItem, streamReadAhead)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		readStream(body, s.cfg.MaxMessage, items, done)
	}()
	status, answer := st.run(items)
	// Stop the reader before answering: it must not touch the body once
	// the handler returns. After a clean end it has already returned.
	close(done)
	if status != http.StatusOK {
		body.stop()
		lingerClose(w)
	}
	wg.Wait()
	writeJSON(w, status, answer)
}

// lingerClose marks the connection to be closed after the answer because
// the rest of the body will not be read, and makes net/http close it the
// way it does when a body passes an http.MaxBytesReader limit: answer,
// FIN, a short wait, close. A client still sending its body then reads
// the answer instead of losing it to a connection reset. net/http offers
// no other way to ask for that close; this trips the limit of a reader
// over one in-memory byte, never the request body.
func lingerClose(w http.ResponseWriter) {
	w.Header().Set("Connection", "close")
	http.MaxBytesReader(w, io.NopCloser(strings.NewReader("x")), 0).Read(make([]byte, 1)) //nolint:errcheck // the error is the point
}

// parseStreamQuery validates the query of POST /api/v1/stream.
func parseStreamQuery(r *http.Request) (topic, event string, rollup time.Duration, aerr *apiError) {
	q := r.URL.Query()
	for _, k := range slices.Sorted(maps.Keys(q)) { // the same error for the same query
		switch k {
		case "topic", "event", "rollup":
			if len(q[k]) > 1 {
				return "", "", 0, newAPIError(protocol.CodeBadRequest, "query parameter %q given %d times", k, len(q[k]))
			}
		default:
			return "", "", 0, newAPIError(protocol.CodeBadRequest, "unknown query parameter %q (want topic, event, rollup)", k)
		}
	}
	topic, event = q.Get("topic"), q.Get("event")
	if err := protocol.ValidatePublish(topic, event); err != nil {
		return "", "", 0, apiErrorOf(invalid(err))
	}
	if len(event) > MaxStreamEventLen {
		return "", "", 0, newAPIError(protocol.CodeBadRequest,
			"%v: a stream's event name is at most %d bytes, leaving room for %q and %q", protocol.ErrBadEvent, MaxStreamEventLen, streamEndSuffix, streamErrorSuffix)
	}
	if v := q.Get("rollup"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 || d > MaxStreamRollup {
			return "", "", 0, newAPIError(protocol.CodeBadRequest,
				"rollup must be a duration between 0 and %v, like 40ms, not %q", MaxStreamRollup, v)
		}
		rollup = d
	}
	return topic, event, rollup, nil
}

// stream is one POST /api/v1/stream being published. Only the handler's
// goroutine touches it.
type stream struct {
	srv    *Server
	topic  string
	event  string
	rollup time.Duration
	ctx    context.Context // publishes; not cancelled when the caller goes

	window  []byte // pending lines as a JSON array being built, without its ']'; nil when none
	pending int    // lines in window

	sum   streamSummary
	epoch string // of the last message published
}

// run publishes what the body reader hands it until the stream ends, and
// returns the HTTP answer.
func (st *stream) run(items <-chan streamItem) (int, any) {
	var timer *time.Timer // the rollup window's end; nil until the first window
	var windowEnd <-chan time.Time
	var deadline time.Time // when the open window closes
	for {
		select {
		case <-st.srv.streamsCut:
			if err := st.flush(); err != nil {
				return st.brokerFailed(err)
			}
			return st.finish(errStreamDraining)
		case <-windowEnd:
			windowEnd = nil
			if err := st.flush(); err != nil {
				return st.brokerFailed(err)
			}
		case it := <-items:
			if it.err != nil {
				if err := st.flush(); err != nil {
					return st.brokerFailed(err)
				}
				return st.finish(it.err)
			}
			if st.rollup == 0 {
				if err := st.publishToken(it.data); err != nil {
					return st.brokerFailed(err)
				}
				continue
			}
			// A line handled after its window closed (the timer and the line
			// were ready together) opens the next window; and a window never
			// grows past MaxMessage bytes: it goes out early, and this line
			// opens the next one.
			if st.pending > 0 && (!time.Now().Before(deadline) || len(st.window)+1+len(it.data)+1 > st.srv.cfg.MaxMessage) {
				timer.Stop()
				windowEnd = nil
				if err := st.flush(); err != nil {
					return st.brokerFailed(err)
				}
			}
			if st.pending == 0 {
				st.window = append(make([]byte, 0, 2+len(it.data)), '[')
				if timer == nil {
					timer = time.NewTimer(st.rollup)
				} else {
					timer.Reset(st.rollup)
				}
				windowEnd, deadline = timer.C, time.Now().Add(st.rollup)
			} else {
				st.window = append(st.window, ',')
			}
			st.window = append(st.window, it.data...)
			st.pending++
		}
	}
}

// flush publishes the pending rollup window as one message.
func (st *stream) flush() error {
	if st.pending == 0 {
		return nil
	}
	data := append(st.window, ']')
	st.window, st.pending = nil, 0
	return st.publishToken(data)
}

// publishToken publishes one token message (a line, or a rollup window).
func (st *stream) publishToken(data []byte) error {
	pos, err := st.publish(st.event, data)
	if err != nil {
		return err
	}
	if st.sum.Count == 0 {
		st.sum.FirstSeq = pos.Seq
	}
	st.sum.LastSeq = pos.Seq
	st.sum.Count++
	return nil
}

func (st *stream) publish(event string, data []byte) (broker.Position, error) {
	ctx, cancel := context.WithTimeout(st.ctx, brokerTimeout)
	defer cancel()
	pos, err := st.srv.cfg.Broker.Publish(ctx, st.topic, broker.Publication{Event: event, Data: data})
	if err != nil {
		return pos, err
	}
	st.srv.metrics.messagesInHTTP.Inc()
	st.epoch = pos.Epoch
	return pos, nil
}

// finish ends the stream after the body reader stopped with err: E.end
// after a clean end of body, E.error otherwise.
func (st *stream) finish(err error) (int, any) {
	if errors.Is(err, io.EOF) {
		data, _ := json.Marshal(st.sum)
		if _, err := st.publish(st.event+streamEndSuffix, data); err != nil {
			return st.brokerFailed(err)
		}
		return http.StatusOK, streamAnswer{streamSummary: st.sum, Epoch: st.epoch}
	}
	var aerr *apiError
	switch {
	case errors.As(err, &aerr):
	case errors.Is(err, os.ErrDeadlineExceeded):
		aerr = newAPIError(protocol.CodeBadRequest, "the request body sent no complete line for %v: stream timed out",
			st.srv.cfg.StreamIdleTimeout).withStatus(http.StatusRequestTimeout)
	case errors.Is(err, io.ErrUnexpectedEOF):
		aerr = newAPIError(protocol.CodeBadRequest, "the request body ended early (connection closed before the end of the body): stream aborted")
	default:
		aerr = newAPIError(protocol.CodeBadRequest, "reading the request body failed: %v: stream aborted", err)
	}
	st.srv.log.Info("stream ended early", zap.String("topic", st.topic), zap.String("event", st.event),
		zap.Int("messages", st.sum.Count), zap.String("reason", aerr.wire.Message))
	if err := st.publishError(aerr.wire.Message); err != nil {
		return st.storeFailed(err)
	}
	return aerr.status, errorBody{aerr.wire}
}

// brokerFailed ends a stream whose publish failed: it tries to tell the
// watchers with E.error and answers as storeFailed.
func (st *stream) brokerFailed(err error) (int, any) {
	st.publishError("the message store failed: stream aborted") //nolint:errcheck // best effort: the store just failed
	return st.storeFailed(err)
}

// storeFailed is the answer to a stream the message store failed: 503
// unavailable, or 500 internal (see storeError), saying how many messages
// went out.
func (st *stream) storeFailed(err error) (int, any) {
	ctx := []zap.Field{zap.String("topic", st.topic), zap.String("event", st.event), zap.Int("messages", st.sum.Count)}
	e := storeError(st.srv.log, "stream: publish", messageStore, err, ctx...)
	if e.Code == protocol.CodeUnavailable {
		st.srv.log.Warn("stream: publish failed", append(ctx, zap.Error(err))...)
	}
	e.Message = fmt.Sprintf("the message store failed: stream aborted after %d messages", st.sum.Count)
	aerr := apiErrorOf(e)
	return aerr.status, errorBody{aerr.wire}
}

func (st *stream) publishError(message string) error {
	data, _ := json.Marshal(map[string]string{"message": message})
	_, err := st.publish(st.event+streamErrorSuffix, data)
	return err
}

// readStream reads NDJSON lines from body and hands each line's compacted
// JSON value to items, blank lines skipped, until the body ends or a line
// is refused; the last item carries the error that ended reading. It
// returns early when done is closed.
func readStream(body io.Reader, maxLine int, items chan<- streamItem, done <-chan struct{}) {
	send := func(it streamItem) bool {
		select {
		case items <- it:
			return true
		case <-done:
			return false
		}
	}
	br := bufio.NewReaderSize(body, streamReadBuffer)
	var line []byte
	for n := 1; ; n++ {
		var err error
		line, err = readLine(br, line[:0], maxLine)
		if errors.Is(err, errLineTooLong) {
			send(streamItem{err: newAPIError(protocol.CodeTooLarge, "line %d: longer than %d bytes", n, maxLine)})
			return
		}
		if err != nil && !errors.Is(err, io.EOF) {
			send(streamItem{err: err}) // a partial line is dropped: it was cut off
			return
		}
		if len(bytes.TrimSpace(line)) > 0 {
			var buf bytes.Buffer
			buf.Grow(len(line))
			// Compact also refuses two values on one line; its output holds
			// no raw newline, as frames need.
			if cerr := json.Compact(&buf, line); cerr != nil {
				send(streamItem{err: newAPIError(protocol.CodeBadRequest, "line %d: invalid JSON: %v", n, cerr)})
				return
			}
			if !utf8.Valid(line) {
				send(streamItem{err: newAPIError(protocol.CodeBadRequest, "line %d: %s", n, msgInvalidUTF8Data)})
				return
			}
			if !send(streamItem{data: buf.Bytes()}) {
				return
			}
		}
		if err != nil { // io.EOF: the body is complete
			send(streamItem{err: err})
			return
		}
	}
}

var errLineTooLong = errors.New("gateway: line too long")

// readLine reads one line into buf without its "\n" (or "\r\n"). At the
// end of the body it returns the last, unterminated line with io.EOF. A
// line longer than max fails with errLineTooLong as soon as that is
// known, without reading the rest of it.
func readLine(br *bufio.Reader, buf []byte, max int) ([]byte, error) {
	for {
		chunk, err := br.ReadSlice('\n')
		buf = append(buf, chunk...)
		if len(buf) > max+2 { // even "\r\n" would not bring it under max
			return buf, errLineTooLong
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		buf = bytes.TrimSuffix(buf, []byte("\n"))
		buf = bytes.TrimSuffix(buf, []byte("\r"))
		if len(buf) > max {
			return buf, errLineTooLong
		}
		return buf, err
	}
}

// streamBody is a stream's request body. It arms the connection's read
// deadline when a line starts (the first read after a newline), so that a
// body that sends no complete line for the idle timeout fails with
// os.ErrDeadlineExceeded, however many bytes of it trickle in; stop makes
// a pending read fail at once, so the handler can end a stream without
// waiting for the client.
type streamBody struct {
	body io.Reader
	rc   *http.ResponseController
	idle time.Duration

	mu      sync.Mutex // guards stopped and orders deadline changes
	stopped bool
	inLine  bool // the deadline runs for a line begun; only Read touches it
}

func (b *streamBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	if b.stopped {
		b.mu.Unlock()
		return 0, errStreamStopped
	}
	if !b.inLine {
		b.rc.SetReadDeadline(time.Now().Add(b.idle)) //nolint:errcheck // checked once in serveStream
		b.inLine = true
	}
	b.mu.Unlock()
	n, err := b.body.Read(p)
	if bytes.IndexByte(p[:n], '\n') >= 0 {
		b.inLine = false
	}
	if errors.Is(err, io.EOF) {
		// The body is complete; net/http now watches the connection for
		// the client going away, which the idle deadline must not cut.
		b.mu.Lock()
		if !b.stopped {
			b.rc.SetReadDeadline(time.Time{}) //nolint:errcheck // as above
		}
		b.mu.Unlock()
	}
	return n, err
}

// stop makes the pending and every later Read fail.
func (b *streamBody) stop() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.stopped = true
	b.rc.SetReadDeadline(time.Now()) //nolint:errcheck // as above
}
