package client

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/updraft/updraft/internal/testenv"
	"github.com/updraft/updraft/protocol"
)

// TestBackoffOptions: the reconnects and retries wait as internal/backoff
// says (tested there), with the Options' limits and randomness.
func TestBackoffOptions(t *testing.T) {
	t.Parallel()
	o, err := Options{MinBackoff: 100 * time.Millisecond, MaxBackoff: time.Second, rand: func(n int64) int64 { return n - 1 }}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	c := &Client{opts: o}
	for n, want := range []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond, time.Second, time.Second} {
		if got := o.backoff().Delay(n); got != want {
			t.Errorf("reconnect attempt %d: %v, want %v", n, got, want)
		}
		if got := c.retryDelay(n + 1); got != want {
			t.Errorf("retry %d: %v, want %v", n+1, got, want)
		}
	}
	// The default randomness is full jitter, in [0, ceiling].
	o, err = Options{}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	for range 100 {
		if d := o.backoff().Delay(0); d < 0 || d > DefaultMinBackoff {
			t.Fatalf("first reconnect waits %v, outside [0, %v]", d, DefaultMinBackoff)
		}
	}
}

func TestReactTo(t *testing.T) {
	t.Parallel()
	tests := []struct {
		code       int
		tokenFunc  bool
		want       reaction
		protocolOK bool // protocol.Reconnects agrees when no new token is needed
	}{
		{protocol.CloseNormal, false, reactBackoff, true},
		{protocol.CloseGoingAway, false, reactBackoff, true},
		{protocol.CloseTooBig, false, reactBackoff, true},
		{CloseAbnormal, false, reactBackoff, true},
		{protocol.CloseDraining, false, reactAtOnce, true},
		{protocol.CloseProtocol, true, reactStop, false},
		{protocol.CloseForbidden, true, reactStop, false},
		{protocol.CloseUnsupportedData, false, reactStop, false},
		{protocol.CloseUnauthorized, false, reactStop, false},
		{protocol.CloseUnauthorized, true, reactBackoff, false},
		{protocol.CloseSlowConsumer, false, reactBackoff, true},
		{protocol.CloseRateLimited, false, reactBackoff, true},
	}
	for _, tt := range tests {
		if got := reactTo(tt.code, tt.tokenFunc); got != tt.want {
			t.Errorf("reactTo(%d, %v) = %v, want %v", tt.code, tt.tokenFunc, got, tt.want)
		}
		if protocol.Reconnects(tt.code) != tt.protocolOK {
			t.Errorf("protocol.Reconnects(%d) disagrees with the table", tt.code)
		}
	}
}

// subscribeOn subscribes c to topic, answering as the server with res.
func subscribeOn(t *testing.T, c *Client, sc *serverConn, topic string, h func(protocol.Event), res protocol.SubscribeResult, opts ...SubscribeOption) *Subscription {
	t.Helper()
	ch := make(chan *Subscription, 1)
	go func() {
		sub, err := c.Subscribe(context.Background(), topic, h, opts...)
		if err != nil {
			t.Errorf("Subscribe %s: %v", topic, err)
		}
		ch <- sub
	}()
	r := sc.expect(t, protocol.TypeSubscribe)
	if r.Topic != topic {
		t.Fatalf("subscribe %q, want %q", r.Topic, topic)
	}
	sc.send(t, protocol.EncodeReply(r.Ref, res))
	sub := await(t, ch, "subscription")
	if sub == nil {
		t.FailNow()
	}
	return sub
}

