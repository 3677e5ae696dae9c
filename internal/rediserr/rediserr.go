// Package rediserr sorts the error replies of Redis. The broker and the
// presence store both classify their errors with it, so that a Redis that
// cannot serve yet means "unavailable, try again" to every caller.
package rediserr

import (
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// Transient reports whether err is an error reply that means Redis is
// there but cannot serve for now, so that the caller should try again
// later, as for a Redis it cannot reach:
//
//   - LOADING: loading its data after a restart;
//   - BUSY: running a script past its time limit;
//   - READONLY, MASTERDOWN: a replica, or one that lost its master, as
//     during a failover;
//   - CLUSTERDOWN, TRYAGAIN: a cluster reconfiguring;
//   - NOREPLICAS: too few replicas to accept a write;
//   - ERR max number of clients reached.
//
// go-redis retries these (Options.MaxRetries) before it returns them. Any
// other error reply (a bug, a wrong type, an out-of-memory Redis) is not
// transient.
func Transient(err error) bool {
	var reply redis.Error
	if !errors.As(err, &reply) {
		return false // go-redis matches some plain errors by their text
	}
	return redis.IsLoadingError(err) || redis.HasErrorPrefix(err, "BUSY ") ||
		redis.IsReadOnlyError(err) || redis.IsMasterDownError(err) ||
		redis.IsClusterDownError(err) || redis.IsTryAgainError(err) ||
		redis.IsNoReplicasError(err) || redis.IsMaxClientsError(err)
}

// TxError is the error of a MULTI/EXEC (TxPipelined) that returned cmds
// and err. When Redis refused a queued command, EXEC answers EXECABORT
// and only the command's own error says why: TxError joins that one, so
// that Transient sees the LOADING behind an aborted transaction.
func TxError(err error, cmds []redis.Cmder) error {
	if !redis.IsExecAbortError(err) {
		return err
	}
	for _, c := range cmds {
		if cerr := c.Err(); cerr != nil && !redis.IsExecAbortError(cerr) {
			return fmt.Errorf("%w: %w", err, cerr)
		}
	}
	return err
}
