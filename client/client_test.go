package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/updraft/updraft/internal/testenv"
	"github.com/updraft/updraft/protocol"
)

func TestDialSendsConnect(t *testing.T) {
	t.Parallel()
	s := newScriptServer(t)
	rec := newRecorder()
	c, sc := dial(t, s, Options{
		Token:    "tok-1",
		Header:   http.Header{"Origin": {"https://app.example.com"}},
		OnStatus: rec.status,
	})
	if sc.subprot != protocol.Subprotocol {
		t.Errorf("subprotocol %q, want %q", sc.subprot, protocol.Subprotocol)
	}
	if got := sc.header.Get("Origin"); got != "https://app.example.com" {
		t.Errorf("Origin %q", got)
	}
	if c.Session() != "s_1" || c.Node() != "node-1" {
		t.Errorf("session %q node %q", c.Session(), c.Node())
	}
	if c.Status() != StatusConnected {
		t.Errorf("status %v", c.Status())
	}
	rec.until(t, "connected status", func() bool {
		return slices.Equal(rec.statuses, []Status{StatusConnecting, StatusConnected})
	})

	_ = c.Close()
	sc.waitClosed(t)
	rec.until(t, "disconnected status", func() bool { return len(rec.statuses) == 3 && rec.statuses[2] == StatusDisconnected })
	if !errors.Is(c.Err(), ErrClosed) {
		t.Errorf("Err after Close: %v", c.Err())
	}
	if err := c.Ping(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("Ping after Close: %v", err)
	}
	select {
	case <-c.Done():
	default:
		t.Errorf("Done not closed after Close")
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestDialConnectCarriesTokenAndSDK(t *testing.T) {
	t.Parallel()
	s := newScriptServer(t)
	ch := async(func() error {
		c, err := Dial(context.Background(), s.url, Options{Token: "tok-1"})
		if err == nil {
			_ = c.Close()
		}
		return err
	})
	sc := s.accept(t)
	r := sc.handshake(t, "s_1")
	if r.Token != "tok-1" || r.SDK != "go/"+Version {
		t.Errorf("connect %+v", r)
	}
	if err := await(t, ch, "Dial"); err != nil {
		t.Fatal(err)
	}
}

func TestDialRefused(t *testing.T) {
	t.Parallel()
	s := newScriptServer(t)
	rec := newRecorder()
	ch := async(func() error {
		_, err := Dial(context.Background(), s.url, Options{Token: "bad", OnStatus: rec.status})
		return err
	})
	sc := s.accept(t)
	r := sc.expect(t, protocol.TypeConnect)
	sc.send(t, protocol.EncodeError(r.Ref, protocol.CodeUnauthorized, "token expired"))
	sc.close(t, protocol.CloseUnauthorized, "unauthorized")
	err := await(t, ch, "Dial")
	var perr *protocol.Error
	if !errors.As(err, &perr) || perr.Code != protocol.CodeUnauthorized {
		t.Fatalf("Dial error %v, want an unauthorized *protocol.Error", err)
	}
	if !strings.Contains(err.Error(), "token expired") {
		t.Errorf("error %q does not carry the server's message", err)
	}
	// Dial returned only after the last callback ran.
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if !slices.Equal(rec.statuses, []Status{StatusConnecting, StatusDisconnected}) {
		t.Errorf("statuses %v", rec.statuses)
	}
}

func TestDialClosedBeforeReply(t *testing.T) {
	t.Parallel()
	s := newScriptServer(t)
	ch := async(func() error {
		_, err := Dial(context.Background(), s.url, Options{})
		return err
	})
	sc := s.accept(t)
	sc.expect(t, protocol.TypeConnect)
	sc.close(t, protocol.CloseForbidden, "origin not allowed")
	var ce *CloseError
	if err := await(t, ch, "Dial"); !errors.As(err, &ce) || ce.Code != protocol.CloseForbidden || ce.Reason != "origin not allowed" {
		t.Fatalf("Dial error %v, want a 4003 *CloseError", err)
	}
}

func TestDialErrors(t *testing.T) {
	t.Parallel()
	s := newScriptServer(t)
	tests := []struct {
		name string
		url  string
		opts Options
		want string
	}{
		{"no server", "ws://127.0.0.1:1/api/realtime", Options{}, "dial"},
		{"not found", strings.TrimSuffix(s.url, "/api/realtime") + "/nope", Options{}, "404"},
		{"bad backoff", s.url, Options{MinBackoff: time.Second, MaxBackoff: time.Millisecond}, "MaxBackoff"},
		{"token func fails", s.url, Options{TokenFunc: func(context.Context) (string, error) { return "", errors.New("vault down") }}, "vault down"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), waitFor)
			defer cancel()
			_, err := Dial(ctx, tt.url, tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Dial error %v, want one mentioning %q", err, tt.want)
			}
		})
	}
}