func TestReconnectResubscribesWithSince(t *testing.T) {
	t.Parallel()
	s := newScriptServer(t)
	rec := newRecorder()
	opts := fastOptions()
	opts.OnStatus = rec.status
	opts.OnDisconnect = rec.disconnect
	c, sc := dial(t, s, opts)

	var resubMu sync.Mutex
	var resubs []protocol.SubscribeResult
	chat := subscribeOn(t, c, sc, "chat/a", rec.event, protocol.SubscribeResult{Epoch: "e1", Seq: 5},
		WithOnResubscribe(func(res protocol.SubscribeResult, err error) {
			if err != nil {
				t.Errorf("resubscribe: %v", err)
			}
			resubMu.Lock()
			resubs = append(resubs, res)
			resubMu.Unlock()
		}))
	quiet := subscribeOn(t, c, sc, "orders", nil, protocol.SubscribeResult{Epoch: "e9", Seq: 40}, WithFilter("id=eq.7"))
	sc.send(t, event("chat/a", "m", "e1", 6, `{}`), event("chat/a", "m", "e1", 7, `{}`))
	rec.until(t, "events 6 and 7", func() bool { return len(rec.events) == 2 })

	// A publish in flight when the connection drops fails with the close.
	pub := async(func() error {
		_, err := c.Publish(context.Background(), "chat/a", "m", nil)
		return err
	})
	sc.expect(t, protocol.TypePublish)
	sc.close(t, protocol.CloseSlowConsumer, "slow consumer")
	var ce *CloseError
	if err := await(t, pub, "publish"); !errors.As(err, &ce) || ce.Code != protocol.CloseSlowConsumer {
		t.Errorf("publish cut off: %v, want a 4008 *CloseError", err)
	}

	sc2 := s.accept(t)
	sc2.handshake(t, "s_2")
	got := map[string]protocol.Request{}
	for range 2 {
		r := sc2.expect(t, protocol.TypeSubscribe)
		got[r.Topic] = r
		switch r.Topic {
		case "chat/a":
			sc2.send(t, protocol.EncodeReply(r.Ref, protocol.SubscribeResult{Epoch: "e1", Seq: 9, Recovered: true}),
				event("chat/a", "m", "e1", 8, `{}`), event("chat/a", "m", "e1", 9, `{}`))
		case "orders":
			sc2.send(t, protocol.EncodeReply(r.Ref, protocol.SubscribeResult{Epoch: "e9", Seq: 40, Recovered: true}))
		}
	}
	if r := got["chat/a"]; r.Since == nil || *r.Since != (protocol.Position{Epoch: "e1", Seq: 7}) {
		t.Errorf("chat/a resubscribed with since %+v, want e1/7", r.Since)
	}
	if r := got["orders"]; r.Since == nil || *r.Since != (protocol.Position{Epoch: "e9", Seq: 40}) || r.Filter != "id=eq.7" {
		t.Errorf("orders resubscribed as %+v", r)
	}
	rec.until(t, "recovered events", func() bool { return len(rec.events) == 4 })
	rec.mu.Lock()
	if seqs := rec.seqs(); !slices.Equal(seqs, []uint64{6, 7, 8, 9}) {
		t.Errorf("seqs %v", seqs)
	}
	if !slices.Equal(rec.disconnects, []int{protocol.CloseSlowConsumer}) {
		t.Errorf("disconnects %v", rec.disconnects)
	}
	rec.mu.Unlock()
	rec.until(t, "statuses", func() bool {
		return slices.Equal(rec.statuses, []Status{StatusConnecting, StatusConnected, StatusReconnecting, StatusConnected})
	})
	if c.Session() != "s_2" {
		t.Errorf("session %q", c.Session())
	}
	if p := chat.Position(); p != (protocol.Position{Epoch: "e1", Seq: 9}) {
		t.Errorf("chat position %+v", p)
	}
	if p := quiet.Position(); p != (protocol.Position{Epoch: "e9", Seq: 40}) {
		t.Errorf("orders position %+v", p)
	}
	testenv.Eventually(t, waitFor, func() bool {
		resubMu.Lock()
		defer resubMu.Unlock()
		return len(resubs) == 1 && resubs[0].Recovered
	}, "OnResubscribe")

	// A resubscription that cannot recover moves to the server's position.
	sc2.close(t, protocol.CloseGoingAway, "")
	sc3 := s.accept(t)
	sc3.handshake(t, "s_3")
	for range 2 {
		r := sc3.expect(t, protocol.TypeSubscribe)
		sc3.send(t, protocol.EncodeReply(r.Ref, protocol.SubscribeResult{Epoch: "e2", Seq: 3, Recovered: false}))
	}
	testenv.Eventually(t, waitFor, func() bool { return chat.Position() == protocol.Position{Epoch: "e2", Seq: 3} }, "position of the new epoch")
	testenv.Eventually(t, waitFor, func() bool {
		resubMu.Lock()
		defer resubMu.Unlock()
		return len(resubs) == 2 && !resubs[1].Recovered
	}, "OnResubscribe after a lost history")
}

func TestSubscribeWithSince(t *testing.T) {
	t.Parallel()
	s := newScriptServer(t)
	c, sc := dial(t, s, Options{})
	rec := newRecorder()
	ch := async(func() error {
		_, err := c.Subscribe(context.Background(), "chat/a", rec.event, WithSince(protocol.Position{Epoch: "e1", Seq: 2}))
		return err
	})
	r := sc.expect(t, protocol.TypeSubscribe)
	if r.Since == nil || *r.Since != (protocol.Position{Epoch: "e1", Seq: 2}) {
		t.Fatalf("since %+v", r.Since)
	}
	// Recovered events follow the reply, whose seq is already the latest.
	sc.send(t, protocol.EncodeReply(r.Ref, protocol.SubscribeResult{Epoch: "e1", Seq: 4, Recovered: true}),
		event("chat/a", "m", "e1", 3, `{}`), event("chat/a", "m", "e1", 4, `{}`))
	if err := await(t, ch, "subscribe"); err != nil {
		t.Fatal(err)
	}
	rec.until(t, "recovered events", func() bool { return len(rec.events) == 2 })
}

