package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/updraft/updraft/internal/testenv"
	"github.com/updraft/updraft/protocol"
)

// TestMakeRun runs the README's first steps literally: `make run` with a
// JWT secret keeps anonymous access and accepts tokens that
// `updraft token` signs with the same secret, and browser pages from a
// local dev server may connect while other origins are refused and logged.
func TestMakeRun(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("make"); err != nil {
		t.Fatalf("make is needed: %v", err)
	}
	bin := testenv.Binary(t)
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	const secret = "change-me"
	logPath := filepath.Join(t.TempDir(), "make-run.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	// -o build: run the target with the binary the tests built.
	cmd := exec.Command("make", "-s", "-o", "build", "run", "BIN="+bin, "UPDRAFT_ADDR="+addr, "UPDRAFT_JWT_SECRET="+secret)
	cmd.Dir = ".."
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "UPDRAFT_") && !strings.HasPrefix(kv, "MAKE") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // make and the node it runs stop together
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("make run output:\n%s", b)
		}
	})
	testenv.Eventually(t, 30*time.Second, func() bool {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, "make run did not get ready on %s", addr)
	wsURL := "ws://" + addr + "/api/realtime"

	// The README's token step: the secret exported, updraft token signs.
	mint := exec.Command(bin, "token", "--sub", "user-7", "--subscribe", "chat/*")
	mint.Env = append(os.Environ(), "UPDRAFT_JWT_SECRET="+secret)
	out, err := mint.Output()
	if err != nil {
		t.Fatalf("updraft token: %v", err)
	}
	c := dialRaw(t, wsURL, nil)
	c.connect(strings.TrimSpace(string(out)))
	if rep := c.replyTo("s1", `{"type":"subscribe","ref":"s1","topic":"chat/general"}`); !rep.OK {
		t.Fatalf("subscribe with the token: %+v", rep.Error)
	}
	c.expectError(c.replyTo("s2", `{"type":"subscribe","ref":"s2","topic":"orders"}`), protocol.CodeForbidden)

	// Anonymous access stays on.
	dialRaw(t, wsURL, nil).connect("")

	// A page from a local dev server connects; any other origin gets 403,
	// which the node logs with the setting to change.
	dialRaw(t, wsURL, http.Header{"Origin": {"http://localhost:5173"}}).connect("")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, resp, err := websocket.Dial(ctx, wsURL, &websocket.DialOptions{HTTPHeader: http.Header{"Origin": {"http://evil.example"}}})
	if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("origin http://evil.example: %v %v, want 403", resp, err)
	}
	testenv.Eventually(t, 5*time.Second, func() bool {
		b, _ := os.ReadFile(logPath)
		return strings.Contains(string(b), `"origin refused"`) && strings.Contains(string(b), "UPDRAFT_ALLOWED_ORIGINS")
	}, "no origin refused line in the log")
}