func TestRequestsMatchRepliesByRef(t *testing.T) {
	t.Parallel()
	s := newScriptServer(t)
	c, sc := dial(t, s, Options{})
	ctx := context.Background()

	type result struct {
		pos protocol.Position
		err error
	}
	a := make(chan result, 1)
	b := make(chan result, 1)
	go func() {
		pos, err := c.Publish(ctx, "chat/a", "message", map[string]string{"text": "<a> & a"})
		a <- result{pos, err}
	}()
	ra := sc.expect(t, protocol.TypePublish)
	go func() {
		pos, err := c.Publish(ctx, "chat/b", "message", json.RawMessage(`{"text":"b"}`))
		b <- result{pos, err}
	}()
	rb := sc.expect(t, protocol.TypePublish)
	if ra.Ref == rb.Ref {
		t.Fatalf("two requests share ref %q", ra.Ref)
	}
	if string(ra.Data) != `{"text":"<a> & a"}` || string(rb.Data) != `{"text":"b"}` {
		t.Errorf("data %s and %s", ra.Data, rb.Data)
	}
	// Answer in the opposite order, in one frame.
	sc.send(t,
		protocol.EncodeReply(rb.Ref, protocol.Position{Epoch: "e1", Seq: 2}),
		protocol.EncodeReply(ra.Ref, protocol.Position{Epoch: "e1", Seq: 1}),
	)
	if got := await(t, a, "reply a"); got.err != nil || got.pos != (protocol.Position{Epoch: "e1", Seq: 1}) {
		t.Errorf("publish a: %+v", got)
	}
	if got := await(t, b, "reply b"); got.err != nil || got.pos != (protocol.Position{Epoch: "e1", Seq: 2}) {
		t.Errorf("publish b: %+v", got)
	}

	// A failed reply is a *protocol.Error.
	ch := async(func() error {
		_, err := c.Publish(ctx, "chat/secret", "message", nil)
		return err
	})
	r := sc.expect(t, protocol.TypePublish)
	if r.Data != nil {
		t.Errorf("nil data sent as %s", r.Data)
	}
	sc.send(t, protocol.EncodeError(r.Ref, protocol.CodeForbidden, "not allowed to publish to chat/secret"))
	err := await(t, ch, "reply")
	var perr *protocol.Error
	if !errors.As(err, &perr) || perr.Code != protocol.CodeForbidden {
		t.Errorf("error %v, want forbidden", err)
	}

	// Ping and Refresh are requests too.
	ch = async(func() error { return c.Ping(ctx) })
	r = sc.expect(t, protocol.TypePing)
	sc.send(t, protocol.EncodeReply(r.Ref, nil))
	if err := await(t, ch, "ping"); err != nil {
		t.Errorf("Ping: %v", err)
	}
	ch = async(func() error { return c.Refresh(ctx, "tok-2") })
	r = sc.expect(t, protocol.TypeRefresh)
	if r.Token != "tok-2" {
		t.Errorf("refresh token %q", r.Token)
	}
	sc.send(t, protocol.EncodeReply(r.Ref, nil))
	if err := await(t, ch, "refresh"); err != nil {
		t.Errorf("Refresh: %v", err)
	}
}

func TestPublishRejectsBadInputLocally(t *testing.T) {
	t.Parallel()
	s := newScriptServer(t)
	c, _ := dial(t, s, Options{})
	ctx := context.Background()
	if _, err := c.Publish(ctx, "orders", "x", nil); !errors.Is(err, protocol.ErrTableTopic) {
		t.Errorf("table topic: %v", err)
	}
	if _, err := c.Publish(ctx, "chat/a", "INSERT", nil); !errors.Is(err, protocol.ErrReserved) {
		t.Errorf("reserved event: %v", err)
	}
	if _, err := c.Publish(ctx, "chat/a", "m", func() {}); err == nil {
		t.Errorf("unmarshallable data accepted")
	}
	big := strings.Repeat("x", 70000)
	if _, err := c.Publish(ctx, "chat/a", "m", big); !errors.Is(err, ErrTooLarge) {
		t.Errorf("oversized publish: %v", err)
	}
}

