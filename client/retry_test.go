package client

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/updraft/updraft/protocol"
)

// errorLog collects what a client tells OnError.
type errorLog chan error

func newErrorLog() errorLog { return make(errorLog, 64) }

func (l errorLog) add(err error) { l <- err }

// next returns the next error told, failing the test after waitFor.
func (l errorLog) next(t *testing.T) error {
	t.Helper()
	return await(t, (<-chan error)(l), "OnError")
}

// none checks that nothing more was told.
func (l errorLog) none(t *testing.T) {
	t.Helper()
	select {
	case err := <-l:
		t.Fatalf("OnError told %v", err)
	default:
	}
}

// retryOf checks that err is a *RetryError of op on topic, attempt n,
// caused by code (empty for a timeout).
func retryOf(t *testing.T, err error, op, topic string, n int, code string) {
	t.Helper()
	var rerr *RetryError
	if !errors.As(err, &rerr) || rerr.Op != op || rerr.Topic != topic || rerr.Attempt != n {
		t.Fatalf("OnError %v (%#v), want attempt %d of %s %s to be retried", err, rerr, n, op, topic)
	}
	var perr *protocol.Error
	switch {
	case code == "" && !errors.Is(err, context.DeadlineExceeded):
		t.Fatalf("OnError %v, want a timeout", err)
	case code != "" && (!errors.As(err, &perr) || perr.Code != code):
		t.Fatalf("OnError %v, want code %s", err, code)
	}
}

// TestResubscribeRetriedUntilAccepted: resubscribes answered unavailable,
// internal or not at all are sent again after the backoff with the same
// since, each failure told to OnError, until one is accepted; the
// subscription never ends and its events go on.
func TestResubscribeRetriedUntilAccepted(t *testing.T) {
	t.Parallel()
	s := newScriptServer(t)
	errs := newErrorLog()
	opts := fastOptions()
	opts.OnError = errs.add
	opts.RequestTimeout = 300 * time.Millisecond
	c, sc := dial(t, s, opts)
	rec := newRecorder()
	resubs := make(chan error, 8)
	sub := subscribeOn(t, c, sc, "chat/a", rec.event, protocol.SubscribeResult{Epoch: "e1", Seq: 5},
		WithOnResubscribe(func(_ protocol.SubscribeResult, err error) { resubs <- err }))
	sc.send(t, event("chat/a", "m", "e1", 6, `{}`), event("chat/a", "m", "e1", 7, `{}`))
	rec.until(t, "events 6 and 7", func() bool { return len(rec.events) == 2 })

	_ = sc.ws.CloseNow()
	sc2 := s.accept(t)
	sc2.handshake(t, "s_2")
	since := protocol.Position{Epoch: "e1", Seq: 7}
	expectSince := func() protocol.Request {
		t.Helper()
		r := sc2.expect(t, protocol.TypeSubscribe)
		if r.Topic != "chat/a" || r.Since == nil || *r.Since != since {
			t.Fatalf("resubscribe %+v (since %+v), want chat/a since %+v", r, r.Since, since)
		}
		return r
	}
	r := expectSince()
	sc2.send(t, protocol.EncodeError(r.Ref, protocol.CodeUnavailable, "the message store is unreachable"))
	retryOf(t, errs.next(t), protocol.TypeSubscribe, "chat/a", 1, protocol.CodeUnavailable)

	r = expectSince()
	sc2.send(t, protocol.EncodeError(r.Ref, protocol.CodeInternal, "oops"))
	retryOf(t, errs.next(t), protocol.TypeSubscribe, "chat/a", 2, protocol.CodeInternal)

	// No reply within RequestTimeout: sent again; the late reply to the
	// first is ignored, even a refusal.
	late := expectSince()
	retryOf(t, errs.next(t), protocol.TypeSubscribe, "chat/a", 3, "")
	r = expectSince()
	sc2.send(t, protocol.EncodeError(late.Ref, protocol.CodeForbidden, "late"),
		protocol.EncodeReply(r.Ref, protocol.SubscribeResult{Epoch: "e1", Seq: 8, Recovered: true}),
		event("chat/a", "m", "e1", 8, `{}`))
	rec.until(t, "event 8", func() bool { return len(rec.events) == 3 })
	if err := await(t, resubs, "OnResubscribe"); err != nil {
		t.Fatalf("OnResubscribe: %v", err)
	}
	select {
	case <-sub.Done():
		t.Fatalf("subscription ended: %v", sub.Err())
	default:
	}
	pingThrough(t, c, sc2)
	errs.none(t)

	// The count of failures starts again after a success.
	_ = sc2.ws.CloseNow()
	sc2 = s.accept(t)
	sc2.handshake(t, "s_3")
	since.Seq = 8
	r = expectSince()
	sc2.send(t, protocol.EncodeError(r.Ref, protocol.CodeUnavailable, "again"))
	retryOf(t, errs.next(t), protocol.TypeSubscribe, "chat/a", 1, protocol.CodeUnavailable)

	// A reconnect while a retry may be waiting resubscribes once.
	_ = sc2.ws.CloseNow()
	sc3 := s.accept(t)
	sc3.handshake(t, "s_4")
	r = sc3.expect(t, protocol.TypeSubscribe)
	sc3.send(t, protocol.EncodeReply(r.Ref, protocol.SubscribeResult{Epoch: "e1", Seq: 8, Recovered: true}))
	pingThrough(t, c, sc3)
	time.Sleep(20 * time.Millisecond) // longer than any backoff of fastOptions: a stale retry would be sent by now
	pingThrough(t, c, sc3)
	errs.none(t)

	// A resubscribe that could not recover is told to OnError too.
	_ = sc3.ws.CloseNow()
	sc4 := s.accept(t)
	sc4.handshake(t, "s_5")
	r = sc4.expect(t, protocol.TypeSubscribe)
	sc4.send(t, protocol.EncodeReply(r.Ref, protocol.SubscribeResult{Epoch: "e2", Seq: 3}))
	if err := errs.next(t); !errors.Is(err, ErrNotRecovered) {
		t.Fatalf("OnError %v, want ErrNotRecovered", err)
	}
	if p := sub.Position(); p != (protocol.Position{Epoch: "e2", Seq: 3}) {
		t.Errorf("position %+v after the lost history", p)
	}
}

