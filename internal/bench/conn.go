package bench

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"crypto/tls"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/updraft/updraft/protocol"
)

// Conn is the smallest WebSocket client a bench receiver needs (RFC 6455,
// no extensions): a blocking reader of text messages that answers pings,
// with a 4 KiB read buffer and no goroutine of its own, so that thousands
// of receivers cost little on the machine they measure from. A
// general-purpose library's per-read context and per-message allocation
// would, at a million deliveries a second.
//
// Only one goroutine may read or write at a time (ReadMessage writes
// pongs); Close may be called from anywhere. A Poller reads many of them
// from one goroutine instead (poller_linux.go).
type Conn struct {
	c   net.Conn
	br  *bufio.Reader
	out io.Writer // where frames are written: c, or the socket a Poller took over
}

// Opcodes.
const (
	opContinuation = 0x0
	opText         = 0x1
	opClose        = 0x8
	opPing         = 0x9
	opPong         = 0xA
)

// MaxMessage bounds a message ReadMessage accepts.
const MaxMessage = 64 << 20

// CloseError is the close frame the server ended the connection with.
type CloseError struct {
	Code   int // 0 when the frame carried none
	Reason string
}

func (e *CloseError) Error() string {
	return fmt.Sprintf("bench: closed by the server: %d %s", e.Code, e.Reason)
}

// Dial opens a WebSocket to rawURL (ws:// or wss://), offering the
// updraft.v1 subprotocol, with header's fields added to the handshake.
// ctx bounds the handshake only.
func Dial(ctx context.Context, rawURL string, header http.Header) (*Conn, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, err
	}
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), map[string]string{"ws": "80", "wss": "443"}[u.Scheme])
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	switch u.Scheme {
	case "ws":
	case "wss":
		c = tls.Client(c, &tls.Config{ServerName: u.Hostname()})
	default:
		c.Close()
		return nil, fmt.Errorf("bench: %q is not a ws:// or wss:// URL", rawURL)
	}
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	conn, err := handshake(c, u, header)
	if !stop() { // the context ended the handshake
		err = fmt.Errorf("bench: handshake: %w", ctx.Err())
	}
	if err != nil {
		c.Close()
		return nil, err
	}
	return conn, nil
}

// handshake sends the upgrade request and checks the answer.
func handshake(c net.Conn, u *url.URL, header http.Header) (*Conn, error) {
	var nonce [16]byte
	rand.Read(nonce[:])
	key := base64.StdEncoding.EncodeToString(nonce[:])
	req := &http.Request{
		Method: http.MethodGet,
		URL:    &url.URL{Path: u.Path, RawPath: u.RawPath, RawQuery: u.RawQuery},
		Host:   u.Host,
		Header: http.Header{},
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Sec-WebSocket-Key", key)
	req.Header.Set("Sec-WebSocket-Version", "13")
	req.Header.Set("Sec-WebSocket-Protocol", protocol.Subprotocol)
	if err := req.Write(c); err != nil {
		return nil, fmt.Errorf("bench: handshake: %w", err)
	}
	br := bufio.NewReaderSize(c, 4<<10)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		return nil, fmt.Errorf("bench: handshake: %w", err)
	}
	resp.Body.Close()
	sum := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	if resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get("Sec-WebSocket-Accept") != base64.StdEncoding.EncodeToString(sum[:]) {
		return nil, fmt.Errorf("bench: handshake answered %s", resp.Status)
	}
	return &Conn{c: c, br: br, out: c}, nil
}

// Close closes the connection at once, without a close handshake.
func (c *Conn) Close() error { return c.c.Close() }

// SetDeadline sets the read and write deadline of the connection.
func (c *Conn) SetDeadline(t time.Time) error { return c.c.SetDeadline(t) }

// WriteText sends p as one masked text frame.
func (c *Conn) WriteText(p []byte) error { return c.write(opText, p) }

