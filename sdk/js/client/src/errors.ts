/**
 * Error codes. The first eight are the protocol's (docs/protocol.md,
 * "Requests and replies"); the last three are the client's own:
 *
 * - `closed`: the client was stopped: `disconnect()` was called, or the
 *   server closed with a code that forbids reconnecting (4000, 4003, 4001
 *   without `getToken`), or `maxReconnectAttempts` ran out.
 * - `disconnected`: the connection dropped before the reply came; the
 *   request (a publish) may or may not have taken effect.
 * - `timeout`: no reply within `requestTimeoutMs`.
 */
export type ErrorCode =
  | 'bad_request'
  | 'unauthorized'
  | 'forbidden'
  | 'not_found'
  | 'too_large'
  | 'rate_limited'
  | 'unavailable'
  | 'internal'
  | 'closed'
  | 'disconnected'
  | 'timeout';

/**
 * The error every rejected promise of the SDK carries.
 *
 * @example
 * try { await channel.subscribe() } catch (e) {
 *   if (e instanceof UpdraftError && e.code === 'forbidden') showLogin()
 * }
 */
export class UpdraftError extends Error {
  /** Protocol error code, or `closed` / `disconnected` / `timeout`. */
  readonly code: ErrorCode;
  /** HTTP status, for errors of the server helper. */
  readonly status?: number;
  /** WebSocket close code, when a close caused the error. */
  readonly closeCode?: number;

  constructor(code: ErrorCode, message: string, extra?: { status?: number; closeCode?: number }) {
    super(message);
    this.name = 'UpdraftError';
    this.code = code;
    if (extra?.status !== undefined) this.status = extra.status;
    if (extra?.closeCode !== undefined) this.closeCode = extra.closeCode;
  }
}

/** Builds an UpdraftError from a protocol `{code, message}` object. */
export function fromWire(e: unknown, fallback: string, status?: number): UpdraftError {
  const o = (e && typeof e === 'object' ? e : {}) as { code?: unknown; message?: unknown };
  const code = typeof o.code === 'string' ? (o.code as ErrorCode) : 'internal';
  const message = typeof o.message === 'string' ? o.message : fallback;
  return new UpdraftError(code, message, status === undefined ? undefined : { status });
}
