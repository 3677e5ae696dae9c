/**
 * The delay before reconnect attempt `attempt` (0 for the first after a
 * drop): full jitter, a random duration in [0, min(maxMs, minMs·2^attempt)].
 * `random` returns a number in [0, 1).
 */
export function backoffDelay(attempt: number, minMs: number, maxMs: number, random: () => number): number {
  const ceil = Math.min(maxMs, minMs * 2 ** Math.min(attempt, 40));
  return Math.floor(random() * (ceil + 1));
}

/** What the client does after a connection closed with a code. */
export type Reaction = 'stop' | 'backoff' | 'now';

/**
 * Maps a close code to the client's reaction, following the protocol's
 * table: 1012 (node draining) reconnects at once; 1003, 4000 and 4003
 * never reconnect; 4001 reconnects only when `getToken` can supply a new
 * token; everything else reconnects after the backoff.
 */
export function closeReaction(code: number, canRenewToken: boolean): Reaction {
  switch (code) {
    case 1012:
      return 'now';
    case 1003:
    case 4000:
    case 4003:
      return 'stop';
    case 4001:
      return canRenewToken ? 'backoff' : 'stop';
  }
  return 'backoff';
}
