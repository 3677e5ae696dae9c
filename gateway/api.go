package gateway

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"go.uber.org/zap"

	"github.com/updraft/updraft/broker"
	"github.com/updraft/updraft/protocol"
)

// maxBatch is the most messages one POST /api/v1/emit/batch may carry.
const maxBatch = 1000

// emitRequest is the body of POST /api/v1/emit and one item of a batch.
type emitRequest struct {
	Topic   string          `json:"topic"`
	Event   string          `json:"event"`
	Data    json.RawMessage `json:"data"`
	Persist bool            `json:"persist"`
	// Durable: persist, and answer only once the message is stored.
	Durable bool `json:"durable"`
}

func (s *Server) serveEmit(w http.ResponseWriter, r *http.Request) {
	if !s.authorizeAPI(w, r) {
		return
	}
	var req emitRequest
	if !s.decodeBody(w, r, int64(s.cfg.MaxMessage), &req) {
		return
	}
	pos, aerr := s.emit(r.Context(), &req)
	if aerr != nil {
		aerr.write(w)
		return
	}
	writeJSON(w, http.StatusOK, pos)
}

func (s *Server) serveEmitBatch(w http.ResponseWriter, r *http.Request) {
	if !s.authorizeAPI(w, r) {
		return
	}
	var req struct {
		Messages []emitRequest `json:"messages"`
	}
	if !s.decodeBody(w, r, int64(s.cfg.MaxMessage)*16, &req) {
		return
	}
	if len(req.Messages) > maxBatch {
		writeError(w, protocol.CodeTooLarge,
			fmt.Sprintf("a batch holds at most %d messages, this one has %d", maxBatch, len(req.Messages)))
		return
	}
	type result struct {
		*protocol.Position
		Error *protocol.Error `json:"error,omitempty"`
	}
	// Every valid message goes out in one broker call (one Redis script):
	// a bad item fails alone, and the rest keep their order.
	results := make([]result, len(req.Messages))
	items := make([]broker.Item, 0, len(req.Messages))
	index := make([]int, 0, len(req.Messages)) // items[j] is req.Messages[index[j]]
	for i := range req.Messages {
		pub, aerr := s.emitPublication(&req.Messages[i])
		if aerr != nil {
			results[i].Error = &aerr.wire
			continue
		}
		items = append(items, broker.Item{Topic: req.Messages[i].Topic, Publication: pub})
		index = append(index, i)
	}
	if len(items) > 0 {
		ctx, cancel := context.WithTimeout(r.Context(), brokerTimeout)
		pos, err := s.cfg.Broker.PublishBatch(ctx, items)
		cancel()
		var failed *protocol.Error
		if err != nil {
			e := s.publishError(err, zap.Int("messages", len(items)), zap.Int("published", len(pos)))
			failed = &e.wire
		}
		for j, i := range index {
			if err != nil && j >= len(pos) {
				results[i].Error = failed
				continue
			}
			results[i].Position = &protocol.Position{Epoch: pos[j].Epoch, Seq: pos[j].Seq}
		}
		s.metrics.messagesInHTTP.Add(float64(len(pos)))
	}
	writeJSON(w, http.StatusOK, map[string]any{"results": results})
}

// emit validates and publishes one HTTP API message.
func (s *Server) emit(ctx context.Context, req *emitRequest) (protocol.Position, *apiError) {
	pub, aerr := s.emitPublication(req)
	if aerr != nil {
		return protocol.Position{}, aerr
	}
	ctx, cancel := context.WithTimeout(ctx, brokerTimeout)
	defer cancel()
	pos, err := s.cfg.Broker.Publish(ctx, req.Topic, pub)
	if err != nil {
		return protocol.Position{}, s.publishError(err, zap.String("topic", req.Topic))
	}
	s.metrics.messagesInHTTP.Inc()
	return protocol.Position{Epoch: pos.Epoch, Seq: pos.Seq}, nil
}

