package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/updraft/updraft/internal/bench"
	"github.com/updraft/updraft/protocol"
)

const (
	closeSlowConsumer = protocol.CloseSlowConsumer
	// subscribeTimeout bounds connecting and subscribing one connection.
	subscribeTimeout = 30 * time.Second
)

// subscriber is one bench connection, subscribed to one topic. Once
// subscribed, a poller reads it: the poller's goroutine owns the fields
// below the line until done is closed.
type subscriber struct {
	conn    *bench.Conn
	poller  *bench.Poller
	tally   bench.Tally
	done    chan struct{}
	closing atomic.Bool // closeAll closed it: the read error that follows is expected

	closeCode int   // the code the server closed with (or announced in disconnect), 0 when none
	err       error // what ended the connection, when the bench did not
}

// connect opens the run's connections, --parallel at a time, each
// connected and subscribed, and records the connect rate.
func (r *benchRun) connect(ctx context.Context) error {
	n := r.p.Conns()
	subs := make([]*subscriber, n)
	start := time.Now()
	err := parallel(ctx, n, r.p.Parallel, func(ctx context.Context, i int) error {
		url := r.p.WS[i%len(r.p.WS)]
		s, err := r.dialSubscriber(ctx, url, r.topics[r.topicOf(i)])
		if err != nil {
			return fmt.Errorf("connection %d to %s: %w", i+1, url, err)
		}
		subs[i] = s
		r.connected.Add(1)
		return nil
	})
	elapsed := time.Since(start)
	if err != nil {
		for _, s := range subs {
			if s != nil {
				s.close()
			}
		}
		return err
	}
	r.subs = subs
	r.res.ConnectSeconds = elapsed.Seconds()
	r.res.ConnectRate = bench.PerSecond(float64(n), elapsed)
	return nil
}

// closeAll closes every connection and waits for the readers; calling it
// again does nothing more.
func (r *benchRun) closeAll() {
	for _, s := range r.subs {
		s.closing.Store(true)
		s.poller.Remove(s.conn)
	}
	for _, s := range r.subs {
		<-s.done
	}
}

// dialSubscriber connects to url, sends connect and subscribe to topic in
// one frame, and starts the reader once both are answered.
func (r *benchRun) dialSubscriber(ctx context.Context, url, topic string) (*subscriber, error) {
	ctx, cancel := context.WithTimeout(ctx, subscribeTimeout)
	defer cancel()
	c, err := bench.Dial(ctx, url, r.cfg.header)
	if err != nil {
		return nil, err
	}
	poller, err := r.cfg.poller()
	if err != nil {
		c.Close()
		return nil, err
	}
	s := &subscriber{conn: c, poller: poller, done: make(chan struct{})}
	s.tally.MinSent = r.minSent
	if err := s.subscribe(ctx, r.cfg.token, topic); err != nil {
		c.Close()
		return nil, err
	}
	err = s.poller.Add(c, func(msg []byte) { s.tally.Frame(msg, time.Now().UnixNano(), s.control) },
		func(err error) {
			s.ended(err)
			close(s.done)
		})
	if err != nil {
		c.Close()
		return nil, err
	}
	return s, nil
}

// hello returns the frame that connects with token (anonymously when
// empty) and subscribes to topic.
func hello(token, topic string) []byte {
	b := []byte(`{"type":"connect","ref":"c","sdk":"updraft-bench"`)
	if token != "" {
		b = append(b, `,"token":`...)
		b = protocol.AppendString(b, token)
	}
	b = append(b, "}\n"...)
	b = append(b, `{"type":"subscribe","ref":"s","topic":`...)
	b = protocol.AppendString(b, topic)
	return append(b, '}')
}

// subscribe sends hello and reads until both replies came; events that
// follow in the same frames are counted.
func (s *subscriber) subscribe(ctx context.Context, token, topic string) error {
	deadline, _ := ctx.Deadline()
	s.conn.SetDeadline(deadline)
	if err := s.conn.WriteText(hello(token, topic)); err != nil {
		return err
	}
	replies := 0
	var refused error
	handle := func(line []byte) {
		var m serverMessage
		switch {
		case json.Unmarshal(line, &m) != nil:
			refused = fmt.Errorf("unreadable answer %s", line)
		case m.Type == protocol.TypeDisconnect:
			refused = fmt.Errorf("disconnected: %d %s", m.Code, m.Reason)
		case m.Type == protocol.TypeReply && !m.OK:
			refused = fmt.Errorf("%s refused: %v", map[string]string{"c": "connect", "s": "subscribe"}[m.Ref], m.Error)
		case m.Type == protocol.TypeReply:
			replies++
		}
	}
	var buf []byte
	for replies < 2 && refused == nil {
		msg, err := s.conn.ReadMessage(buf[:0])
		if err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("no answer to connect and subscribe within %v", subscribeTimeout)
			}
			return err
		}
		buf = msg
		s.tally.Frame(msg, time.Now().UnixNano(), handle)
	}
	if refused != nil {
		return refused
	}
	return s.conn.SetDeadline(time.Time{})
}

// serverMessage is what a subscriber decodes of a message that is not an
// event: a reply or a disconnect.
type serverMessage struct {
	protocol.Reply
	Code   int    `json:"code"`
	Reason string `json:"reason"`
}

// control notes a disconnect's code; other replies mean nothing here.
func (s *subscriber) control(line []byte) {
	var m serverMessage
	if json.Unmarshal(line, &m) == nil && m.Type == protocol.TypeDisconnect {
		s.closeCode = m.Code
	}
}

// ended records why the reader stopped.
func (s *subscriber) ended(err error) {
	if s.closing.Load() {
		return
	}
	var ce *bench.CloseError
	if errors.As(err, &ce) && ce.Code != 0 {
		s.closeCode = ce.Code
	}
	if s.closeCode != closeSlowConsumer {
		s.err = err
	}
}

func (s *subscriber) close() {
	s.closing.Store(true)
	s.poller.Remove(s.conn)
	<-s.done
}

func (s *subscriber) finished() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}
