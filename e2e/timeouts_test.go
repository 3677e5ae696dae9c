package e2e

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/updraft/updraft/internal/testenv"
)

// TestHTTPIdleKeepAliveClosed: a keep-alive connection that sent one
// request and then holds on is closed by the gateway after
// UPDRAFT_HTTP_IDLE_TIMEOUT, so idle holders cannot use up its file
// descriptors.
func TestHTTPIdleKeepAliveClosed(t *testing.T) {
	t.Parallel()
	node := testenv.StartNode(t, nodeEnv("", map[string]string{"UPDRAFT_HTTP_IDLE_TIMEOUT": "1s"}))
	c, err := net.Dial("tcp", node.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Close {
		t.Fatalf("GET /healthz: %d, close %v; want 200 on a kept-alive connection", resp.StatusCode, resp.Close)
	}
	idleSince := time.Now()
	if n, err := br.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("idle connection: read %d bytes, %v; want the gateway to close it (EOF)", n, err)
	}
	if idle := time.Since(idleSince); idle < 900*time.Millisecond {
		t.Fatalf("closed after %v idle, before UPDRAFT_HTTP_IDLE_TIMEOUT (1s)", idle)
	}
}

// TestEmitBodyTrickleCutOff: an emit whose body arrives a byte at a time
// gets 408 once UPDRAFT_HTTP_BODY_TIMEOUT has passed, instead of holding
// its connection for as long as the sender likes.
func TestEmitBodyTrickleCutOff(t *testing.T) {
	t.Parallel()
	node := testenv.StartNode(t, nodeEnv("", map[string]string{"UPDRAFT_HTTP_BODY_TIMEOUT": "1s"}))
	for _, path := range []string{"/api/v1/emit", "/api/v1/emit/batch"} {
		t.Run(path, func(t *testing.T) {
			body := `{"topic":"chat/slow","event":"m","data":{"text":"` + strings.Repeat("x", 40) + `"}}`
			if strings.HasSuffix(path, "batch") {
				body = `{"messages":[` + body + `]}`
			}
			c, err := net.Dial("tcp", node.Addr())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(8 * time.Second))
			head := "POST " + path + " HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer " + apiKey +
				"\r\nContent-Type: application/json\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n"
			if _, err := io.WriteString(c, head); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			done := make(chan struct{})
			defer close(done)
			go func() {
				// One byte every 300ms: the whole body would take 20s or more.
				for i := range len(body) {
					if _, err := c.Write([]byte{body[i]}); err != nil {
						return
					}
					select {
					case <-done:
						return
					case <-time.After(300 * time.Millisecond): // the trickle's pace, not a wait for a condition
					}
				}
			}()
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatalf("no answer to a trickled body after %v: %v", time.Since(start), err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusRequestTimeout || !strings.Contains(string(b), "within 1s") {
				t.Fatalf("answer %d %s after %v, want 408 naming the timeout", resp.StatusCode, b, time.Since(start))
			}
		})
	}
	// A body sent at once still passes.
	if status, b := post(t, node, "/api/v1/emit", apiKey, emitItem{Topic: "chat/fast", Event: "m"}); status != http.StatusOK {
		t.Fatalf("emit: %d %s", status, b)
	}
}