// emitPublication validates an HTTP API message and returns what to
// publish.
func (s *Server) emitPublication(req *emitRequest) (broker.Publication, *apiError) {
	if err := protocol.ValidatePublish(req.Topic, req.Event); err != nil {
		return broker.Publication{}, apiErrorOf(invalid(err))
	}
	if (req.Persist || req.Durable) && !s.cfg.DurableHistory {
		return broker.Publication{}, newAPIError(protocol.CodeUnavailable, errNoDurable)
	}
	data := req.Data
	if !utf8.Valid(data) {
		return broker.Publication{}, newAPIError(protocol.CodeBadRequest, "%s", msgInvalidUTF8Data)
	}
	if len(data) > 0 {
		// Events travel in newline-separated frames: compact pretty-printed
		// JSON so that it holds no raw newline.
		var buf bytes.Buffer
		if err := json.Compact(&buf, data); err != nil {
			return broker.Publication{}, newAPIError(protocol.CodeBadRequest, "data is not valid JSON: %v", err)
		}
		data = buf.Bytes()
	}
	return broker.Publication{Event: req.Event, Data: data, Persist: req.Persist, Durable: req.Durable}, nil
}

// msgInvalidUTF8Data refuses a message whose data is not UTF-8: events
// travel in text frames (see protocol.ErrInvalidUTF8). json.Compact and
// json.RawMessage pass such bytes through, so the HTTP API checks them.
const msgInvalidUTF8Data = "invalid UTF-8 in data: events travel in UTF-8 text frames; send UTF-8, or \\u escapes"

// publishError is the API's answer to a failed publish, logged with ctx
// when it is internal.
func (s *Server) publishError(err error, ctx ...zap.Field) *apiError {
	return apiErrorOf(storeError(s.log, "publish", messageStore, err, ctx...))
}

// authorizeAPI checks the bearer API key, answering 401 when it is wrong.
func (s *Server) authorizeAPI(w http.ResponseWriter, r *http.Request) bool {
	if s.cfg.APIKey == "" {
		writeError(w, protocol.CodeUnauthorized, "the HTTP API is disabled: set UPDRAFT_API_KEY on the server")
		return false
	}
	key, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		writeError(w, protocol.CodeUnauthorized, "missing API key: send Authorization: Bearer <key>")
		return false
	}
	if subtle.ConstantTimeCompare([]byte(key), []byte(s.cfg.APIKey)) != 1 {
		writeError(w, protocol.CodeUnauthorized, "wrong API key")
		return false
	}
	return true
}

// decodeBody reads a JSON body of at most limit bytes into v, answering
// 400 or 413 when it cannot, and 408 when it does not arrive within
// BodyTimeout: a body trickled a byte at a time must not hold its
// connection for good.
func (s *Server) decodeBody(w http.ResponseWriter, r *http.Request, limit int64, v any) bool {
	rc := http.NewResponseController(w)
	if rc.SetReadDeadline(time.Now().Add(s.cfg.BodyTimeout)) == nil {
		// Lifted once the body is read: net/http then watches the
		// connection for the client going away, which it must not cut.
		defer rc.SetReadDeadline(time.Time{}) //nolint:errcheck // it was set
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, limit))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var tooBig *http.MaxBytesError
		if errors.Is(err, os.ErrDeadlineExceeded) {
			lingerClose(w)
			newAPIError(protocol.CodeBadRequest, "the request body did not arrive within %v", s.cfg.BodyTimeout).withStatus(http.StatusRequestTimeout).write(w)
			return false
		}
		if errors.As(err, &tooBig) {
			writeError(w, protocol.CodeTooLarge, "body larger than "+strconv.FormatInt(limit, 10)+" bytes")
			return false
		}
		writeError(w, protocol.CodeBadRequest, "body is not the expected JSON: "+err.Error())
		return false
	}
	if dec.More() {
		writeError(w, protocol.CodeBadRequest, "body holds more than one JSON value")
		return false
	}
	return true
}

func (s *Server) serveHistory(w http.ResponseWriter, r *http.Request) {
	if !s.authorizeAPI(w, r) {
		return
	}
	q := r.URL.Query()
	topic := q.Get("topic")
	if err := protocol.ValidateTopic(topic); err != nil {
		apiErrorOf(invalid(err)).write(w)
		return
	}
	var before uint64
	var limit int
	var err error
	if v := q.Get("before"); v != "" {
		if before, err = strconv.ParseUint(v, 10, 64); err != nil {
			writeError(w, protocol.CodeBadRequest, "before must be a non-negative integer")
			return
		}
	}
	if v := q.Get("limit"); v != "" {
		if limit, err = strconv.Atoi(v); err != nil || limit < 0 {
			writeError(w, protocol.CodeBadRequest, "limit must be a non-negative integer")
			return
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), brokerTimeout)
	defer cancel()
	res, err := s.history(ctx, topic, before, limit, protocol.Filter{}) // application servers see every row
	if err != nil {
		apiErrorOf(storeError(s.log, "history", messageStore, err, zap.String("topic", topic))).write(w)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
