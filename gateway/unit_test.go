package gateway

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/updraft/updraft/protocol"
)

// unlimitedNode is a node whose queued bytes are not capped.
func unlimitedNode() *nodeBytes { return &nodeBytes{max: 1 << 62} }

func TestSendQueue(t *testing.T) {
	q := newSendQueue(3, 100, unlimitedNode())
	for i := 0; i < 3; i++ {
		ok, full, start := q.push([]byte("abc"))
		if !ok || full || start != (i == 0) {
			t.Fatalf("push %d: ok=%v full=%v start=%v; want a writer started by the first push only", i, ok, full, start)
		}
	}
	if ok, full, _ := q.push([]byte("x")); ok || !full {
		t.Fatalf("push past maxItems: ok=%v full=%v, want full", ok, full)
	}
	b := q.take(nil)
	items, done, stop := b.items, b.close, b.stop
	if len(items) != 3 || done || stop {
		t.Fatalf("take: %d items, done=%v stop=%v", len(items), done, stop)
	}
	// The writer finds the queue empty and ends; the next push starts one.
	if b := q.take(items[:0]); !b.stop {
		t.Fatal("take of an empty queue must tell the writer to stop")
	}
	if ok, full, start := q.push(make([]byte, 101)); ok || !full || start {
		t.Fatal("one item larger than maxBytes must not pass, even into an empty queue")
	}
	if ok, full, start := q.push(make([]byte, 99)); !ok || full || !start {
		t.Fatal("an item within maxBytes must fit the empty queue, and start a writer")
	}
	if ok, full, start := q.push([]byte("yy")); ok || !full || start {
		t.Fatal("push past maxBytes must report full")
	}
	if first, start := q.finish(4008, "slow consumer", []byte("bye"), true); !first || start {
		t.Fatal("first finish must report true, and start no second writer")
	}
	if first, _ := q.finish(1000, "again", nil, false); first {
		t.Fatal("second finish must report false")
	}
	if ok, full, _ := q.push([]byte("late")); ok || full {
		t.Fatal("push after finish must be refused, not reported full")
	}
	b = q.take(items[:0])
	if items := b.items; len(items) != 1 || string(items[0]) != "bye" || !b.close || b.code != 4008 || b.reason != "slow consumer" {
		t.Fatalf("after discarding finish: items=%q close=%v code=%d reason=%q", items, b.close, b.code, b.reason)
	}
	q.writerDone() // it closed the connection
	q.shut(false)  // returns: no writer runs
}

// An outbox that goes idle after a burst keeps no large array: it goes to
// itemsPool, and the next burst (on any connection) starts from a pooled
// one.
func TestSendQueueIdleKeepsNoLargeArray(t *testing.T) {
	q := newSendQueue(1000, DefaultSendQueueBytes, unlimitedNode())
	for i := range 100 {
		if ok, _, start := q.push([]byte("m")); !ok || start != (i == 0) {
			t.Fatalf("push %d", i)
		}
	}
	items := q.take(nil).items
	if len(items) != 100 {
		t.Fatalf("took %d items, want 100", len(items))
	}
	if b := q.take(items[:0]); !b.stop {
		t.Fatal("the emptied queue must stop its writer")
	}
	q.mu.Lock()
	kept := cap(q.items)
	q.mu.Unlock()
	if kept > idleItemsCap {
		t.Fatalf("the idle queue kept an array of %d slots, want at most %d", kept, idleItemsCap)
	}
	if ok, _, start := q.push([]byte("again")); !ok || !start {
		t.Fatal("a push after going idle must queue and start a writer")
	}
	if items := q.take(nil).items; len(items) != 1 || string(items[0]) != "again" {
		t.Fatalf("took %q after the next push", items)
	}
	q.writerDone()
}