func TestRequestTimeout(t *testing.T) {
	t.Parallel()
	s := newScriptServer(t)
	// The timeout also bounds the connect that dial answers: short enough
	// to keep the test quick, long enough for a loaded machine's connect.
	c, sc := dial(t, s, Options{RequestTimeout: time.Second})
	err := c.Ping(context.Background())
	sc.expect(t, protocol.TypePing) // never answered
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Ping error %v, want a deadline", err)
	}
}

func TestMultiMessageFrames(t *testing.T) {
	t.Parallel()
	s := newScriptServer(t)
	c, sc := dial(t, s, Options{})
	rec := newRecorder()

	ch := make(chan *Subscription, 1)
	go func() {
		sub, err := c.Subscribe(context.Background(), "chat/general", rec.event)
		if err != nil {
			t.Errorf("Subscribe: %v", err)
		}
		ch <- sub
	}()
	r := sc.expect(t, protocol.TypeSubscribe)
	if r.Since != nil {
		t.Errorf("first subscribe carries since %+v", r.Since)
	}
	// The reply, two events, a message of an unknown type, blank lines and
	// an event of another topic, all in one frame.
	sc.send(t,
		protocol.EncodeReply(r.Ref, protocol.SubscribeResult{Epoch: "e1", Seq: 4}),
		event("chat/general", "message", "e1", 5, `{"text":"five"}`),
		[]byte(`{"type":"presence","topic":"chat/general","event":"join","member":{}}`),
		[]byte("  "),
		event("chat/other", "message", "e1", 1, `{}`),
		[]byte(`{"type":"event","topic":"chat/general","event":"message","epoch":"e1","seq":6,"ts":1,"data":{"text":"six"},"truncated":true}`),
		[]byte(`not json`),
	)
	sub := await(t, ch, "subscription")
	if sub == nil {
		t.FailNow()
	}
	rec.until(t, "two events", func() bool { return len(rec.events) == 2 })
	rec.mu.Lock()
	ev, ev6 := rec.events[0], rec.events[1]
	seqs := rec.seqs()
	rec.mu.Unlock()
	if !slices.Equal(seqs, []uint64{5, 6}) {
		t.Errorf("seqs %v", seqs)
	}
	if ev.Type != protocol.TypeEvent || ev.Topic != "chat/general" || ev.Event != "message" || ev.Epoch != "e1" || ev.TS != 1764170000005 || string(ev.Data) != `{"text":"five"}` {
		t.Errorf("event %+v", ev)
	}
	if ev.Truncated || !ev6.Truncated {
		t.Errorf("truncated: %v, %v; want false, true", ev.Truncated, ev6.Truncated)
	}
	if got := sub.Position(); got != (protocol.Position{Epoch: "e1", Seq: 6}) {
		t.Errorf("position %+v", got)
	}
	if got := sub.Result(); got.Epoch != "e1" || got.Seq != 4 {
		t.Errorf("result %+v", got)
	}

	// A duplicate is dropped; the connection still works.
	sc.send(t, event("chat/general", "message", "e1", 6, `{}`), event("chat/general", "message", "e1", 7, `{}`))
	rec.until(t, "event 7", func() bool { return len(rec.events) == 3 })
	rec.mu.Lock()
	seqs = rec.seqs()
	rec.mu.Unlock()
	if !slices.Equal(seqs, []uint64{5, 6, 7}) {
		t.Errorf("seqs %v", seqs)
	}
}