// TestResubscribeRefusedEnds: a resubscribe refused as forbidden,
// bad_request or not_found ends the subscription, told to OnError, to
// WithOnResubscribe and by Done and Err; it is not tried again.
func TestResubscribeRefusedEnds(t *testing.T) {
	t.Parallel()
	for _, code := range []string{protocol.CodeForbidden, protocol.CodeBadRequest, protocol.CodeNotFound} {
		t.Run(code, func(t *testing.T) {
			t.Parallel()
			s := newScriptServer(t)
			errs := newErrorLog()
			opts := fastOptions()
			opts.OnError = errs.add
			c, sc := dial(t, s, opts)
			resubs := make(chan error, 8)
			sub := subscribeOn(t, c, sc, "chat/a", nil, protocol.SubscribeResult{Epoch: "e1", Seq: 5},
				WithOnResubscribe(func(_ protocol.SubscribeResult, err error) { resubs <- err }))
			_ = sc.ws.CloseNow()
			sc2 := s.accept(t)
			sc2.handshake(t, "s_2")
			r := sc2.expect(t, protocol.TypeSubscribe)
			sc2.send(t, protocol.EncodeError(r.Ref, code, "no"))

			var perr *protocol.Error
			var rerr *RetryError
			if err := errs.next(t); !errors.As(err, &perr) || perr.Code != code || errors.As(err, &rerr) {
				t.Errorf("OnError %v, want the %s refusal, not a retry", err, code)
			}
			if err := await(t, resubs, "OnResubscribe"); !errors.As(err, &perr) || perr.Code != code {
				t.Errorf("OnResubscribe %v", err)
			}
			<-await(t, wrapDone(sub.Done()), "subscription end")
			if err := sub.Err(); !errors.As(err, &perr) || perr.Code != code {
				t.Errorf("Err %v", err)
			}
			pingThrough(t, c, sc2) // no subscribe again before the ping
			errs.none(t)
		})
	}
}