// BenchmarkOutboxBursts queues bursts of 100 messages and takes them as a
// writer would, the outbox going idle between bursts: with itemsPool, a
// burst allocates nothing.
func BenchmarkOutboxBursts(b *testing.B) {
	q := newSendQueue(1000, DefaultSendQueueBytes, unlimitedNode())
	msg := []byte("message")
	spare := make([][]byte, 0, 128)
	b.ReportAllocs()
	for b.Loop() {
		for range 100 {
			q.push(msg)
		}
		spare = q.take(spare[:0]).items
		spare = q.take(spare[:0]).items // empty: the outbox goes idle
	}
}

func TestSendQueueFinishKeepsBacklog(t *testing.T) {
	q := newSendQueue(10, 1000, unlimitedNode())
	q.push([]byte("a"))
	q.push([]byte("b"))
	q.finish(1012, "node draining", []byte("bye"), false)
	b := q.take(nil)
	items, done, code := b.items, b.close, b.code
	if got := string(items[0]) + string(items[1]) + string(items[2]); got != "abbye" || !done || code != 1012 {
		t.Fatalf("drain must flush the backlog before the disconnect: %q done=%v code=%d", got, done, code)
	}
}

// A client that went away: shut drops the backlog, and the writer is told
// to stop at its next take.
func TestSendQueueShutGone(t *testing.T) {
	q := newSendQueue(10, 1000, unlimitedNode())
	q.push([]byte("a"))
	go func() {
		// The writer: it was started by the push; it finds nothing to do.
		for {
			if q.take(nil).stop {
				return
			}
		}
	}()
	q.shut(true)
	if ok, _, start := q.push([]byte("late")); ok || start {
		t.Fatal("push after shut must be refused and start nothing")
	}
}

func TestRateLimiter(t *testing.T) {
	now := time.Unix(1000, 0)
	l := newRateLimiter(10) // burst 20
	for i := 0; i < 20; i++ {
		if !l.allow(now) {
			t.Fatalf("request %d of the burst refused", i)
		}
	}
	if l.allow(now) {
		t.Fatal("request past the burst allowed")
	}
	// A flood at five times the rate: some requests pass as tokens refill,
	// but the streak of refusals goes on.
	for i := 1; i <= 120; i++ {
		l.allow(now.Add(time.Duration(i) * 10 * time.Millisecond))
	}
	if got := l.overFor(now.Add(1200 * time.Millisecond)); got != 1200*time.Millisecond {
		t.Fatalf("overFor during a sustained flood = %v, want 1.2s", got)
	}
	// A calm second ends the streak.
	if l.overFor(now.Add(2300*time.Millisecond)) != 0 {
		t.Fatal("a second without refusals must end the streak")
	}
	if !l.allow(now.Add(2300 * time.Millisecond)) {
		t.Fatal("tokens must refill")
	}
}