func TestPacksRequestsUnderTheServerLimit(t *testing.T) {
	t.Parallel()
	s := newScriptServer(t)
	c, sc := dial(t, s, Options{})
	// Many publishes at once go out packed, each frame within 64 KiB; the
	// server's reader decodes every line, so all arrive.
	const n = 200
	data := strings.Repeat("y", 1000)
	errs := make(chan error, n)
	for range n {
		go func() {
			_, err := c.Publish(context.Background(), "chat/a", "m", data)
			errs <- err
		}()
	}
	for range n {
		r := sc.expect(t, protocol.TypePublish)
		sc.send(t, protocol.EncodeReply(r.Ref, protocol.Position{Epoch: "e1", Seq: 1}))
	}
	for range n {
		if err := await(t, errs, "publish"); err != nil {
			t.Fatal(err)
		}
	}
}

func TestSubscribeRefused(t *testing.T) {
	t.Parallel()
	s := newScriptServer(t)
	c, sc := dial(t, s, Options{})
	ctx := context.Background()
	ch := async(func() error {
		_, err := c.Subscribe(ctx, "orders", nil, WithFilter("status=eq.paid"))
		return err
	})
	r := sc.expect(t, protocol.TypeSubscribe)
	if r.Filter != "status=eq.paid" {
		t.Errorf("filter %q", r.Filter)
	}
	sc.send(t, protocol.EncodeError(r.Ref, protocol.CodeForbidden, "not allowed to subscribe to orders"))
	err := await(t, ch, "subscribe")
	var perr *protocol.Error
	if !errors.As(err, &perr) || perr.Code != protocol.CodeForbidden {
		t.Fatalf("error %v, want forbidden", err)
	}
	// The refused topic is not remembered: subscribing again asks again.
	ch = async(func() error {
		_, err := c.Subscribe(ctx, "orders", nil)
		return err
	})
	r = sc.expect(t, protocol.TypeSubscribe)
	sc.send(t, protocol.EncodeReply(r.Ref, protocol.SubscribeResult{Epoch: "e1"}))
	if err := await(t, ch, "subscribe"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Subscribe(ctx, "orders", nil); !errors.Is(err, ErrSubscribed) {
		t.Errorf("second subscribe: %v", err)
	}
	if _, err := c.Subscribe(ctx, "bad//topic", nil); !errors.Is(err, protocol.ErrBadTopic) {
		t.Errorf("bad topic: %v", err)
	}
}

func TestUnsubscribe(t *testing.T) {
	t.Parallel()
	s := newScriptServer(t)
	c, sc := dial(t, s, Options{})
	ctx := context.Background()
	rec := newRecorder()
	subs := make(chan *Subscription, 1)
	go func() {
		sub, _ := c.Subscribe(ctx, "chat/a", rec.event)
		subs <- sub
	}()
	r := sc.expect(t, protocol.TypeSubscribe)
	sc.send(t, protocol.EncodeReply(r.Ref, protocol.SubscribeResult{Epoch: "e1", Seq: 0}))
	sub := await(t, subs, "subscription")
	if sub == nil {
		t.FailNow()
	}

	ch := async(func() error { return c.Unsubscribe(ctx, "chat/a") })
	r = sc.expect(t, protocol.TypeUnsubscribe)
	if r.Topic != "chat/a" {
		t.Errorf("unsubscribe topic %q", r.Topic)
	}
	// An event in flight when the client unsubscribed is not delivered.
	sc.send(t, event("chat/a", "m", "e1", 1, `{}`), protocol.EncodeReply(r.Ref, nil))
	if err := await(t, ch, "unsubscribe"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-sub.Done():
	default:
		t.Errorf("Done not closed")
	}
	if sub.Err() != nil {
		t.Errorf("Err %v", sub.Err())
	}
	if err := c.Unsubscribe(ctx, "chat/a"); !errors.Is(err, ErrNotSubscribed) {
		t.Errorf("second unsubscribe: %v", err)
	}
	// A ping round trip orders everything the server sent before it.
	pong := async(func() error { return c.Ping(ctx) })
	r = sc.expect(t, protocol.TypePing)
	sc.send(t, protocol.EncodeReply(r.Ref, nil))
	if err := await(t, pong, "ping"); err != nil {
		t.Fatal(err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.events) != 0 {
		t.Errorf("handler got %d events after unsubscribing", len(rec.events))
	}
}

func TestSlowHandlerDoesNotBlockReplies(t *testing.T) {
	t.Parallel()
	s := newScriptServer(t)
	c, sc := dial(t, s, Options{})
	ctx := context.Background()
	release := make(chan struct{})
	got := make(chan uint64, 10)
	ch := async(func() error {
		_, err := c.Subscribe(ctx, "chat/a", func(ev protocol.Event) {
			<-release
			got <- ev.Seq
		})
		return err
	})
	r := sc.expect(t, protocol.TypeSubscribe)
	sc.send(t, protocol.EncodeReply(r.Ref, protocol.SubscribeResult{Epoch: "e1"}),
		event("chat/a", "m", "e1", 1, `{}`), event("chat/a", "m", "e1", 2, `{}`))
	if err := await(t, ch, "subscribe"); err != nil {
		t.Fatal(err)
	}
	// The handler is stuck on event 1; a request still gets its reply.
	ch = async(func() error { return c.Ping(ctx) })
	r = sc.expect(t, protocol.TypePing)
	sc.send(t, protocol.EncodeReply(r.Ref, nil))
	if err := await(t, ch, "ping"); err != nil {
		t.Fatal(err)
	}
	close(release)
	if a, b := await(t, got, "event"), await(t, got, "event"); a != 1 || b != 2 {
		t.Errorf("events %d, %d", a, b)
	}
}

func TestHandlerMayCallClose(t *testing.T) {
	t.Parallel()
	s := newScriptServer(t)
	c, sc := dial(t, s, Options{})
	closed := make(chan error, 1)
	ch := async(func() error {
		_, err := c.Subscribe(context.Background(), "chat/a", func(protocol.Event) { closed <- c.Close() })
		return err
	})
	r := sc.expect(t, protocol.TypeSubscribe)
	sc.send(t, protocol.EncodeReply(r.Ref, protocol.SubscribeResult{Epoch: "e1"}), event("chat/a", "m", "e1", 1, `{}`))
	if err := await(t, ch, "subscribe"); err != nil {
		t.Fatal(err)
	}
	if err := await(t, closed, "Close from the handler"); err != nil {
		t.Fatal(err)
	}
	sc.waitClosed(t)
}

func TestStatusString(t *testing.T) {
	t.Parallel()
	for s, want := range map[Status]string{
		StatusIdle: "idle", StatusConnecting: "connecting", StatusConnected: "connected",
		StatusReconnecting: "reconnecting", StatusDisconnected: "disconnected", Status(9): "Status(9)",
	} {
		if s.String() != want {
			t.Errorf("%d: %q, want %q", int(s), s.String(), want)
		}
	}
}

// TestCloseStopsGoroutines is not parallel: it looks at every goroutine of
// the process, and parallel tests wait until the sequential ones are done.
func TestCloseStopsGoroutines(t *testing.T) {
	s := newScriptServer(t)
	c, sc := dial(t, s, fastOptions())
	subscribeOn(t, c, sc, "chat/a", func(protocol.Event) {}, protocol.SubscribeResult{Epoch: "e1"})
	_ = sc.ws.CloseNow()
	sc2 := s.accept(t)
	sc2.handshake(t, "s_2")
	r := sc2.expect(t, protocol.TypeSubscribe)
	sc2.send(t, protocol.EncodeReply(r.Ref, protocol.SubscribeResult{Epoch: "e1"}), event("chat/a", "m", "e1", 1, `{}`))
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, waitFor, func() bool {
		buf := make([]byte, 1<<20)
		stacks := string(buf[:runtime.Stack(buf, true)])
		return !strings.Contains(stacks, "updraft/client.(*")
	}, "client goroutines still running after Close")
}

// syncBuffer is a bytes.Buffer safe for the client's goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestLoggerReceivesDiagnostics(t *testing.T) {
	t.Parallel()
	s := newScriptServer(t)
	var out syncBuffer
	log := slog.New(slog.NewJSONHandler(&out, &slog.HandlerOptions{Level: slog.LevelDebug}))
	c, _ := dial(t, s, Options{Logger: log})
	defer c.Close()
	testenv.Eventually(t, 5*time.Second, func() bool {
		return strings.Contains(out.String(), `"msg":"client: connected"`)
	}, "no connected record in the log")
	line := out.String()
	for _, want := range []string{`"url":"` + s.url + `"`, `"session":"s_1"`, `"node":"node-1"`} {
		if !strings.Contains(line, want) {
			t.Errorf("log %s lacks %s", line, want)
		}
	}
}
