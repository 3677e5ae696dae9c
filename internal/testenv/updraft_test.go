package testenv_test

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/updraft/updraft/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

func TestNodeServesAndDrains(t *testing.T) {
	t.Parallel()
	n := testenv.StartNode(t, map[string]string{
		"UPDRAFT_ALLOW_ANONYMOUS": "true",
		"UPDRAFT_DRAIN_TIMEOUT":   "2s",
	})
	if !strings.HasPrefix(n.Addr(), "127.0.0.1:") || n.URL() != "http://"+n.Addr() || n.WSURL() != "ws://"+n.Addr()+"/api/realtime" {
		t.Fatalf("addresses: %s %s %s", n.Addr(), n.URL(), n.WSURL())
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		resp, err := http.Get(n.URL() + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s: %s, want 200", path, resp.Status)
		}
	}

	n.Terminate()
	exited, err := n.Wait(10 * time.Second)
	if !exited {
		t.Fatalf("still running 10s after SIGTERM with a 2s drain timeout")
	}
	if err != nil {
		t.Errorf("exit after SIGTERM: %v, want status 0", err)
	}
	if logs := n.Logs(); !strings.HasPrefix(logs, "{") {
		t.Errorf("logs are not JSON lines:\n%s", logs)
	}
}

func TestNodeKill(t *testing.T) {
	t.Parallel()
	n := testenv.StartNode(t, map[string]string{"UPDRAFT_ALLOW_ANONYMOUS": "true"})
	n.Kill()
	exited, err := n.Wait(10 * time.Second)
	var exit *exec.ExitError
	if !exited || !errors.As(err, &exit) {
		t.Fatalf("after SIGKILL: exited %v, err %v; want an exit error", exited, err)
	}
}

// fatalRecorder stands in for a test that StartNode fails.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (r *fatalRecorder) Fatalf(format string, args ...any) {
	r.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func TestStartNodeFailsLoudly(t *testing.T) {
	t.Parallel()
	r := &fatalRecorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		// Neither a JWT secret nor anonymous access: serve refuses to start.
		testenv.StartNode(r, map[string]string{"UPDRAFT_LOG_LEVEL": "debug"})
		t.Error("StartNode returned for a node that cannot start")
	}()
	<-done
	for _, want := range []string{"exited before it was ready", "UPDRAFT_JWT_SECRET"} {
		if !strings.Contains(r.msg, want) {
			t.Errorf("failure message lacks %q:\n%s", want, r.msg)
		}
	}
}