// TestRetrackRetriedUntilAccepted: a re-track after a reconnect answered
// unavailable or rate_limited is sent again on the same connection after
// the backoff, with the same state, until accepted.
func TestRetrackRetriedUntilAccepted(t *testing.T) {
	t.Parallel()
	s := newScriptServer(t)
	errs := newErrorLog()
	opts := fastOptions()
	opts.OnError = errs.add
	c, sc := dial(t, s, opts)
	got := newCalls(t)
	subscribePresence(t, c, sc, "doc/42", nil, protocol.SubscribeResult{Epoch: "e1"}, WithPresence(nil), WithOnRetrack(got.retrack))
	track(t, c, sc, "doc/42", map[string]string{"name": "Sarah"})

	_ = sc.ws.CloseNow()
	sc2, _ := resubscribe(t, s, "s_2", nil, "doc/42")
	for i, code := range []string{protocol.CodeUnavailable, protocol.CodeRateLimited} {
		r := sc2.expect(t, protocol.TypeTrack)
		if string(r.State) != `{"name":"Sarah"}` {
			t.Fatalf("re-track %d state %s", i+1, r.State)
		}
		sc2.send(t, protocol.EncodeError(r.Ref, code, "later"))
		retryOf(t, errs.next(t), protocol.TypeTrack, "doc/42", i+1, code)
	}
	if r := sc2.reply(t, protocol.TypeTrack, struct{}{}); string(r.State) != `{"name":"Sarah"}` {
		t.Fatalf("re-track state %s", r.State)
	}
	calls := got.wait(3)
	if calls[2] != "retrack <nil>" {
		t.Errorf("calls %q", calls)
	}
	pingThrough(t, c, sc2)
	errs.none(t)

	// A refusal of the state itself is not retried on this connection.
	_ = sc2.ws.CloseNow()
	sc3, _ := resubscribe(t, s, "s_3", nil, "doc/42")
	r := sc3.expect(t, protocol.TypeTrack)
	sc3.send(t, protocol.EncodeError(r.Ref, protocol.CodeTooLarge, "too large"))
	got.wait(4)
	time.Sleep(20 * time.Millisecond) // longer than any backoff of fastOptions: a retry would be sent by now
	pingThrough(t, c, sc3)
	errs.none(t)
}

// TestRefreshRetriedUntilAnswered: a refresh answered unavailable, or cut
// off by a dropped connection, is sent again until the server accepts the
// token; a refusal of the token returns at once.
func TestRefreshRetriedUntilAnswered(t *testing.T) {
	t.Parallel()
	s := newScriptServer(t)
	errs := newErrorLog()
	opts := fastOptions()
	opts.OnError = errs.add
	opts.Token = "tok-1"
	c, sc := dial(t, s, opts)

	ch := async(func() error { return c.Refresh(context.Background(), "tok-2") })
	r := sc.expect(t, protocol.TypeRefresh)
	sc.send(t, protocol.EncodeError(r.Ref, protocol.CodeUnavailable, "later"))
	retryOf(t, errs.next(t), protocol.TypeRefresh, "", 1, protocol.CodeUnavailable)
	r = sc.expect(t, protocol.TypeRefresh)
	if r.Token != "tok-2" {
		t.Fatalf("retried refresh token %q", r.Token)
	}
	_ = sc.ws.CloseNow() // no reply: the connection drops
	var ce *CloseError
	if err := errs.next(t); !errors.As(err, &ce) {
		t.Fatalf("OnError %v, want the drop", err)
	}
	sc2 := s.accept(t)
	if r := sc2.handshake(t, "s_2"); r.Token != "tok-1" {
		t.Errorf("reconnect token %q before the refresh was accepted", r.Token)
	}
	if r := sc2.reply(t, protocol.TypeRefresh, nil); r.Token != "tok-2" {
		t.Errorf("refresh token %q on the new connection", r.Token)
	}
	if err := await(t, ch, "refresh"); err != nil {
		t.Fatalf("Refresh: %v", err)
	}

	ch = async(func() error { return c.Refresh(context.Background(), "tok-bad") })
	r = sc2.expect(t, protocol.TypeRefresh)
	sc2.send(t, protocol.EncodeError(r.Ref, protocol.CodeUnauthorized, "bad token"))
	var perr *protocol.Error
	if err := await(t, ch, "refresh"); !errors.As(err, &perr) || perr.Code != protocol.CodeUnauthorized {
		t.Errorf("Refresh with a bad token: %v", err)
	}
	pingThrough(t, c, sc2)
	errs.none(t)

	// The accepted token is the one used to reconnect.
	_ = sc2.ws.CloseNow()
	if r := s.accept(t).handshake(t, "s_3"); r.Token != "tok-2" {
		t.Errorf("reconnect token %q, want the refreshed one", r.Token)
	}
}

// TestRefreshEndsWhenTheClientStops: a refresh cut off by a close that
// stops the client (4001 without TokenFunc) returns why, not retrying.
func TestRefreshEndsWhenTheClientStops(t *testing.T) {
	t.Parallel()
	s := newScriptServer(t)
	c, sc := dial(t, s, fastOptions())
	ch := async(func() error { return c.Refresh(context.Background(), "tok-2") })
	sc.expect(t, protocol.TypeRefresh)
	sc.close(t, protocol.CloseUnauthorized, "token expired")
	var ce *CloseError
	if err := await(t, ch, "refresh"); !errors.As(err, &ce) || ce.Code != protocol.CloseUnauthorized {
		t.Fatalf("Refresh: %v, want the 4001 close", err)
	}
	if c.Err() == nil {
		t.Fatal("client still running after 4001 without TokenFunc")
	}
}
