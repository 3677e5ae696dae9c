package rediserr_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/updraft/updraft/internal/rediserr"
	"github.com/updraft/updraft/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// TestTransient sorts real error replies: a script makes Redis answer
// each one, and go-redis parses it as it parses Redis's own (a LOADING
// reply after a restart is the same bytes).
func TestTransient(t *testing.T) {
	c := redis.NewClient(&redis.Options{Addr: testenv.StartRedis(t).Addr(), MaxRetries: -1})
	t.Cleanup(func() { c.Close() })
	tests := []struct {
		reply     string
		transient bool
	}{
		{"LOADING Redis is loading the dataset in memory", true},
		{"BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSCRIPT.", true},
		{"READONLY You can't write against a read only replica.", true},
		{"MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.", true},
		{"CLUSTERDOWN The cluster is down", true},
		{"TRYAGAIN Multiple keys request during rehashing of slot", true},
		{"NOREPLICAS Not enough good replicas to write.", true},
		{"ERR max number of clients reached", true},
		{"ERR unknown command 'EXPLODE'", false},
		{"WRONGTYPE Operation against a key holding the wrong kind of value", false},
		{"OOM command not allowed when used memory > 'maxmemory'.", false},
		{"NOSCRIPT No matching script. Please use EVAL.", false},
	}
	for _, tt := range tests {
		t.Run(tt.reply, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			err := c.Eval(ctx, "return redis.error_reply(ARGV[1])", nil, tt.reply).Err()
			var rerr redis.Error
			if !errors.As(err, &rerr) || err.Error() != tt.reply {
				t.Fatalf("Redis answered %v, want the error reply %q", err, tt.reply)
			}
			if got := rediserr.Transient(err); got != tt.transient {
				t.Errorf("Transient(%q) = %v, want %v", err, got, tt.transient)
			}
			if got := rediserr.Transient(errors.Join(errors.New("wrapped"), err)); got != tt.transient {
				t.Errorf("Transient of a wrapped %q = %v, want %v", err, got, tt.transient)
			}
		})
	}
	if rediserr.Transient(nil) || rediserr.Transient(errors.New("LOADING but not a reply")) {
		t.Error("Transient is true for an error that is not a Redis reply")
	}
}

// TestTxError checks that an aborted transaction names the refusal of its
// queued command, and leaves other errors as they are.
func TestTxError(t *testing.T) {
	c := redis.NewClient(&redis.Options{Addr: testenv.StartRedis(t).Addr(), MaxRetries: -1})
	t.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cmds, err := c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Get(ctx, "k")
		p.Do(ctx, "SET", "k") // refused when queued: wrong number of arguments
		return nil
	})
	if !redis.IsExecAbortError(err) {
		t.Fatalf("transaction error %v, want EXECABORT", err)
	}
	joined := rediserr.TxError(err, cmds)
	if !redis.IsExecAbortError(joined) || !strings.Contains(joined.Error(), "wrong number of arguments") {
		t.Errorf("TxError = %v, want EXECABORT and the refusal", joined)
	}
	if rediserr.Transient(joined) {
		t.Errorf("Transient(%v) = true", joined)
	}
	other := errors.New("connection refused")
	if got := rediserr.TxError(other, cmds); got != other {
		t.Errorf("TxError of a non-EXECABORT error = %v, want it unchanged", got)
	}
}