func TestDisconnectMessageWithoutCloseFrame(t *testing.T) {
	t.Parallel()
	s := newScriptServer(t)
	rec := newRecorder()
	opts := fastOptions()
	opts.OnDisconnect = rec.disconnect
	_, sc := dial(t, s, opts)
	sc.send(t, protocol.EncodeDisconnect(protocol.CloseSlowConsumer, "slow consumer"))
	_ = sc.ws.CloseNow() // no close frame
	sc2 := s.accept(t)
	sc2.handshake(t, "s_2")
	rec.until(t, "disconnect", func() bool { return len(rec.disconnects) == 1 })
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if rec.disconnects[0] != protocol.CloseSlowConsumer {
		t.Errorf("disconnect code %d, want 4008 from the disconnect message", rec.disconnects[0])
	}
}

func TestAbnormalDropReconnects(t *testing.T) {
	t.Parallel()
	s := newScriptServer(t)
	rec := newRecorder()
	opts := fastOptions()
	opts.OnDisconnect = rec.disconnect
	c, sc := dial(t, s, opts)
	_ = sc.ws.CloseNow()
	rec.until(t, "disconnect", func() bool { return len(rec.disconnects) == 1 })

	// A request made while reconnecting waits for the new connection.
	ch := async(func() error { return c.Ping(context.Background()) })
	sc2 := s.accept(t)
	sc2.handshake(t, "s_2")
	r := sc2.expect(t, protocol.TypePing)
	sc2.send(t, protocol.EncodeReply(r.Ref, nil))
	if err := await(t, ch, "ping"); err != nil {
		t.Fatal(err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if !slices.Equal(rec.disconnects, []int{CloseAbnormal}) {
		t.Errorf("disconnects %v", rec.disconnects)
	}
}

func TestDrainingReconnectsAtOnce(t *testing.T) {
	t.Parallel()
	s := newScriptServer(t)
	// Every backoff would sleep an hour: only an immediate reconnect passes.
	opts := Options{MinBackoff: time.Hour, MaxBackoff: time.Hour, rand: func(n int64) int64 { return n - 1 }}
	c, sc := dial(t, s, opts)
	sc.close(t, protocol.CloseDraining, "draining")
	sc2 := s.accept(t)
	sc2.handshake(t, "s_2")
	testenv.Eventually(t, waitFor, func() bool { return c.Status() == StatusConnected && c.Session() == "s_2" }, "reconnected")

	// Anything else waits for the backoff.
	sc2.close(t, protocol.CloseGoingAway, "")
	testenv.Eventually(t, waitFor, func() bool { return c.Status() == StatusReconnecting }, "reconnecting")
	s.noConn(t)
}

func TestStopCodesDoNotReconnect(t *testing.T) {
	t.Parallel()
	for _, code := range []int{protocol.CloseProtocol, protocol.CloseForbidden, protocol.CloseUnauthorized} {
		t.Run(strconv.Itoa(code), func(t *testing.T) {
			t.Parallel()
			s := newScriptServer(t)
			rec := newRecorder()
			opts := fastOptions()
			opts.OnStatus = rec.status
			opts.OnDisconnect = rec.disconnect
			c, sc := dial(t, s, opts)
			sub := subscribeOn(t, c, sc, "chat/a", nil, protocol.SubscribeResult{Epoch: "e1"})
			sc.close(t, code, "go away")

			<-await(t, wrapDone(c.Done()), "client stop")
			var ce *CloseError
			if err := c.Err(); !errors.As(err, &ce) || ce.Code != code || ce.Reason != "go away" {
				t.Errorf("Err %v, want a %d *CloseError", err, code)
			}
			if err := c.Ping(context.Background()); !errors.As(err, &ce) {
				t.Errorf("Ping after stop: %v", err)
			}
			if err := sub.Err(); !errors.As(err, &ce) {
				t.Errorf("subscription Err %v", err)
			}
			rec.until(t, "disconnected", func() bool {
				return len(rec.statuses) > 0 && rec.statuses[len(rec.statuses)-1] == StatusDisconnected
			})
			rec.mu.Lock()
			if !slices.Equal(rec.disconnects, []int{code}) {
				t.Errorf("disconnects %v", rec.disconnects)
			}
			if slices.Contains(rec.statuses, StatusReconnecting) {
				t.Errorf("statuses %v include reconnecting", rec.statuses)
			}
			rec.mu.Unlock()
			s.noConn(t) // the run loop ended before Done closed: no attempt can follow
		})
	}
}

// wrapDone turns a done channel into one that delivers a value, for await.
func wrapDone(done <-chan struct{}) <-chan (<-chan struct{}) {
	ch := make(chan (<-chan struct{}), 1)
	go func() {
		<-done
		ch <- done
	}()
	return ch
}

func TestUnauthorizedReconnectsWithTokenFunc(t *testing.T) {
	t.Parallel()
	s := newScriptServer(t)
	var mu sync.Mutex
	calls := 0
	opts := fastOptions()
	opts.TokenFunc = func(context.Context) (string, error) {
		mu.Lock()
		defer mu.Unlock()
		calls++
		return "tok-" + string(rune('0'+calls)), nil
	}
	ch := async(func() error {
		c, err := Dial(context.Background(), s.url, opts)
		if err == nil {
			t.Cleanup(func() { _ = c.Close() })
		}
		return err
	})
	sc := s.accept(t)
	if r := sc.handshake(t, "s_1"); r.Token != "tok-1" {
		t.Errorf("first token %q", r.Token)
	}
	if err := await(t, ch, "Dial"); err != nil {
		t.Fatal(err)
	}
	sc.close(t, protocol.CloseUnauthorized, "token expired")

	// The new token is refused once: the client keeps trying with the next.
	sc2 := s.accept(t)
	r := sc2.expect(t, protocol.TypeConnect)
	if r.Token != "tok-2" {
		t.Errorf("second token %q", r.Token)
	}
	sc2.send(t, protocol.EncodeError(r.Ref, protocol.CodeUnauthorized, "token expired"))
	sc2.close(t, protocol.CloseUnauthorized, "unauthorized")
	sc3 := s.accept(t)
	if r := sc3.handshake(t, "s_3"); r.Token != "tok-3" {
		t.Errorf("third token %q", r.Token)
	}
}

func TestRefreshedTokenUsedToReconnect(t *testing.T) {
	t.Parallel()
	s := newScriptServer(t)
	c, sc := dial(t, s, func() Options { o := fastOptions(); o.Token = "tok-1"; return o }())
	ch := async(func() error { return c.Refresh(context.Background(), "tok-2") })
	r := sc.expect(t, protocol.TypeRefresh)
	sc.send(t, protocol.EncodeReply(r.Ref, nil))
	if err := await(t, ch, "refresh"); err != nil {
		t.Fatal(err)
	}
	sc.close(t, protocol.CloseGoingAway, "")
	sc2 := s.accept(t)
	if r := sc2.handshake(t, "s_2"); r.Token != "tok-2" {
		t.Errorf("reconnect token %q, want the refreshed one", r.Token)
	}
}

func TestReconnectRefusedWithoutTokenFuncStops(t *testing.T) {
	t.Parallel()
	s := newScriptServer(t)
	c, sc := dial(t, s, fastOptions())
	_ = sc.ws.CloseNow()
	sc2 := s.accept(t)
	r := sc2.expect(t, protocol.TypeConnect)
	sc2.send(t, protocol.EncodeError(r.Ref, protocol.CodeUnauthorized, "token expired"))
	sc2.close(t, protocol.CloseUnauthorized, "unauthorized")
	<-await(t, wrapDone(c.Done()), "client stop")
	var perr *protocol.Error
	if err := c.Err(); !errors.As(err, &perr) || perr.Code != protocol.CodeUnauthorized {
		t.Errorf("Err %v, want the refusal", err)
	}
	s.noConn(t)
}

func TestCloseWhileReconnecting(t *testing.T) {
	t.Parallel()
	s := newScriptServer(t)
	opts := Options{MinBackoff: time.Hour, MaxBackoff: time.Hour, rand: func(n int64) int64 { return n - 1 }}
	c, sc := dial(t, s, opts)
	ch := async(func() error {
		_, err := c.Subscribe(context.Background(), "chat/a", nil)
		return err
	})
	sc.expect(t, protocol.TypeSubscribe) // never answered
	_ = sc.ws.CloseNow()
	testenv.Eventually(t, waitFor, func() bool { return c.Status() == StatusReconnecting }, "reconnecting")
	if err := await(t, async(c.Close), "Close"); err != nil {
		t.Fatal(err)
	}
	if err := await(t, ch, "subscribe"); !errors.Is(err, ErrClosed) {
		t.Errorf("subscribe pending at Close: %v", err)
	}
}

func TestSilentServerIsDropped(t *testing.T) {
	t.Parallel()
	s := newScriptServer(t)
	rec := newRecorder()
	opts := fastOptions()
	opts.OnDisconnect = rec.disconnect
	opts.heartbeatUnit = 4 * time.Millisecond // heartbeat 25: dropped after 250ms of silence
	dial(t, s, opts)
	sc2 := s.accept(t)
	sc2.handshake(t, "s_2")
	rec.until(t, "disconnect", func() bool { return len(rec.disconnects) == 1 })
	rec.mu.Lock()
	if rec.disconnects[0] != CloseAbnormal {
		t.Errorf("disconnect code %d", rec.disconnects[0])
	}
	rec.mu.Unlock()
}
