package client

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/updraft/updraft/internal/backoff"
	"github.com/updraft/updraft/protocol"
)

// reaction is what the client does after a connection ended.
type reaction int

const (
	reactStop    reaction = iota // stay disconnected
	reactBackoff                 // reconnect after the backoff
	reactAtOnce                  // reconnect without waiting
)

// reactTo maps a close code to the client's reaction, following the
// protocol's table. canRenewToken says whether TokenFunc can supply the new
// token that a 4001 calls for.
func reactTo(code int, canRenewToken bool) reaction {
	switch code {
	case protocol.CloseDraining:
		return reactAtOnce
	case protocol.CloseProtocol, protocol.CloseForbidden, protocol.CloseUnsupportedData:
		return reactStop
	case protocol.CloseUnauthorized:
		if canRenewToken {
			return reactBackoff
		}
		return reactStop
	}
	return reactBackoff
}

// endsSubscription reports whether a refusal of a resubscribe ends the
// subscription: the server would refuse it again (forbidden, bad_request,
// not_found). Any other failure, unavailable and internal first, is
// retried with the backoff.
func endsSubscription(err error) bool {
	var perr *protocol.Error
	if !errors.As(err, &perr) {
		return false
	}
	switch perr.Code {
	case protocol.CodeForbidden, protocol.CodeBadRequest, protocol.CodeNotFound:
		return true
	}
	return false
}

// transient reports whether a request that failed with err may succeed if
// sent again as it is: the server was unavailable, failed inside, limited
// the rate, or did not answer in time, or the connection was lost. A
// refusal of the request itself (unauthorized, forbidden, too_large, ...)
// is not.
func transient(err error) bool {
	var perr *protocol.Error
	var lost *CloseError
	switch {
	case errors.As(err, &perr):
		switch perr.Code {
		case protocol.CodeUnavailable, protocol.CodeInternal, protocol.CodeRateLimited:
			return true
		}
		return false
	case errors.As(err, &lost), errors.Is(err, context.DeadlineExceeded):
		return true
	}
	return false
}

// retryDelay returns the backoff before retry attempt n (1 for the first
// failure) of a resubscribe, re-track or refresh: the reconnect's backoff.
func (c *Client) retryDelay(n int) time.Duration {
	return c.opts.backoff().Delay(n - 1)
}

// sleep waits d, or until a or b (either may be nil) is closed or the
// client stops; it reports whether d passed.
func (c *Client) sleep(d time.Duration, a, b <-chan struct{}) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-a:
	case <-b:
	case <-c.ctx.Done():
	}
	return false
}

// run watches the current connection and, when it ends, reconnects as the
// close code says, until the client stops.
func (c *Client) run(cn *conn) {
	defer c.wg.Done()
	for {
		select {
		case <-cn.done:
		case <-c.ctx.Done():
			return
		}
		ce := cn.closeErr // set before done was closed
		if !c.dropped(cn, ce) {
			return
		}
		r := reactTo(ce.Code, c.opts.TokenFunc != nil)
		if r == reactStop {
			c.log.Info("client: not reconnecting", slog.Int("code", ce.Code), slog.String("reason", ce.Reason))
			c.stop(ce)
			return
		}
		c.mu.Lock()
		c.setStatusLocked(StatusReconnecting)
		c.mu.Unlock()
		if cn = c.reconnect(r == reactAtOnce, ce); cn == nil {
			return
		}
	}
}

// reconnect connects again, sleeping the backoff before each attempt (but
// the first when atOnce), and returns the attached connection, or nil when
// the client stopped. cause is why the connection dropped; OnReconnect
// hears it before the first attempt, and each failure before the next.
func (c *Client) reconnect(atOnce bool, cause error) *conn {
	for attempt := 0; ; attempt++ {
		var d time.Duration
		if !atOnce || attempt > 0 {
			d = c.opts.backoff().Delay(attempt)
		}
		if fn := c.opts.OnReconnect; fn != nil {
			n, why := attempt+1, cause
			c.disp.push(func() { fn(n, d, why) }, true)
		}
		if (!atOnce || attempt > 0) && !backoff.Sleep(c.ctx.Done(), d) {
			return nil
		}
		ctx, cancel := c.requestContext(c.ctx)
		cn, err := c.connect(ctx)
		cancel()
		if err == nil {
			if c.attach(cn) {
				return cn
			}
			return nil
		}
		if c.ctx.Err() != nil {
			return nil
		}
		var perr *protocol.Error
		var ce *CloseError
		switch {
		case errors.As(err, &perr) && perr.Code == protocol.CodeUnauthorized && c.opts.TokenFunc == nil:
			c.log.Warn("client: reconnect refused, no way to get a new token", slog.Any("error", err))
			c.stop(err)
			return nil
		case errors.As(err, &ce) && reactTo(ce.Code, c.opts.TokenFunc != nil) == reactStop:
			c.log.Warn("client: reconnect closed by the server", slog.Int("code", ce.Code), slog.String("reason", ce.Reason))
			c.stop(ce)
			return nil
		}
		c.log.Info("client: reconnect failed", slog.Int("attempt", attempt+1), slog.Any("error", err))
		cause = err
	}
}