func (c *Conn) write(op byte, payload []byte) error {
	frame := make([]byte, 0, 14+len(payload))
	frame = append(frame, 0x80|op)
	switch n := len(payload); {
	case n < 126:
		frame = append(frame, 0x80|byte(n))
	case n <= 0xFFFF:
		frame = append(frame, 0x80|126)
		frame = binary.BigEndian.AppendUint16(frame, uint16(n))
	default:
		frame = append(frame, 0x80|127)
		frame = binary.BigEndian.AppendUint64(frame, uint64(n))
	}
	var mask [4]byte
	rand.Read(mask[:])
	frame = append(frame, mask[:]...)
	for i, b := range payload {
		frame = append(frame, b^mask[i%4])
	}
	_, err := c.out.Write(frame)
	return err
}

// ReadMessage reads the next text message, appending it to buf, and
// answers pings on the way. A close frame returns a *CloseError; a binary
// message is an error.
func (c *Conn) ReadMessage(buf []byte) ([]byte, error) {
	start := len(buf)
	for {
		fin, op, n, err := c.readHeader()
		if err != nil {
			return nil, err
		}
		switch op {
		case opText, opContinuation:
			if uint64(len(buf)-start)+n > MaxMessage {
				return nil, fmt.Errorf("bench: a message over %d bytes", MaxMessage)
			}
			buf = grow(buf, int(n))
			if _, err := io.ReadFull(c.br, buf[len(buf)-int(n):]); err != nil {
				return nil, err
			}
			if fin {
				return buf, nil
			}
		case opPing, opPong, opClose:
			var payload [125]byte // parseHeader refuses longer control frames
			if _, err := io.ReadFull(c.br, payload[:n]); err != nil {
				return nil, err
			}
			if err := c.control(op, payload[:n]); err != nil {
				return nil, err
			}
		default:
			return nil, fmt.Errorf("bench: unexpected frame opcode %d", op)
		}
	}
}

// grow extends buf by n bytes, reusing its capacity.
func grow(buf []byte, n int) []byte {
	if cap(buf)-len(buf) < n {
		bigger := make([]byte, len(buf), 2*cap(buf)+n)
		copy(bigger, buf)
		buf = bigger
	}
	return buf[:len(buf)+n]
}

// readHeader reads a frame header: the FIN bit, the opcode and the
// payload length.
func (c *Conn) readHeader() (fin bool, op byte, n uint64, err error) {
	for _, need := range [...]int{2, 4, 10} { // the header's possible lengths
		b, err := c.br.Peek(need)
		if err != nil {
			return false, 0, 0, err
		}
		fin, op, hl, n, err := parseHeader(b)
		if err != nil || hl > 0 {
			c.br.Discard(hl)
			return fin, op, n, err
		}
	}
	panic("unreachable: a header is at most 10 bytes")
}

// parseHeader parses the server frame header at the start of b: the FIN
// bit, the opcode, the header's length and the payload's. hl is 0 while b
// holds only part of the header.
func parseHeader(b []byte) (fin bool, op byte, hl int, n uint64, err error) {
	if len(b) < 2 {
		return false, 0, 0, 0, nil
	}
	if b[1]&0x80 != 0 {
		return false, 0, 0, 0, errors.New("bench: the server masked a frame")
	}
	switch n = uint64(b[1] & 0x7F); n {
	case 126:
		hl = 4
	case 127:
		hl = 10
	default:
		hl = 2
	}
	if len(b) < hl {
		return false, 0, 0, 0, nil
	}
	switch hl {
	case 4:
		n = uint64(binary.BigEndian.Uint16(b[2:4]))
	case 10:
		n = binary.BigEndian.Uint64(b[2:10])
	}
	if n > MaxMessage {
		return false, 0, 0, 0, fmt.Errorf("bench: a frame of %d bytes", n)
	}
	fin, op = b[0]&0x80 != 0, b[0]&0x0F
	if op >= opClose && n > 125 {
		return false, 0, 0, 0, fmt.Errorf("bench: a control frame of %d bytes", n)
	}
	return fin, op, hl, n, nil
}

// control handles a control frame: answers a ping, ignores a pong, and
// turns a close into a *CloseError.
func (c *Conn) control(op byte, payload []byte) error {
	switch op {
	case opPing:
		return c.write(opPong, payload)
	case opClose:
		e := &CloseError{}
		if len(payload) >= 2 {
			e.Code = int(binary.BigEndian.Uint16(payload[:2]))
			e.Reason = string(payload[2:])
		}
		c.write(opClose, payload[:min(len(payload), 2)]) // complete the close handshake; the connection ends either way
		return e
	}
	return nil
}
