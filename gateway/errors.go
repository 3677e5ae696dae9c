package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"go.uber.org/zap"

	"github.com/updraft/updraft/broker"
	"github.com/updraft/updraft/presence"
	"github.com/updraft/updraft/protocol"
)

// How a failure becomes an answer, on both paths. Every failure is a
// protocol.Error, whose code tells the client what it may do: a WebSocket
// request gets it in a failed reply, an HTTP API call in an errorBody with
// the status of its code (httpStatus). A failure gets the same code on
// both paths because both sort it here: invalid sorts a request that fails
// validation, storeError a failed call to the message or presence store.

// errorBody is the body of every failed HTTP API call:
// {"error":{"code","message"}}.
type errorBody struct {
	Error protocol.Error `json:"error"`
}

// apiError is a failed HTTP API call: its wire error and HTTP status.
type apiError struct {
	status int
	wire   protocol.Error
}

func (e *apiError) Error() string { return e.wire.Message }

// httpStatus is the HTTP status of each error code.
var httpStatus = map[string]int{
	protocol.CodeBadRequest:   http.StatusBadRequest,
	protocol.CodeUnauthorized: http.StatusUnauthorized,
	protocol.CodeForbidden:    http.StatusForbidden,
	protocol.CodeNotFound:     http.StatusNotFound,
	protocol.CodeTooLarge:     http.StatusRequestEntityTooLarge,
	protocol.CodeRateLimited:  http.StatusTooManyRequests,
	protocol.CodeUnavailable:  http.StatusServiceUnavailable,
	protocol.CodeInternal:     http.StatusInternalServerError,
}

// apiErrorOf is e answered with the HTTP status of its code.
func apiErrorOf(e protocol.Error) *apiError {
	status, ok := httpStatus[e.Code]
	if !ok {
		status = http.StatusInternalServerError
	}
	return &apiError{status: status, wire: e}
}

func newAPIError(code, format string, args ...any) *apiError {
	return apiErrorOf(protocol.Error{Code: code, Message: fmt.Sprintf(format, args...)})
}

// withStatus overrides the status of the code, for the one answer whose
// status says more: 408 for a body that did not arrive in time, which is a
// bad_request.
func (e *apiError) withStatus(status int) *apiError {
	e.status = status
	return e
}

func (e *apiError) write(w http.ResponseWriter) { writeJSON(w, e.status, errorBody{e.wire}) }

// writeError answers an HTTP API call with code, in the status of code.
func writeError(w http.ResponseWriter, code, message string) {
	apiErrorOf(protocol.Error{Code: code, Message: message}).write(w)
}

// invalid is the answer to a request that fails validation: forbidden for
// a publish to a table topic, which only the tracker may publish to
// (protocol.ErrTableTopic), else bad_request.
func invalid(err error) protocol.Error {
	code := protocol.CodeBadRequest
	if errors.Is(err, protocol.ErrTableTopic) {
		code = protocol.CodeForbidden
	}
	return protocol.Error{Code: code, Message: err.Error()}
}

// The stores a request may fail on, as storeError names them.
const (
	messageStore  = "message store"
	presenceStore = "presence store"
)

// storeError is the answer to a request whose call to store (messageStore
// or presenceStore) failed in op: unavailable when the store is
// unreachable or not ready, so the client tries again; otherwise
// internal, a bug, logged here with ctx and answered without the error's
// text, which may tell internals.
func storeError(log *zap.Logger, op, store string, err error, ctx ...zap.Field) protocol.Error {
	if unavailable(err) {
		return protocol.Error{Code: protocol.CodeUnavailable, Message: op + " failed: the " + store + " is unreachable, try again"}
	}
	log.Error(op+" failed", append(ctx, zap.Error(err))...)
	return protocol.Error{Code: protocol.CodeInternal, Message: op + " failed"}
}

// unavailable reports whether a failed broker or presence store call
// means "try again later" rather than a bug.
func unavailable(err error) bool {
	return errors.Is(err, broker.ErrUnavailable) || errors.Is(err, broker.ErrClosed) ||
		errors.Is(err, presence.ErrUnavailable) || errors.Is(err, presence.ErrClosed) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)
}