func testServer(t testing.TB, cfg Config) *Server {
	t.Helper()
	if cfg.NodeID == "" {
		cfg.NodeID = "test"
	}
	if cfg.Broker == nil {
		cfg.Broker = newTestBroker(t, nil)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func sign(t *testing.T, secret string, claims jwt.Claims, method jwt.SigningMethod) string {
	t.Helper()
	tok, err := jwt.NewWithClaims(method, claims).SignedString([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// noneToken is an unsigned token ("alg":"none"): it must never pass.
func noneToken(t *testing.T, claims jwt.Claims) string {
	t.Helper()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodNone, claims).SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestAuthenticate(t *testing.T) {
	s := testServer(t, Config{JWTSecret: []byte("secret")})
	future := jwt.NewNumericDate(time.Now().Add(time.Hour))
	past := jwt.NewNumericDate(time.Now().Add(-time.Hour))
	good := &Claims{RegisteredClaims: jwt.RegisteredClaims{Subject: "user-7", ExpiresAt: future}, Subscribe: []string{"chat/*"}, Publish: []string{"chat/*"}}

	c, err := s.authenticate(sign(t, "secret", good, jwt.SigningMethodHS256))
	if err != nil || c.Subject != "user-7" || c.Subscribe[0] != "chat/*" {
		t.Fatalf("good token: %+v %v", c, err)
	}
	tests := []struct {
		name  string
		token string
		want  string
	}{
		{"anonymous refused", "", "token is required"},
		{"garbage", "not-a-jwt", "invalid token"},
		{"wrong secret", sign(t, "other", good, jwt.SigningMethodHS256), "invalid token"},
		{"expired", sign(t, "secret", &Claims{RegisteredClaims: jwt.RegisteredClaims{Subject: "u", ExpiresAt: past}}, jwt.SigningMethodHS256), "expired"},
		{"no sub", sign(t, "secret", &Claims{RegisteredClaims: jwt.RegisteredClaims{ExpiresAt: future}}, jwt.SigningMethodHS256), "no sub"},
		{"bad pattern", sign(t, "secret", &Claims{RegisteredClaims: jwt.RegisteredClaims{Subject: "u", ExpiresAt: future}, Subscribe: []string{"chat/**/x"}}, jwt.SigningMethodHS256), "invalid pattern"},
		// A token without exp would never expire: a leaked one would work
		// for good.
		{"no exp", sign(t, "secret", &Claims{RegisteredClaims: jwt.RegisteredClaims{Subject: "u"}, Subscribe: []string{"chat/*"}}, jwt.SigningMethodHS256), "token has no exp claim"},
		{"alg none", noneToken(t, good), "invalid token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.authenticate(tt.token)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error = %v, want one containing %q", err, tt.want)
			}
		})
	}

	anon := testServer(t, Config{AllowAnonymous: true})
	c, err = anon.authenticate("")
	if err != nil || !contains(c.Subscribe, "**") || !contains(c.Publish, "*") {
		t.Fatalf("anonymous claims: %+v %v", c, err)
	}
	if _, err := anon.authenticate("x.y.z"); !errors.Is(err, errNoSecret) {
		t.Fatalf("token on a server without secret: %v", err)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func TestNewRefusesNoAuth(t *testing.T) {
	_, err := New(Config{NodeID: "n", Broker: newTestBroker(t, nil)})
	if err == nil || !strings.Contains(err.Error(), "UPDRAFT_ALLOW_ANONYMOUS") {
		t.Fatalf("New without secret or anonymous: %v", err)
	}
}

func TestCheckOrigin(t *testing.T) {
	local := []string{"http://localhost:*", "http://127.0.0.1:*", "http://[::1]:*"}
	tests := []struct {
		allowed []string
		host    string
		origin  string
		ok      bool
	}{
		{nil, "rt.example.com", "", true}, // not a browser
		// DNS rebinding: evil.example resolves to the gateway, and the
		// page's Origin then equals the Host it sends. Neither says the
		// page may talk to this gateway.
		{nil, "evil.example", "http://evil.example", false},
		{nil, "rt.example.com", "https://rt.example.com", false},
		{nil, "127.0.0.1:8080", "http://127.0.0.1:8080", false},
		{[]string{"https://app.example.com"}, "rt.example.com", "https://app.example.com", true},
		{[]string{"https://app.example.com/"}, "rt.example.com", "https://APP.example.com", true},
		{[]string{"https://app.example.com"}, "rt.example.com", "http://app.example.com", false},
		{[]string{"https://app.example.com"}, "rt.example.com", "https://rt.example.com", false},
		{[]string{"https://app.example.com"}, "app.example.com", "https://app.example.com:8443", false},
		{[]string{"*"}, "rt.example.com", "https://anything.test", true},
		{local, "127.0.0.1:8080", "http://localhost:5173", true},
		{local, "127.0.0.1:8080", "http://LOCALHOST:3000", true},
		{local, "127.0.0.1:8080", "http://localhost", true},
		{local, "127.0.0.1:8080", "http://127.0.0.1:8080", true},
		{local, "127.0.0.1:8080", "http://[::1]:5173", true},
		{local, "127.0.0.1:8080", "https://localhost:5173", false},
		{local, "evil.example", "http://evil.example", false},
		{local, "evil.example", "http://localhost.evil.example:80", false},
		{local, "evil.example", "http://localhost:80@evil.example", false},
		{local, "evil.example", "http://localhost:5173/x", false},
		{local, "evil.example", "null", false},
	}
	for _, tt := range tests {
		s := testServer(t, Config{AllowAnonymous: true, AllowedOrigins: tt.allowed})
		r := httptest.NewRequest("GET", "http://"+tt.host+"/api/realtime", nil)
		if tt.origin != "" {
			r.Header.Set("Origin", tt.origin)
		}
		if err := s.checkOrigin(r); (err == nil) != tt.ok {
			t.Errorf("allowed=%v host=%s origin=%s: err=%v, want ok=%v", tt.allowed, tt.host, tt.origin, err, tt.ok)
		}
	}
}

func TestValidateOrigins(t *testing.T) {
	for _, o := range []string{"*", "https://app.example.com", "http://localhost:*", "http://[::1]:*", "http://127.0.0.1:5173", "https://app.example.com/"} {
		if err := ValidateOrigins([]string{o}); err != nil {
			t.Errorf("%q: %v", o, err)
		}
	}
	for _, o := range []string{"app.example.com", "https://app.example.com/path", "http://*.example.com", "http://localhost:x", "ftp://", "https://a:b@app.example.com"} {
		if err := ValidateOrigins([]string{o}); err == nil || !strings.Contains(err.Error(), "UPDRAFT_ALLOWED_ORIGINS") {
			t.Errorf("%q: %v, want an error naming UPDRAFT_ALLOWED_ORIGINS", o, err)
		}
	}
}

// TestOriginRefusalLogged: a browser's 403 is invisible to the page, so the
// gateway says in its log which origin it refused and what to set, once
// per origin and minute however many requests come, and the 403 body says
// the same.
func TestOriginRefusalLogged(t *testing.T) {
	core, logs := observer.New(zap.WarnLevel)
	s := testServer(t, Config{AllowAnonymous: true, AllowedOrigins: []string{"https://app.example.com"}, Logger: zap.New(core)})
	hs := httptest.NewServer(s)
	defer hs.Close()
	refuse := func(origin string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, hs.URL+"/api/realtime", nil)
		req.Header.Set("Origin", origin)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(body), origin) || !strings.Contains(string(body), "UPDRAFT_ALLOWED_ORIGINS") {
			t.Fatalf("answer %d %s, want 403 naming the origin and the setting", resp.StatusCode, body)
		}
	}
	for range 20 {
		refuse("http://localhost:5173")
	}
	refuse("http://evil.example")
	lines := logs.FilterMessage("origin refused").All()
	if len(lines) != 2 {
		t.Fatalf("%d log lines for two refused origins, want 2: %+v", len(lines), lines)
	}
	f := lines[0].ContextMap()
	if f["origin"] != "http://localhost:5173" || !strings.Contains(f["fix"].(string), "UPDRAFT_ALLOWED_ORIGINS") {
		t.Fatalf("log line %+v", f)
	}
}

func TestOriginLogBounded(t *testing.T) {
	var l originLog
	now := time.Now()
	logged := 0
	for i := range 10 * maxLoggedOrigins {
		if ok, _ := l.allow(fmt.Sprintf("http://o%d.example", i), now); ok {
			logged++
		}
	}
	if logged != maxLoggedOrigins || len(l.last) != maxLoggedOrigins {
		t.Fatalf("%d lines, %d origins remembered; want %d of each", logged, len(l.last), maxLoggedOrigins)
	}
	// A minute later the same origins are logged again, and the count of
	// lines left out is reported with the first.
	ok, suppressed := l.allow("http://o1.example", now.Add(time.Minute))
	if !ok || suppressed != 9*maxLoggedOrigins {
		t.Fatalf("a minute later: %v, %d suppressed", ok, suppressed)
	}
	if len(l.last) > maxLoggedOrigins {
		t.Fatalf("%d origins remembered", len(l.last))
	}
}

// A client that sends its first frame together with its handshake (in one
// write, so that net/http has read it into its buffer before the upgrade)
// gets it read all the same: the small connection buffers take over what
// net/http had buffered.
func TestFrameSentWithHandshake(t *testing.T) {
	s := testServer(t, Config{AllowAnonymous: true})
	hs := httptest.NewServer(s)
	defer hs.Close()
	c, err := net.Dial("tcp", strings.TrimPrefix(hs.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	payload := []byte(`{"type":"connect","ref":"early"}`)
	mask := [4]byte{1, 2, 3, 4}
	frame := append([]byte{0x81, 0x80 | byte(len(payload))}, mask[:]...)
	for i, b := range payload {
		frame = append(frame, b^mask[i%4])
	}
	req := "GET /api/realtime HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: updraft.v1\r\n\r\n"
	if _, err := c.Write(append([]byte(req), frame...)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake: %v %v", resp, err)
	}
	hdr := make([]byte, 2)
	if _, err := io.ReadFull(br, hdr); err != nil {
		t.Fatal(err)
	}
	body := make([]byte, hdr[1]&0x7f)
	if _, err := io.ReadFull(br, body); err != nil {
		t.Fatal(err)
	}
	if hdr[0] != 0x81 || !strings.Contains(string(body), `"ref":"early","ok":true`) {
		t.Fatalf("first frame %x %s, want the connect reply", hdr, body)
	}
}

// TestTokenWithoutExpRefused: a token without exp would never expire, so it
// is refused at connect and at refresh, and a failed refresh keeps the
// session on its old token.
func TestTokenWithoutExpRefused(t *testing.T) {
	hs, _ := filterServer(t, 0)
	noExp := sign(t, filterSecret, &Claims{RegisteredClaims: jwt.RegisteredClaims{Subject: "user-7"}, Subscribe: []string{"*"}}, jwt.SigningMethodHS256)

	c := dialWSRaw(t, hs)
	expectError(t, c.request(map[string]any{"type": protocol.TypeConnect, "token": noExp}), protocol.CodeUnauthorized, "token has no exp claim")

	c = dialWS(t, hs, filterToken(t, nil))
	expectError(t, c.request(map[string]any{"type": protocol.TypeRefresh, "token": noExp}), protocol.CodeUnauthorized, "token has no exp claim")
	if rep := c.request(map[string]any{"type": protocol.TypePing}); !rep.OK {
		t.Fatalf("ping after the refused refresh: %+v", rep.Error)
	}
}

// What a writer took counts against the outbox until it is written (the
// writer's next take): a client that never reads holds at most maxBytes.
// Every byte counts in the node's total too, which is back to zero once
// the queue is gone.
func TestSendQueueCountsUntilWritten(t *testing.T) {
	node := &nodeBytes{max: 1 << 20}
	q := newSendQueue(100, 100, node)
	q.push(make([]byte, 60))
	items := q.take(nil).items // being written
	if ok, full, _ := q.push(make([]byte, 60)); ok || !full {
		t.Fatal("a push over maxBytes with what is being written counted must report full")
	}
	if ok, _, _ := q.push(make([]byte, 40)); !ok {
		t.Fatal("a push within maxBytes, what is being written counted, must fit")
	}
	if got := node.n.Load(); got < 100 || got > 100+nodeCredit {
		t.Fatalf("node counts %d bytes, want 100 and at most a slice of credit", got)
	}
	items = q.take(items[:0]).items // the 60 are written
	if q.mu.Lock(); len(items) != 1 || q.bytes != 40 {
		t.Fatalf("after the next take: %d items, %d bytes counted, want 1 and 40", len(items), q.bytes)
	}
	q.mu.Unlock()
	if b := q.take(items[:0]); !b.stop || node.n.Load() != 0 {
		t.Fatalf("after the idle take the node counts %d bytes, want 0", node.n.Load())
	}

	// A writer that ends on a failed write releases what it took; a
	// client gone drops what is queued.
	q.push(make([]byte, 30))
	q.take(nil)
	q.push(make([]byte, 20))
	q.writerDone()
	q.shut(true)
	if got := node.n.Load(); got != 0 {
		t.Fatalf("after the queue is gone the node counts %d bytes, want 0", got)
	}
}

// A busy queue holds at most two slices of credit beyond what it queues;
// an idle one holds none.
func TestSendQueueCredit(t *testing.T) {
	node := &nodeBytes{max: 1 << 30}
	q := newSendQueue(10000, 1<<20, node)
	var items [][]byte
	for range 1000 {
		q.push(make([]byte, 100))
		items = q.take(items[:0]).items
		if got := node.n.Load(); got > 100+2*nodeCredit {
			t.Fatalf("a busy queue with 100 bytes in flight holds %d of the node", got)
		}
	}
	if b := q.take(items[:0]); !b.stop || node.n.Load() != 0 {
		t.Fatalf("an idle queue holds %d of the node, want 0", node.n.Load())
	}
}

// Past the node's cap a push reports full, whichever queue it is on.
func TestSendQueueNodeCap(t *testing.T) {
	node := &nodeBytes{max: 100}
	a, b := newSendQueue(100, 80, node), newSendQueue(100, 80, node)
	if ok, _, _ := a.push(make([]byte, 70)); !ok {
		t.Fatal("first push must fit")
	}
	if ok, full, _ := b.push(make([]byte, 40)); ok || !full {
		t.Fatal("a push past the node's cap must report full")
	}
	if ok, _, _ := b.push(make([]byte, 30)); !ok {
		t.Fatal("a push within the node's cap must fit")
	}
	if got := node.n.Load(); got != 100 {
		t.Fatalf("node counts %d bytes, want 100 (no room for credit)", got)
	}
	a.writerDone() // the writers the first pushes started, never run
	b.writerDone()
	a.shut(true)
	b.shut(true)
	if got := node.n.Load(); got != 0 {
		t.Fatalf("node counts %d bytes after both queues went, want 0", got)
	}
}

// A writer that fails leaves what is queued behind (the disconnect of a
// client that stopped reading); shut forgets it, and so does the node.
func TestSendQueueShutDropsWhatAFailedWriterLeft(t *testing.T) {
	node := &nodeBytes{max: 1 << 20}
	q := newSendQueue(10, 1000, node)
	q.push([]byte("frame"))
	q.take(nil) // being written
	q.finish(4008, "slow consumer", []byte("bye"), true)
	q.writerDone() // the write failed
	q.shut(false)
	if got := node.n.Load(); got != 0 {
		t.Fatalf("node counts %d bytes after the session ended, want 0", got)
	}
}

// A Site (the demo app) gets what the gateway's endpoints do not claim;
// they keep priority.
func TestSiteServesTheRest(t *testing.T) {
	site := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "site "+r.Method+" "+r.URL.Path) })
	s, err := New(Config{NodeID: "n", Broker: newTestBroker(t, nil), AllowAnonymous: true, Site: site})
	if err != nil {
		t.Fatal(err)
	}
	do := func(method, target string) (int, string) {
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, httptest.NewRequest(method, target, nil))
		return rec.Code, rec.Body.String()
	}
	for _, p := range []string{"/", "/chat/general", "/assets/app.js"} {
		if code, body := do("GET", p); code != 200 || body != "site GET "+p {
			t.Errorf("GET %s: %d %q, want the site", p, code, body)
		}
	}
	if code, body := do("GET", "/healthz"); code != 200 || strings.HasPrefix(body, "site") {
		t.Errorf("GET /healthz: %d %q, want the gateway's", code, body)
	}
	if code, body := do("GET", "/api/v1/history?topic=chat/x"); code != 401 || strings.HasPrefix(body, "site") {
		t.Errorf("GET /api/v1/history without a key: %d %q, want the gateway's 401", code, body)
	}
	if code, body := do("GET", "/api/realtime"); code == 200 || strings.HasPrefix(body, "site") {
		t.Errorf("GET /api/realtime without an upgrade: %d %q, want the gateway's refusal", code, body)
	}
}
